"""The model registry, built from the family table (:data:`okdhp_edge.families.FAMILIES`):
each family's plain names (with the arguments a name fixes, e.g. ``hg4``: 4 stacks) and its
multi-branch name, each bound to the class the table names. A name is defined there only."""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

from torch import nn

from okdhp_edge.families import (  # noqa: F401 - re-exported: the registry's view of them
    FAMILIES,
    balanced_fields,
    is_multi_branch,
    model_kwargs,
    num_branches,
    student_fields,
)


def _class(path: str) -> Callable[..., nn.Module]:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _registry() -> dict[str, Callable[..., nn.Module]]:
    reg: dict[str, Callable[..., nn.Module]] = {}
    for fam in FAMILIES:
        for name, fixed in fam.plain.items():
            reg[name] = functools.partial(_class(fam.plain_class), **fixed)
        reg[fam.multi] = _class(fam.multi_class)
    return reg


_REGISTRY = _registry()


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


def model_from_config(mcfg: Any, num_joints: int) -> Any:
    """The network a ModelConfig describes, its encoder's pretrained weights loaded where
    ``model.encoder_checkpoint`` names them."""
    model = create_model(mcfg.name, **model_kwargs(mcfg, num_joints))
    if mcfg.encoder_checkpoint:
        if not hasattr(model, "encoder"):
            raise ValueError(f"model.encoder_checkpoint: model '{mcfg.name}' has no encoder "
                             "(set it for light and okdhp_light)")
        from okdhp_edge.models.encoders import load_encoder_checkpoint

        load_encoder_checkpoint(model.encoder, mcfg.encoder_checkpoint)
    return model


def student_name(mcfg: Any, branch: int) -> str:
    """The name branch ``branch`` of a multi-branch config has as a student (hg4,
    mbv2-d128); the trainer's names, without the ``-b{i}`` of repeated branches."""
    import dataclasses

    import torch

    plain = dataclasses.replace(mcfg, **student_fields(mcfg, branch))
    with torch.device("meta"):  # no weights allocated: only the name is wanted
        return create_model(plain.name, **model_kwargs(plain, 1)).short_name()
