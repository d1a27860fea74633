"""A tiny name -> builder registry for the models."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from okdhp_edge.families import (  # noqa: F401 - re-exported: the registry's view of them
    balanced_fields,
    is_multi_branch,
    model_kwargs,
    num_branches,
    student_fields,
)
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
    return model_kwargs(mcfg, num_joints)


def student_name(mcfg: Any, branch: int) -> str:
    """The name branch ``branch`` of a multi-branch config has as a student (hg4,
    mbv2-d128); the trainer's names, without the ``-b{i}`` of repeated branches."""
    import dataclasses

    import torch

    plain = dataclasses.replace(mcfg, **student_fields(mcfg, branch))
    with torch.device("meta"):  # no weights allocated: only the name is wanted
        return create_model(plain.name, **model_kwargs(plain, 1)).short_name()
