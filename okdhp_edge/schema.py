"""The one strict loader: plain data (YAML, JSON) checked against dataclass annotations.

Configs (:mod:`okdhp_edge.config`) and on-disk records (:mod:`okdhp_edge.records`) are
dataclasses; this module turns a mapping into one of them and back. Unknown keys are
refused naming the closest valid one, every value is checked against its annotation
(``int``, ``float``, ``str``, ``bool``, ``Optional``, ``list``/``tuple``, ``dict``, ``Any``
and nested dataclasses), a missing field without a default is named, and a record may add
its own range checks in a ``_check(where)`` method. Errors are raised as the caller's error
class, in one line. No torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Mapping, Optional, TypeVar, Union

T = TypeVar("T")

# a field whose value None is left out of the written record (an optional block)
OMIT_NONE = {"omit_none": True}


def closest(name: str, options: list[str]) -> str:
    """The option most like ``name`` ('' when there are none)."""
    match = difflib.get_close_matches(str(name), options, n=1, cutoff=0.0)
    return match[0] if match else ""


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "null")


class _At(str):
    """A field's name as errors print it: ``where: path`` (a record) or ``path`` (a config)."""

    where: str = ""
    path: str = ""


def _at(where: str, path: str) -> _At:
    at = _At(f"{where}: {path}" if where else path)
    at.where, at.path = where, path
    return at


def _sub(key: str, suffix: str) -> _At:
    """The name of an item of ``key`` (``[0]``, ``.name``)."""
    return _at(getattr(key, "where", ""), getattr(key, "path", key) + suffix)


def _number(value: Any, tp: Any, key: str, error: type[Exception], widen: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float) if tp is float else int):
        if tp is float and isinstance(value, str) and widen:  # YAML 1.1 reads "1e-3" as str
            try:
                return float(value)
            except ValueError:
                pass
        raise error(f"{key}: expected {tp.__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value) and not widen:
        raise error(f"{key}: expected a finite number, got {value!r}")
    return float(value) if tp is float and widen else value


def _union(value: Any, tp: Any, key: str, error: type[Exception], widen: bool) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(value, arg, key, error, widen)
        except error:
            continue
    raise error(f"{key}: expected {type_name(tp)}, got {value!r}")


def _sequence(value: Any, tp: Any, key: str, error: type[Exception], widen: bool) -> Any:
    args = typing.get_args(tp) or (Any,)
    if not isinstance(value, (list, tuple)):
        raise error(f"{key}: expected a list of {type_name(args[0])}, got {value!r}")
    if typing.get_origin(tp) is tuple and args[-1] is not Ellipsis:  # fixed length
        if len(value) != len(args):
            raise error(f"{key}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(coerce(v, a, _sub(key, f"[{i}]"), error, widen)
                     for i, (v, a) in enumerate(zip(value, args)))
    items = [coerce(v, args[0], _sub(key, f"[{i}]"), error, widen)
             for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(tp) is tuple else items


def _mapping(value: Any, tp: Any, key: str, error: type[Exception], widen: bool) -> Any:
    k_tp, v_tp = typing.get_args(tp) or (Any, Any)
    if not isinstance(value, dict):
        raise error(f"{key}: expected a mapping, got {value!r}")
    return {coerce(k, k_tp, f"{key} key", error, widen):
            coerce(v, v_tp, _sub(key, f".{k}"), error, widen) for k, v in value.items()}


def coerce(value: Any, tp: Any, key: str, error: type[Exception] = ValueError,
           widen: bool = True) -> Any:
    """``value`` checked against the annotation ``tp`` and returned; ``error`` names ``key``.
    With ``widen`` (configs), ints become floats where a float is expected; without it
    (records), numbers keep the type they were written with, so a record written back is
    the record read."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union(value, tp, key, error, widen)
    if origin in (list, tuple):
        return _sequence(value, tp, key, error, widen)
    if origin is dict or tp is dict:
        return _mapping(value, tp, key, error, widen)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        where, path = getattr(key, "where", ""), getattr(key, "path", key)
        return from_dict(tp, value, where, error, f"{path}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise error(f"{key}: expected bool (true/false), got {value!r}")
    if tp in (int, float):
        return _number(value, tp, key, error, widen)
    if tp is str:
        if isinstance(value, str):
            return value
        raise error(f"{key}: expected str, got {value!r}")
    raise error(f"{key}: unsupported type {type_name(tp)}")


def from_dict(cls: type[T], data: Any, where: str, error: type[Exception] = ValueError,
              prefix: str = "") -> T:
    """A ``cls`` (a dataclass) from ``data``, strictly: unknown keys named with the closest
    valid one, missing required fields named, every value checked; then the record's own
    ``_check(where)``. Numbers keep their written type (see :func:`coerce`)."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: {prefix.rstrip('.') or 'record'} must be a mapping, got "
                    f"{type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            raise error(f"{where}: unknown field '{prefix}{key}'; did you mean "
                        f"'{prefix}{closest(str(key), list(fields))}'?")
    values = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise error(f"{where}: missing field '{prefix}{name}'")
            continue
        tp = hints[name]
        if f.metadata.get("empty_is_none") and data[name] == {}:
            values[name] = None  # an older record's "none"
            continue
        if dataclasses.is_dataclass(tp):
            values[name] = from_dict(tp, data[name], where, error, f"{prefix}{name}.")
        else:
            values[name] = coerce(data[name], tp, _at(where, f"{prefix}{name}"), error,
                                  widen=False)
    obj = cls(**values)
    check = getattr(obj, "_check", None)
    if check is not None:
        check(where)
    return obj


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """The record as plain data (lists, dicts, numbers, strings) in field order; a field
    marked :data:`OMIT_NONE` is left out while it is None."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.metadata.get("omit_none"):
            continue
        out[f.name] = _plain(value)
    return out


def check_version(data: Any, key: str, current: int, where: str, error: type[Exception],
                  newer_hint: str = "upgrade okdhp_edge") -> int:
    """The record's version field (``schema``, ``bundle_version``...): an int >= 1, not newer
    than ``current``."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: must be a mapping, got {type(data).__name__}")
    version = data.get(key)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise error(f"{where}: missing or invalid field '{key}'")
    if version > current:
        raise error(f"{where}: {key.replace('_', ' ')} {version} is newer than this "
                    f"okdhp_edge reads ({current}); {newer_hint}")
    return version


def optional_number(value: Optional[float]) -> bool:
    """None or a finite number (not a bool)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value))
