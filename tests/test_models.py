import json
import subprocess
import sys

import pytest
import torch

from okdhp_edge import create_model, list_models
from okdhp_edge.models import MultiBranchHourglass, OKDHPOutput
from okdhp_edge.models.info import count_params
from okdhp_edge.models.okdhp import FAU


def test_registry():
    assert {"hg1", "hg2", "hg4", "hg8", "okdhp"} <= set(list_models())
    with pytest.raises(ValueError, match="did you mean 'hg4'"):
        create_model("hg44")


@pytest.mark.parametrize("name,params", [("hg2", 6.57e6), ("hg4", 12.86e6), ("hg8", 25.43e6)])
def test_paper_parameter_counts(name, params):
    m = create_model(name, num_joints=16, width=256)
    assert count_params(m) == pytest.approx(params, abs=0.005e6)


def test_fau_cost_matches_method():
    fau = FAU(256, 3, 16)
    assert count_params(fau) == pytest.approx(5.46e6, abs=0.01e6)


@pytest.mark.parametrize("branches", [[1, 2, 3], [2, 2], [1]])
@pytest.mark.parametrize("fau", ["released", "paper", "mean"])
def test_multibranch_outputs(branches, fau):
    m = MultiBranchHourglass(1, branches, num_joints=5, width=16, depth=2, stem_width=8, fau=fau)
    out = m(torch.randn(2, 3, 32, 32))
    assert isinstance(out, OKDHPOutput)
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
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.models", "hg2", "num_joints=16",
                           "--json"], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["params"] == 6570400
