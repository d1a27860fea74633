"""The dataset table: every format row complete, one split builder, one normalisation."""

import numpy as np
import pytest

from okdhp_edge.config import load_config
from okdhp_edge.data.errors import DataError
from okdhp_edge.data.formats import DATASET_FORMATS, dataset_format, make_split
from okdhp_edge.errors import ConfigError


@pytest.mark.parametrize("name", sorted(DATASET_FORMATS))
def test_every_format_row_names_a_complete_reader(name):
    fmt = dataset_format(name)
    module = fmt.module()
    assert callable(module.image_files) and callable(module.hold_out)
    assert not fmt.headboxes or callable(module.load_headboxes)
    assert fmt.reader_class().__name__ in fmt.reader and fmt.metric in ("AP", "PCKh@0.5")
    assert fmt.spec.num_joints == len(fmt.spec.joints)


def test_unknown_format_is_refused_where_it_enters():
    with pytest.raises(ValueError, match="expected one of"):
        dataset_format("cocoo")
    with pytest.raises(ConfigError, match="data.dataset"):
        load_config(overrides=["data.dataset=cocoo"])


def test_a_report_split_without_its_head_boxes_is_one_line(mpii_tiny):
    with pytest.raises(DataError, match="needs head boxes"):
        make_split("mpii", "report", str(mpii_tiny / "mpii_tiny.json"),
                   str(mpii_tiny / "images"), {"input_size": (64, 64)})


def test_the_recorded_normalisation_is_the_one_training_reads(synthetic_root):
    """data.mean/std reach the training crops and the student's preprocessing alike."""
    from okdhp_edge.data.build import build_split
    from okdhp_edge.students import preprocessing_of

    cfg = load_config(overrides=[f"data.root={synthetic_root}", "data.input_size=[64,64]",
                                 "data.mean=[0,0,0]", "data.std=[1,1,1]"])
    item = build_split(cfg.data, "report")[0]
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0  # x / 255 only
    pre = preprocessing_of(cfg.data, [])
    assert pre.mean == [0, 0, 0] and pre.std == [1, 1, 1]
    default = build_split(load_config(overrides=[f"data.root={synthetic_root}",
                                                 "data.input_size=[64,64]"]).data, "report")[0]
    assert not np.allclose(default["image"], item["image"])
    with pytest.raises(ConfigError, match="std > 0"):
        load_config(overrides=["data.std=[1,0,1]"])
