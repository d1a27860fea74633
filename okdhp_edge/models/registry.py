"""A tiny name -> builder registry for the models."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from okdhp_edge.models.hourglass import StackedHourglass
from okdhp_edge.models.light import EncoderDecoder, MultiBranchLight
from okdhp_edge.models.okdhp import MultiBranchHourglass

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        return fn

    return deco


def _create_hourglass(num_stacks: int, **kwargs: Any) -> StackedHourglass:
    return StackedHourglass(num_stacks=num_stacks, **kwargs)


@register("stacked_hourglass")
@register("hg")
def hg(num_stacks: int = 2, **kwargs: Any) -> StackedHourglass:
    return _create_hourglass(num_stacks, **kwargs)


@register("hg1")
def hg1(**kwargs: Any) -> StackedHourglass:
    return _create_hourglass(1, **kwargs)


@register("hg2")
def hg2(**kwargs: Any) -> StackedHourglass:
    return _create_hourglass(2, **kwargs)


@register("hg4")
def hg4(**kwargs: Any) -> StackedHourglass:
    return _create_hourglass(4, **kwargs)


@register("hg8")
def hg8(**kwargs: Any) -> StackedHourglass:
    return _create_hourglass(8, **kwargs)


@register("okdhp")
def okdhp(**kwargs: Any) -> MultiBranchHourglass:
    return MultiBranchHourglass(**kwargs)


@register("encoder_decoder")
@register("light")
def light(**kwargs: Any) -> EncoderDecoder:
    return EncoderDecoder(**kwargs)


@register("okdhp_light")
def okdhp_light(**kwargs: Any) -> MultiBranchLight:
    return MultiBranchLight(**kwargs)


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model('hg4', num_joints=17, width=128)``."""
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown model '{name}'{hint} (known: {', '.join(list_models())})")
    return _REGISTRY[name](**kwargs)


def model_kwargs_from_config(mcfg: Any, num_joints: int) -> dict[str, Any]:
    """Keyword arguments of ``create_model(mcfg.name, ...)`` from a ModelConfig."""
    fau = dict(fau=mcfg.fau, fau_kernels=tuple(mcfg.fau_kernels), fau_hidden=mcfg.fau_hidden)
    light_common = dict(num_joints=num_joints, encoder=mcfg.encoder, width_mult=mcfg.width_mult,
                        decoder_layers=mcfg.decoder_layers)
    if mcfg.name == "okdhp_light":
        return dict(light_common, decoder_widths=tuple(mcfg.decoder_widths),
                    fau_width=mcfg.fau_width, **fau)
    if mcfg.name in ("light", "encoder_decoder"):
        return dict(light_common, decoder_width=mcfg.decoder_width)
    common = dict(num_joints=num_joints, width=mcfg.width, depth=mcfg.depth,
                  stem_width=mcfg.stem_width, stem=mcfg.stem)
    if mcfg.name == "okdhp":
        return dict(common, shared_stacks=mcfg.shared_stacks, branches=tuple(mcfg.branches),
                    **fau)
    if mcfg.name in ("hg", "stacked_hourglass"):
        return dict(common, num_stacks=mcfg.num_stacks)
    return common


def is_multi_branch(name: str) -> bool:
    """Whether registry model ``name`` is an OKDHP multi-branch network."""
    return name in ("okdhp", "okdhp_light")


def student_fields(mcfg: Any, branch: int) -> dict[str, Any]:
    """ModelConfig fields that make branch ``branch`` of a multi-branch config a plain
    network of its own (the "trained alone" baseline of that student)."""
    if mcfg.name == "okdhp":
        return {"name": "hg", "num_stacks": mcfg.shared_stacks + mcfg.branches[branch]}
    if mcfg.name == "okdhp_light":
        return {"name": "light", "decoder_width": mcfg.decoder_widths[branch]}
    raise ValueError(f"model '{mcfg.name}' is not a multi-branch network")


def student_name(mcfg: Any, branch: int) -> str:
    """The name branch ``branch`` of a multi-branch config has as a student (hg4,
    mbv2-d128); the trainer's names, without the ``-b{i}`` of repeated branches."""
    from okdhp_edge.models.light import light_name

    fields = student_fields(mcfg, branch)
    if fields["name"] == "hg":
        return f"hg{fields['num_stacks']}"
    return light_name(mcfg.encoder, mcfg.width_mult, fields["decoder_width"])


def balanced_fields(mcfg: Any) -> dict[str, Any]:
    """ModelConfig fields of the balanced form (every branch as large as the largest)."""
    if mcfg.name == "okdhp":
        return {"branches": [max(mcfg.branches)] * len(mcfg.branches)}
    if mcfg.name == "okdhp_light":
        return {"decoder_widths": [max(mcfg.decoder_widths)] * len(mcfg.decoder_widths)}
    raise ValueError(f"model '{mcfg.name}' is not a multi-branch network")


def num_branches(mcfg: Any) -> int:
    """Branches of a multi-branch ModelConfig."""
    return len(mcfg.decoder_widths if mcfg.name == "okdhp_light" else mcfg.branches)
