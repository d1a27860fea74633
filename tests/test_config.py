import subprocess
import sys

import pytest

from okdhp_edge.config import ConfigError, load_config, save_config
from tests.conftest import ROOT


def test_defaults_and_overrides():
    cfg = load_config(overrides=["data.input_size=[192,256]", "train.epochs=3",
                                 "model.branches=[2,4,6]", "train.lr=1e-3"])
    assert cfg.data.input_size == [192, 256]
    assert cfg.train.epochs == 3
    assert cfg.model.branches == [2, 4, 6]
    assert cfg.train.lr == pytest.approx(1e-3)


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\n  batch_size: 4\nmodel:\n  width: 32\n")
    cfg = load_config(f, ["train.epochs=9"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.width) == (9, 4, 32)


@pytest.mark.parametrize("override,needle", [
    ("train.epoch=3", "did you mean 'train.epochs'"),
    ("trian.epochs=3", "did you mean 'train'"),
    ("model.widht=3", "did you mean 'model.width'"),
])
def test_unknown_key_names_closest(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=[override])


@pytest.mark.parametrize("override,needle", [
    ("train.epochs=abc", "train.epochs: expected int"),
    ("data.input_size=[192,256,3]", "data.input_size: expected a list of 2"),
    ("data.input_size=5", "data.input_size: expected a list of int"),
    ("train.deterministic=3", "expected bool"),
    ("model.fau=magic", "model.fau: expected one of"),
])
def test_wrong_type_names_key(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=[override])


def test_unknown_key_in_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("loss:\n  lambda_kl: 2\n")
    with pytest.raises(ConfigError, match="loss.lambda_kd"):
        load_config(f)


def test_resolved_config_round_trip(tmp_path):
    cfg = load_config(overrides=["train.epochs=5", "model.branches=[1,2,3]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_cli_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.train", "train.epoch=3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "did you mean 'train.epochs'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override,needle", [
    ("train.lr=-1", "train.lr: expected a value > 0"),
    ("train.lr=.nan", "train.lr: expected a finite number"),
    ("data.heatmap_stride=0", "data.heatmap_stride: expected a value >= 1"),
    ("train.val_every=0", "train.val_every: expected a value >= 1"),
    ("data.workers=-1", "data.workers: expected a value >= 0"),
    ("eval.batch_size=0", "eval.batch_size: expected a value >= 1"),
    ("model.width=0", "model.width: expected a value >= 1"),
    ("train.max_iters_per_epoch=-1", "train.max_iters_per_epoch: expected a value >= 0"),
])
def test_values_that_cannot_run_are_refused_at_load(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=[override])


@pytest.mark.parametrize("key, value, words", [
    ("train.lr", -1, "train.lr: expected a value > 0"),
    ("data.input_size", [0, 0], "data.input_size: each side must be at least 16"),
    ("train.epochs", "abc", "train.epochs: expected int, got 'abc'"),
    ("model.branches", [], "model.branches: expected a non-empty list")])
def test_the_api_checks_a_config_edited_in_python(tmp_path, key, value, words):
    """api.train runs the command line's checks on a Config set in Python, before any
    work: one ConfigError naming the key, no run folder."""
    from okdhp_edge import api
    from okdhp_edge.errors import ConfigError

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [f"train.out_dir={tmp_path}/r"])
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError, match=words):
        api.train(cfg)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("override, words", [
    ("train.threads=999", "train.threads=999: this machine has"),
    ("data.workers=999", "data.workers=999: at most")])
def test_a_run_cannot_ask_for_more_than_the_machine_has(tmp_path, override, words):
    """Refused where the run starts (the config may come from a larger machine), before
    any thread or process is started."""
    from okdhp_edge import api
    from okdhp_edge.errors import ConfigError

    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      [f"train.out_dir={tmp_path}/r", override])
    with pytest.raises(ConfigError, match=words):
        api.train(cfg)
    assert not (tmp_path / "r").exists()


def test_a_model_key_only_another_family_reads_is_named(caplog):
    """An hourglass run given a light student's key (or the reverse) trains as asked and
    says, in one warning, which keys it ignores (a shared override list stays valid)."""
    import logging

    from okdhp_edge.config import load_config

    with caplog.at_level(logging.WARNING, logger="okdhp_edge.config"):
        load_config("configs/quickstart.yaml", ["model.encoder=shufflenetv2", "model.width=16"])
    assert [r.getMessage() for r in caplog.records] == [
        "model.encoder: read by the encoder_decoder family only; model.name=okdhp "
        "(stacked_hourglass) ignores it"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="okdhp_edge.config"):
        load_config("configs/quickstart.yaml", ["model.encoder=mobilenetv2"])  # its default
        load_config("configs/synthetic_light.yaml")
    assert not caplog.records
