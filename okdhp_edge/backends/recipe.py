"""The INT8 recipe: the calibration every backend's quantizer reads
(:class:`~okdhp_edge.convert.quantize.Calibration`) and, as one section per backend, the
options only that backend's quantizer reads, each declared in its backend's module
(``Int8Options``). A new backend option is a field of its module's ``Int8Options``: the
command line (``bench``, ``zoo export``, ``bench calibration``), the API keywords, ``--show``,
the reproducing command and the records follow from it.

Records keep one flat mapping of the recipe (a section's field names are unique across the
recipe: ``ort_quantizer``, ``max_drop``), so every file, bundle and report written before
the sections existed reads unchanged.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Iterable, Mapping, Optional

from okdhp_edge.backends import onnxruntime as _onnxruntime
from okdhp_edge.backends import openvino as _openvino
from okdhp_edge.convert.quantize import Calibration
from okdhp_edge.errors import QuantizationError
from okdhp_edge.grammar import option


@dataclass(frozen=True)
class QuantRecipe(Calibration):
    """How a student is quantized: the shared calibration fields, then one section per
    backend whose quantizer has options of its own (the section is named as the backend)."""

    onnxruntime: _onnxruntime.Int8Options = option(
        factory=_onnxruntime.Int8Options, help="ONNX Runtime's INT8 options")
    openvino: _openvino.Int8Options = option(
        factory=_openvino.Int8Options, help="OpenVINO's INT8 options (NNCF)")

    # backend -> the flat names of its section's fields (derived from the sections)
    SECTIONS: ClassVar[dict[str, tuple[str, ...]]]

    def section(self, backend: str) -> Optional[Any]:
        """``backend``'s INT8 options (None: its quantizer has none of its own)."""
        return getattr(self, backend) if backend in self.SECTIONS else None

    def as_dict(self) -> dict[str, Any]:
        """The flat record: the shared fields, then every section's fields."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.SECTIONS}
        for backend in self.SECTIONS:
            out.update(dataclasses.asdict(getattr(self, backend)))
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> QuantRecipe:
        """The recipe a flat record (or flat keywords) describes; a missing field takes its
        default (a record written before the field existed); an unknown one is refused."""
        sections: dict[str, dict[str, Any]] = {b: {} for b in cls.SECTIONS}
        shared: dict[str, Any] = {}
        for name, value in record.items():
            backend = owner(name)
            if backend is not None:
                sections[backend][name] = value
            elif name in _SHARED:
                shared[name] = value
            else:
                raise QuantizationError(f"'{name}' is no INT8 recipe field (expected one of "
                                        f"{', '.join(_SHARED + _OWNED)})")
        built = {b: _SECTION_TYPES[b](**v) for b, v in sections.items()}
        return cls(**shared, **built)

    def fields_for(self, backend: Optional[str] = None) -> tuple[str, ...]:
        """The flat fields a file for ``backend`` depends on (None: all of them)."""
        return tuple(name for name in self.as_dict()
                     if backend is None or owner(name) in (None, backend))

    def check_honoured(self, backends: Iterable[str]) -> None:
        """QuantizationError when a section is set away from its defaults but none of
        ``backends`` (those quantizing) reads it: an option that would be ignored is
        refused, not recorded."""
        backends = set(backends)
        for backend in self.SECTIONS:
            given, default = getattr(self, backend), type(getattr(self, backend))()
            for f in fields(given):
                value = getattr(given, f.name)
                if value != getattr(default, f.name) and backend not in backends:
                    raise QuantizationError(
                        f"{recipe_flag(f.name)} {value}: only {backend}'s INT8 reads it, and "
                        f"it is not among the backends quantized here "
                        f"({', '.join(sorted(backends)) or 'none'})")

    def same_as(self, record: Any, backend: Optional[str] = None) -> bool:
        """Whether a recorded recipe (export.yaml; written before a field existed, it holds
        that field's default) made the same file for ``backend`` as this recipe would."""
        if not isinstance(record, dict):
            return False
        old, new = {**QuantRecipe().as_dict(), **record}, self.as_dict()
        return all(old.get(f) == new[f] for f in self.fields_for(backend))

    def advice(self, backends: Iterable[str]) -> list[str]:
        """What the sections of ``backends`` (those quantizing) have to say on this
        machine (OpenVINO: a CPU without VNNI)."""
        return [line for b in sorted(set(backends) & set(self.SECTIONS))
                for line in getattr(getattr(self, b), "advice", lambda: [])()]


# backend -> its section's class: the recipe's dataclass-typed fields
_SECTION_TYPES: dict[str, type] = {
    name: tp for name, tp in typing.get_type_hints(QuantRecipe).items()
    if dataclasses.is_dataclass(tp)}
QuantRecipe.SECTIONS = {b: tuple(f.name for f in fields(tp)) for b, tp in _SECTION_TYPES.items()}
_SHARED = tuple(f.name for f in fields(Calibration))
_OWNED = tuple(n for names in QuantRecipe.SECTIONS.values() for n in names)
# the recipe keys a reproducing command always spells out (the calibration's identity)
ALWAYS_SPELLED = ("calib_method", "calib_images", "calib_seed")


def owner(name: str) -> Optional[str]:
    """The backend whose INT8 options hold the flat recipe field ``name`` (None: shared)."""
    return next((b for b, names in QuantRecipe.SECTIONS.items() if name in names), None)


def reads(backend: str, name: str) -> bool:
    """Whether ``backend``'s quantizer reads the flat recipe field ``name`` of its own."""
    return name in QuantRecipe.SECTIONS.get(backend, ())


def recipe_flag(name: str) -> str:
    """The command-line option of a flat recipe field (``num_images`` -> ``--calib-images``)."""
    for cls in (Calibration, *_SECTION_TYPES.values()):
        for f in fields(cls):
            if f.name == name:
                return f.metadata.get("flag") or "--" + name.replace("_", "-")
    raise KeyError(name)
