"""Student families: which ModelConfig fields build which network. No torch.

One entry per family: the registry names of its plain and multi-branch networks, their
constructor arguments from a ModelConfig, and how a branch of the multi-branch network
becomes a plain network of its own (the ablation's "trained alone" student). The model
registry (:mod:`okdhp_edge.models.registry`) is built from this table. A new family is one
model file and one entry here (plus its ModelConfig fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Family:
    """How a ModelConfig describes the networks of one student family."""

    name: str  # the family name students record (architecture.family)
    # registry names of the plain network -> constructor arguments the name fixes
    plain: dict[str, dict[str, Any]]
    multi: str  # registry name of the OKDHP multi-branch network
    plain_class: str  # "module:Class" of the plain network (imported by the registry)
    multi_class: str
    plain_kwargs: Callable[[Any], dict]  # constructor args (no num_joints) of a plain net
    multi_kwargs: Callable[[Any], dict]
    branch_fields: Callable[[Any, int], dict]  # ModelConfig fields of branch i alone
    balanced_fields: Callable[[Any], dict]  # every branch as large as the largest
    num_branches: Callable[[Any], int]
    heatmap_stride: Callable[[Any], float]  # of the input; None: set by data config
    # the family's own rules on (model, data) configs: a ValueError names the key
    check: Callable[[Any, Any], None] = lambda m, d: None
    # the forms its decoder can take in an exported file (targets.DECODER_FORMS): a light
    # student's transposed convolutions can be sub-pixel convolutions; an hourglass has none
    decoder_forms: tuple[str, ...] = ("transposed",)
    # a student's decoder work (Architecture -> multiply-adds, None: no decoder forms), what
    # a target's size rule reads (targets.Target.decoder_from_macs)
    decoder_work: Callable[[Any], Optional[int]] = lambda arch: None


def _fau(m: Any) -> dict:
    return dict(fau=m.fau, fau_kernels=tuple(m.fau_kernels), fau_hidden=m.fau_hidden)


def _hg_common(m: Any) -> dict:
    return dict(width=m.width, depth=m.depth, stem_width=m.stem_width, stem=m.stem)


def _light_common(m: Any) -> dict:
    return dict(encoder=m.encoder, width_mult=m.width_mult, decoder_layers=m.decoder_layers)


def _hourglass_check(m: Any, data: Any) -> None:
    """Each side, at the heatmap stride, halves ``model.depth`` times."""
    for side in data.input_size:
        if side // data.heatmap_stride < 2**m.depth:
            raise ValueError(f"data.input_size: {side} px is too small for model.depth "
                             f"{m.depth} (needs at least {data.heatmap_stride * 2**m.depth})")


def _light_check(m: Any, data: Any) -> None:
    """The encoder's stride 32 bounds the decoder and divides the input."""
    if m.decoder_layers > 5:
        raise ValueError(f"model.decoder_layers: at most 5 (the encoder's stride 32), got "
                         f"{m.decoder_layers}")
    for side in data.input_size:
        if side % 32:
            raise ValueError(f"data.input_size: {side} px must divide by 32 (the encoder's "
                             "stride)")


def _light_decoder_work(arch: Any) -> int:
    """The multiply-adds of a light student's last transposed convolution at its input
    size: width x width x 16 (a 4x4 kernel) x the pixels it reads (stride 8 with three
    layers). The sub-pixel form's extra operators (depth-to-space, crop) cost a fixed
    amount per pixel; what they save grows with this."""
    width, layers = arch.args["decoder_width"], arch.args.get("decoder_layers", 3)
    stride = 32 // 2 ** (layers - 1)
    pixels = (arch.input_size[0] // stride) * (arch.input_size[1] // stride)
    return 16 * width * width * pixels


HOURGLASS = Family(
    name="stacked_hourglass",
    plain={"hg": {}, "stacked_hourglass": {}, "hg1": {"num_stacks": 1},
           "hg2": {"num_stacks": 2}, "hg4": {"num_stacks": 4}, "hg8": {"num_stacks": 8}},
    multi="okdhp", plain_class="okdhp_edge.models.hourglass:StackedHourglass",
    multi_class="okdhp_edge.models.okdhp:MultiBranchHourglass",
    plain_kwargs=lambda m: dict(_hg_common(m), **({} if HOURGLASS.plain[m.name]
                                                  else {"num_stacks": m.num_stacks})),
    multi_kwargs=lambda m: dict(_hg_common(m), shared_stacks=m.shared_stacks,
                                branches=tuple(m.branches), **_fau(m)),
    branch_fields=lambda m, i: {"name": "hg", "num_stacks": m.shared_stacks + m.branches[i]},
    balanced_fields=lambda m: {"branches": [max(m.branches)] * len(m.branches)},
    num_branches=lambda m: len(m.branches),
    heatmap_stride=lambda m: 4,
    check=_hourglass_check,
)

LIGHT = Family(
    name="encoder_decoder", plain={"light": {}, "encoder_decoder": {}}, multi="okdhp_light",
    plain_class="okdhp_edge.models.light:EncoderDecoder",
    multi_class="okdhp_edge.models.light:MultiBranchLight",
    plain_kwargs=lambda m: dict(_light_common(m), decoder_width=m.decoder_width),
    multi_kwargs=lambda m: dict(_light_common(m), decoder_widths=tuple(m.decoder_widths),
                                fau_width=m.fau_width, **_fau(m)),
    branch_fields=lambda m, i: {"name": "light", "decoder_width": m.decoder_widths[i]},
    balanced_fields=lambda m: {"decoder_widths": [max(m.decoder_widths)]
                               * len(m.decoder_widths)},
    num_branches=lambda m: len(m.decoder_widths),
    heatmap_stride=lambda m: 32 / 2**m.decoder_layers,
    check=_light_check,
    decoder_forms=("transposed", "subpixel"),
    decoder_work=_light_decoder_work,
)

FAMILIES = (HOURGLASS, LIGHT)

# the light family's encoders (model.encoder) and the short names in student names
ENCODER_ABBREVIATIONS = {"resnet18": "r18", "mobilenetv2": "mbv2", "shufflenetv2": "sv2"}


def family_of(name: str) -> Family:
    """The family of registry model ``name`` (plain or multi-branch)."""
    for f in FAMILIES:
        if name == f.multi or name in f.plain:
            return f
    known = sorted({n for f in FAMILIES for n in (f.multi, *f.plain)})
    raise ValueError(f"unknown model '{name}' (known: {', '.join(known)})")


class _Reads:
    """A model config that records which fields are read (answering with ``base``'s)."""

    def __init__(self, base: Any, name: str) -> None:
        self._base, self._name, self.read = base, name, set()

    def __getattr__(self, key: str) -> Any:
        self.read.add(key)
        return self._name if key == "name" else getattr(self._base, key)


def fields_read(family: Family, base: Any) -> set[str]:
    """The model config fields ``family``'s networks are built from (its plain and
    multi-branch constructors and branch rule, traced on ``base``, a default ModelConfig)."""
    multi, plain = _Reads(base, family.multi), _Reads(base, next(iter(family.plain)))
    family.multi_kwargs(multi)
    family.branch_fields(multi, 0)
    family.heatmap_stride(multi)
    family.plain_kwargs(plain)
    return (multi.read | plain.read) - {"name"}


def is_multi_branch(name: str) -> bool:
    """Whether registry model ``name`` is an OKDHP multi-branch network."""
    return any(name == f.multi for f in FAMILIES)


def model_kwargs(mcfg: Any, num_joints: int) -> dict[str, Any]:
    """Keyword arguments of ``create_model(mcfg.name, ...)`` from a ModelConfig."""
    f = family_of(mcfg.name)
    kw = f.multi_kwargs(mcfg) if mcfg.name == f.multi else f.plain_kwargs(mcfg)
    return dict(kw, num_joints=num_joints)


def _multi(mcfg: Any) -> Family:
    if not is_multi_branch(mcfg.name):
        raise ValueError(f"model '{mcfg.name}' is not a multi-branch network")
    return family_of(mcfg.name)


def student_fields(mcfg: Any, branch: int) -> dict[str, Any]:
    """ModelConfig fields that make branch ``branch`` of a multi-branch config a plain
    network of its own (the "trained alone" baseline of that student)."""
    return _multi(mcfg).branch_fields(mcfg, branch)


def balanced_fields(mcfg: Any) -> dict[str, Any]:
    """ModelConfig fields of the balanced form (every branch as large as the largest)."""
    return _multi(mcfg).balanced_fields(mcfg)


def num_branches(mcfg: Any) -> int:
    """Branches of a multi-branch ModelConfig."""
    return _multi(mcfg).num_branches(mcfg)


_BRANCH_SUFFIX = re.compile(r"-b\d+$")


def zoo_student_names(branch_names: list[str]) -> list[str]:
    """The zoo name of each branch, in branch order: the branch's own name (hg4, mbv2-d64),
    with ``-b{i}`` appended where branches share a name (a balanced net: hg4-b0, hg4-b1)."""
    return [f"{n}-b{i}" if branch_names.count(n) > 1 else n
            for i, n in enumerate(branch_names)]


def base_student_name(name: str) -> str:
    """A zoo name without the branch suffix :func:`zoo_student_names` adds (hg4-b1 -> hg4)."""
    return _BRANCH_SUFFIX.sub("", name)
