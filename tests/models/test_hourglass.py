import json
import subprocess
import sys

import pytest
import torch

from okdhp_edge import create_model, list_models
from okdhp_edge.models import MultiBranchHourglass, MultiBranchOutput
from okdhp_edge.models.info import count_params
from okdhp_edge.models.okdhp import FAU


def test_registry():
    assert {"hg1", "hg2", "hg4", "hg8", "okdhp"} <= set(list_models())
    with pytest.raises(ValueError, match="did you mean 'hg4'"):
        create_model("hg44")


@pytest.mark.parametrize("name,released,lua", [("hg2", 6_730_912, 6_570_400),
                                                ("hg4", 13_018_816, 12_858_304),
                                                ("hg8", 25_594_624, 25_434_112)])
def test_paper_parameter_counts(name, released, lua):
    """METHOD.md's counts at K = 16, F = 256: the released stem by default, Newell's Lua
    stem 160,512 parameters lighter."""
    assert count_params(create_model(name, num_joints=16, width=256)) == released
    assert count_params(create_model(name, num_joints=16, width=256, stem="lua")) == lua


def test_balanced_training_network_count():
    m = create_model("okdhp", num_joints=16, width=256, shared_stacks=2, branches=(2, 2, 2))
    assert count_params(m) == 30_915_696


def test_unknown_stem_refused():
    with pytest.raises(ValueError, match="unknown stem 'newell'"):
        create_model("hg2", stem="newell")


def test_fau_cost_matches_method():
    fau = FAU(256, 3, 16)
    assert count_params(fau) == pytest.approx(5.46e6, abs=0.01e6)


@pytest.mark.parametrize("branches", [[1, 2, 3], [2, 2], [1]])
@pytest.mark.parametrize("fau", ["released", "paper", "mean"])
def test_multibranch_outputs(branches, fau):
    m = MultiBranchHourglass(1, branches, num_joints=5, width=16, depth=2, stem_width=8, fau=fau)
    out = m(torch.randn(2, 3, 32, 32))
    assert isinstance(out, MultiBranchOutput)
    assert len(out.branch_heatmaps) == len(branches)
    assert [len(h) for h in out.branch_stack_heatmaps] == branches
    assert len(out.all_heatmaps()) == 1 + sum(branches)
    for b, hs in enumerate(out.branch_stack_heatmaps):
        assert out.branch_heatmaps[b] is hs[-1]  # each branch's final heatmap, never another's
    assert out.ensemble.shape == (2, 5, 8, 8)
    assert torch.allclose(out.weights.sum(1), torch.ones(2, 5))
    manual = sum(out.weights[:, t, :, None, None] * out.branch_heatmaps[t]
                 for t in range(len(branches)))
    assert torch.allclose(out.ensemble, manual, atol=1e-6)


def test_student_is_bit_identical_to_its_branch():
    torch.manual_seed(0)
    m = MultiBranchHourglass(2, [1, 2, 3], num_joints=5, width=16, depth=2, stem_width=8)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(2):  # move BN statistics and weights away from their init
        out = m(torch.randn(4, 3, 32, 32))
        opt.zero_grad()
        sum(h.mean() for h in out.all_heatmaps()).backward()
        opt.step()
    m.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = m(x)
        for b in range(3):
            s = m.student(b).eval()
            assert s.num_stacks == 2 + [1, 2, 3][b]
            assert torch.equal(s(x).heatmap, out.branch_heatmaps[b])


def test_model_info_cli():
    """The CLI's JSON: parameters (every count: test_paper_parameter_counts) and MACs."""
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.models", "hg4", "num_joints=16",
                           "--json"], capture_output=True, text=True, check=True)
    info = json.loads(proc.stdout)
    assert info["params"] == 13_018_816
    assert info["macs"] / 1e9 == pytest.approx(15.4, abs=0.05)


def test_upsampling_by_copy_is_bit_identical_to_nearest_resize():
    from okdhp_edge.models.blocks import NearestUp, double_by_copy

    x = torch.randn(2, 5, 3, 4)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    assert torch.equal(double_by_copy(x), ref)
    up = NearestUp()
    up.by_copy = True
    assert torch.equal(up(x, (6, 8)), ref)
    # not an exact doubling (an odd skip size): the resize, as without by_copy
    assert torch.equal(up(x, (7, 9)),
                       torch.nn.functional.interpolate(x, size=(7, 9), mode="nearest"))
