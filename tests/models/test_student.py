"""The student contract (okdhp_edge.models.student): every family's networks keep it."""

import pytest
import torch

from okdhp_edge.families import FAMILIES
from okdhp_edge.models import create_model
from okdhp_edge.models.student import (
    MultiBranchNet,
    MultiBranchOutput,
    Student,
    StudentOutput,
    export_module,
)

SMALL = {"okdhp": dict(width=8, stem_width=8, depth=1, shared_stacks=1, branches=(1, 2),
                       fau_kernels=(3,), fau_hidden=8),
         "okdhp_light": dict(encoder="mobilenetv2", width_mult=0.25, decoder_widths=(8, 16),
                             fau_width=8, fau_kernels=(3,))}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_family_keeps_the_contract(family):
    net = create_model(family.multi, num_joints=5, **SMALL[family.multi]).eval()
    assert isinstance(net, MultiBranchNet)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert isinstance(net(x), MultiBranchOutput)
        for i, name in enumerate(net.branch_names()):
            student = net.student(i).eval()
            assert isinstance(student, Student) and student.family in family.plain
            assert student.short_name() == name.split("-b")[0]
            rebuilt = create_model(student.family, num_joints=5, **student.arch())
            assert sum(p.numel() for p in rebuilt.parameters()) == \
                sum(p.numel() for p in student.parameters())
            made_of = [net.get_submodule(m) for m in net.student_modules(i)]
            assert sum(p.numel() for m in made_of for p in m.parameters()) == \
                sum(p.numel() for p in student.parameters())  # what QAT quantizes of it
            out = student(x)
            assert isinstance(out, StudentOutput)
            module, example = export_module(student, (64, 64))
            assert torch.equal(module(example), student(example).heatmap)
