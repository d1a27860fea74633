"""One grammar for the command line and Python: typed requests.

A command's request is a frozen dataclass deriving from :class:`Request`; each field is an
:func:`option` with its help, choices and range. From that one definition come

- the parser: ``--flag value`` and ``key=value`` alike (``okdhp bench --zoo Z
  min_time=1``), ``--help`` under the ``okdhp <command>`` name and ``--show`` (every key
  with its type, default and help);
- the Python keywords: ``Request.build(key=value, ...)`` takes the same names (an unknown
  one is refused naming the closest), and :mod:`okdhp_edge.api` passes them through;
- the checks: every value is checked in ``__post_init__`` (type, choices, range), then the
  request's own cross-field :meth:`Request.check`; the command line and Python meet the
  same errors (:class:`okdhp_edge.errors.UsageError`, one line);
- the reproducing command a report records: :meth:`Request.command`.

A field whose type is itself a dataclass (an INT8 recipe) is a *section*: its fields are
keys of the request under their own option names (``calib_images``), built into the
section's object; a section may hold sections (each backend's INT8 options in the
recipe). No torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import math
import shlex
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence, TypeVar, Union

from okdhp_edge.errors import OkdhpError, UsageError
from okdhp_edge.schema import closest, coerce, type_name

R = TypeVar("R", bound="Request")

_TRUE, _FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


def option(default: Any = dataclasses.MISSING, help: str = "", *,  # noqa: A002
           choices: Sequence[Any] = (), minimum: Optional[float] = None, above: bool = False,
           maximum: Optional[float] = None, flag: str = "", positional: bool = False,
           repeat: bool = False, spaced: bool = False, metavar: Any = "", hint: str = "",
           free: bool = False, factory: Any = None) -> Any:
    """A request field: ``default`` (or ``factory``), its ``help``, the ``choices`` its
    value (or each item of a tuple) takes, its range (``minimum``, ``> minimum`` with
    ``above``, ``maximum``), its command-line ``flag`` (default ``--name-with-dashes``),
    whether it is ``positional``, and for a tuple whether the flag is given once per item
    (``repeat``) or followed by its items (``spaced``: ``--seeds 0 1``) instead of one
    comma list (which ``spaced`` takes too); ``hint`` is added to a range error. A
    ``free`` positional takes the ``key=value`` tokens that name no key (a model's
    constructor arguments)."""
    meta = {"help": help, "choices": tuple(choices), "minimum": minimum, "above": above,
            "maximum": maximum, "flag": flag, "positional": positional, "repeat": repeat,
            "metavar": metavar, "hint": hint, "free": free, "spaced": spaced}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a request: its name (the keyword and the ``key=`` of the command line),
    annotation, default, option metadata and, in a section, the section's field name."""

    name: str
    tp: Any
    default: Any
    meta: dict
    section: str = ""  # the request field holding it ("" at the top)
    attr: str = ""  # its field name in the section

    @property
    def flag(self) -> str:
        return self.meta.get("flag") or "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def label(self) -> str:
        return self.name if self.meta.get("positional") else f"{self.name} ({self.flag})"

    def describe(self) -> str:
        """``type = default`` and its choices or range, for ``--show`` and help."""
        base = _base(self.tp)
        kind = f"list of {type_name(_item(base))}" if _is_tuple(base) else type_name(base)
        out = f"{kind}, " + ("required" if self.required else f"default {_text(self.default)}")
        if self.meta.get("choices"):
            out += (f"; one{' or more' if _is_tuple(base) else ''} of "
                    + ", ".join(map(str, self.meta["choices"])))
        return out + ("; " + " and ".join(_bounds(self.meta)) if _bounds(self.meta) else "")


def _bounds(meta: dict) -> list[str]:
    """``['>= 0', '<= 1']``: the range an option's value must lie in."""
    lo, hi = meta.get("minimum"), meta.get("maximum")
    return ([f"{'>' if meta['above'] else '>='} {lo:g}"] if lo is not None else []) + \
        ([f"<= {hi:g}"] if hi is not None else [])


def _one(value: Any) -> str:
    """A value as a user writes it: ``0``, not ``0.0``, for a whole float."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _text(value: Any, one: Any = str) -> str:
    """A value as ``--show`` and ``--help`` print it (``one``: each item's text)."""
    if isinstance(value, tuple):
        return ",".join(map(one, value)) if value else "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else one(value)


def _base(tp: Any) -> Any:
    """``X`` of ``Optional[X]``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and \
        type(None) in typing.get_args(tp)


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _item(tp: Any) -> Any:
    return typing.get_args(tp)[0]


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _from_text(text: str, tp: Any, key: Key) -> Any:
    """A command-line string as the value ``tp`` holds (checked by :func:`check_value`)."""
    if _optional(tp) and text.lower() in ("none", "null"):
        return None
    base = _base(tp)
    if _is_tuple(base):
        parts = [s.strip() for s in text.split(",") if s.strip()]
        return tuple(_from_text(s, _item(base), key) for s in parts)
    if base is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise UsageError(f"{key.label}: expected true or false, got {text!r}")
    if base in (int, float):
        try:
            return base(text)
        except ValueError:
            what = "a whole number" if base is int else "a number"
            raise UsageError(f"{key.label}: expected {what}, got {text!r}") from None
    return Path(text) if base is Path else text


def check_value(value: Any, key: Key) -> Any:
    """``value`` checked against the key's type, choices and range, as the field holds it
    (a path as :class:`~pathlib.Path`, a comma list or list as a tuple)."""
    tp, m = key.tp, key.meta
    if value is None:
        if _optional(tp):
            return None
        raise UsageError(f"{key.label}: a value is required")
    base = _base(tp)
    if _is_tuple(base):
        if isinstance(value, str):
            value = (value,) if m.get("positional") else tuple(
                s.strip() for s in value.split(",") if s.strip())
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key.label}: expected a list, got {value!r}")
        args = typing.get_args(base)
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise UsageError(f"{key.label}: expected {len(args)} values, got {len(value)}")
        item = Key(key.name, _item(base), None, m, key.section, key.attr)
        return tuple(check_value(v, item) for v in value)
    if base is Path:
        if not isinstance(value, (str, Path)):
            raise UsageError(f"{key.label}: expected a path, got {value!r}")
        return Path(value)
    value = coerce(value, base, key.label, UsageError, widen=True)
    if m.get("choices") and value not in m["choices"]:
        near = difflib.get_close_matches(str(value), list(map(str, m["choices"])), 1, 0.6)
        raise UsageError(f"{key.label}: '{value}' is not one of "
                         f"{', '.join(map(str, m['choices']))}"
                         + (f"; did you mean '{near[0]}'?" if near else ""))
    if base in (int, float):
        _check_range(value, key)
    return value


def _check_range(value: float, key: Key) -> None:
    m = key.meta
    lo, hi = m.get("minimum"), m.get("maximum")
    bad = not math.isfinite(value) or (lo is not None and (value < lo or (m["above"] and
                                                                          value == lo)))
    if bad or (hi is not None and value > hi):
        what = "a whole number" if isinstance(value, int) else "a finite number"
        bounds = " and ".join(_bounds(m))
        raise UsageError(f"{key.label}: expected {what}{' ' + bounds if bounds else ''}, "
                         f"got {value}" + (f" ({m['hint']})" if m.get("hint") else ""))


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line :class:`UsageError`\\ s."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{self.prog}: {message} (--help lists the options)")


class Request:
    """Base of the typed requests (frozen dataclasses of :func:`option` fields).

    ``COMMAND``: how the command is typed (``okdhp bench``); the class docstring is its
    help. Subclasses add cross-field rules in :meth:`check`."""

    COMMAND: ClassVar[str] = "okdhp"

    def __post_init__(self) -> None:
        for key in self.keys():
            if not key.section:
                object.__setattr__(self, key.name, check_value(getattr(self, key.name), key))
        self.check()

    def check(self) -> None:
        """Rules across fields (one-line :class:`UsageError`); none by default."""

    # ------------------------------------------------------------------ the keys
    @classmethod
    def keys(cls) -> list[Key]:
        """Every key, a section's fields in its place."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                out += _section_keys(f.name, tp)
            else:
                out.append(Key(f.name, tp, _default_of(f), dict(f.metadata)))
        return out

    @classmethod
    def build(cls: type[R], **values: Any) -> R:
        """The request from keywords (the same names as ``key=value``); an unknown one is
        refused naming the closest, a section's keys build the section's object."""
        keys = {k.name: k for k in cls.keys()}
        for name in values:
            if name not in keys:
                raise UsageError(f"unknown option '{name}' of {cls.COMMAND}; did you mean "
                                 f"'{closest(name, list(keys))}'? ({cls.COMMAND} --show "
                                 "lists them)")
        given: dict[str, dict[str, Any]] = {"": {}}  # by section path ("" the top)
        for name, value in values.items():
            key = keys[name]
            given.setdefault(key.section, {})[key.attr or name] = \
                check_value(value, key) if key.section else value
        missing = [k.label for k in keys.values() if k.required and k.name not in values]
        if missing:
            raise UsageError(f"{cls.COMMAND} needs {', '.join(missing)}")
        for path in list(given):  # a section given only through its inner sections
            while "." in path:
                path = path.rpartition(".")[0]
                given.setdefault(path, {})
        for path in sorted(given, key=lambda p: -p.count(".")):  # inner sections first
            if not path:
                continue
            parent, _, attr = path.rpartition(".")
            try:
                given.setdefault(parent, {})[attr] = _section_type(cls, path)(**given[path])
            except (OkdhpError, ValueError) as exc:
                raise UsageError(str(exc)) from None
        return cls(**given[""])

    def values(self) -> dict[str, Any]:
        """Every key's value by name (a section's keys from its object)."""
        return {k.name: getattr(_at(self, k.section), k.attr) if k.section
                else getattr(self, k.name) for k in self.keys()}

    def replace(self: R, **changes: Any) -> R:
        """A copy with ``changes`` (keyword names, checked again)."""
        return type(self).build(**{**self._given(), **changes})

    def _given(self) -> dict[str, Any]:
        return {k.name: v for k, v in zip(self.keys(), self.values().values())
                if k.required or v != k.default}

    # --------------------------------------------------------- the command line
    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        doc = inspect.cleandoc(cls.__doc__ or "")
        p = _Parser(prog=cls.COMMAND, description=doc,
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="Every option is also accepted as key=value (min_time=1 is "
                           "--min-time 1); --show lists every key with its default.")
        p.add_argument("--show", action="store_true",
                       help="print every key with its type, default and help, and exit")
        for key in cls.keys():
            _add(p, key)
        return p

    @classmethod
    def parse(cls: type[R], argv: Sequence[str]) -> Optional[R]:
        """The request of a command line (``--flag v`` or ``key=v``); None after ``--show``
        (printed). ``--help`` prints the help and exits, as argparse does."""
        keys = {k.name: k for k in cls.keys()}
        if "--show" in argv[:list(argv).index("--") if "--" in argv else len(argv)]:
            print(cls.show())  # before the required keys are asked for
            return None
        # intermixed: overrides may come before, between and after the flags
        ns = vars(cls.parser().parse_intermixed_args(_key_values(list(argv), keys)))
        ns.pop("show", None)
        values = {}
        for name, raw in ns.items():
            key = keys[name]
            if isinstance(raw, bool) or raw is None:
                values[name] = raw
            elif isinstance(raw, list):  # positional list, a repeated flag, --input-size W H
                values[name] = _from_texts(raw, key)
            else:
                values[name] = _from_text(raw, key.tp, key)
        return cls.build(**values)

    @classmethod
    def show(cls) -> str:
        """Every key, its type and default, its help: what ``--show`` prints."""
        lines = [f"{cls.COMMAND}: keys (key=value or --flag value)"]
        for key in cls.keys():
            lines += textwrap.wrap(key.describe(), 98, initial_indent=f"  {key.name:<24} ",
                                   subsequent_indent=" " * 29)
            lines += textwrap.wrap(key.meta.get("help") or "", 98, initial_indent=" " * 29,
                                   subsequent_indent=" " * 29)
        return "\n".join(lines + cls.show_more())

    @classmethod
    def show_more(cls) -> list[str]:
        """Lines ``--show`` adds after the keys (training: the config's keys)."""
        return []

    def argv(self, spell: Sequence[str] = ()) -> list[str]:
        """The options that give this request: every key away from its default, and the
        keys named in ``spell`` even at their default."""
        flags, tail = [], []
        for key, value in zip(self.keys(), self.values().values()):
            if not (key.required or value != key.default or key.name in spell):
                continue
            if key.meta.get("positional"):
                tail += [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
            elif isinstance(value, bool):
                flags.append(key.flag if value else "--no-" + key.flag[2:])
            elif isinstance(value, tuple) and key.meta.get("repeat"):
                for v in value:
                    flags += [key.flag, _one(v)]
            elif isinstance(value, tuple) and typing.get_args(_base(key.tp))[-1] is not \
                    Ellipsis:
                flags += [key.flag, *map(_one, value)]
            else:
                flags += [key.flag, _text(value, _one)]
        return flags + tail

    def command(self, spell: Sequence[str] = ()) -> str:
        """The command line that makes this request (``okdhp bench --zoo Z ...``)."""
        return " ".join([self.COMMAND] + [shlex.quote(a) for a in self.argv(spell)])


def _from_texts(raw: list[str], key: Key) -> Any:
    """The value of a flag given several strings: a list's items (each may be a comma
    list), or the last of a repeated single value."""
    if not _is_tuple(_base(key.tp)):
        return _from_text(raw[-1], key.tp, key)
    item = _item(_base(key.tp))
    if key.meta.get("positional"):  # config overrides hold commas of their own: [8,16]
        return tuple(_from_text(s, item, key) for s in raw)
    return tuple(_from_text(part.strip(), item, key) for s in raw for part in s.split(",")
                 if part.strip())


def _section_keys(section: str, tp: type) -> list[Key]:
    """The keys of a section at ``section`` (a dotted path of fields from the request);
    a section within it (a backend's INT8 options in the recipe) adds its keys in place."""
    hints = typing.get_type_hints(tp)
    out = []
    for f in dataclasses.fields(tp):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _section_keys(f"{section}.{f.name}", hints[f.name])
            continue
        meta = dict(f.metadata)
        name = (meta.get("flag") or "").lstrip("-").replace("-", "_") or f.name
        out.append(Key(name, hints[f.name], _default_of(f), meta, section, f.name))
    return out


def _section_type(cls: type, path: str) -> type:
    """The dataclass of the section at ``path`` (``recipe.openvino``) of ``cls``."""
    for part in path.split("."):
        cls = typing.get_type_hints(cls)[part]
    return cls


def _at(obj: Any, path: str) -> Any:
    """The section object at ``path`` of ``obj``."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _add(p: argparse.ArgumentParser, key: Key) -> None:
    m, base = key.meta, _base(key.tp)
    help_ = (m.get("help") or "") + f" ({key.describe()})"
    help_ = help_.replace("%", "%%")
    if m.get("positional"):
        nargs = "*" if _is_tuple(base) else (None if key.required else "?")
        p.add_argument(key.name, nargs=nargs, default=argparse.SUPPRESS, help=help_,
                       metavar=m.get("metavar") or key.name.upper())
    elif base is bool:
        p.add_argument(key.flag, dest=key.name, action=argparse.BooleanOptionalAction,
                       default=argparse.SUPPRESS, help=help_)
    elif _is_tuple(base) and typing.get_args(base)[-1] is not Ellipsis:  # --input-size W H
        p.add_argument(key.flag, dest=key.name, default=argparse.SUPPRESS, help=help_,
                       nargs=len(typing.get_args(base)), metavar=m.get("metavar") or None)
    else:
        p.add_argument(key.flag, dest=key.name, default=argparse.SUPPRESS, help=help_,
                       action="append" if m.get("repeat") else "store",
                       metavar=m.get("metavar") or None)


def _key_values(argv: list[str], keys: dict[str, Key]) -> list[str]:
    """``key=value`` tokens as their ``--flag value``; a value given to a flag, a token
    after ``--`` and a ``section.key=value`` (a config override) are left as they are; an
    unknown ``key=`` is refused naming the closest key."""
    out: list[str] = []
    takes_value = False
    free = any(k.meta.get("free") for k in keys.values())
    spaced = {k.flag for k in keys.values() if k.meta.get("spaced")}
    argv = _join_spaced(argv, spaced)
    for i, tok in enumerate(argv):
        if tok == "--":
            return out + argv[i:]
        name, eq, value = tok.partition("=")
        name = name.replace("-", "_")
        if (takes_value or tok.startswith("-") or not eq or "." in name or "/" in name
                or (free and name not in keys)):
            out.append(tok)
            takes_value = tok.startswith("--") and "=" not in tok and not _is_switch(tok, keys)
            continue
        if name not in keys:
            raise UsageError(f"unknown key '{name}'; did you mean "
                             f"'{closest(name, list(keys))}'? (--show lists the keys)")
        key = keys[name]
        if _base(key.tp) is bool:
            out.append(key.flag if _from_text(value, bool, key) else "--no-" + key.flag[2:])
        elif key.meta.get("positional"):
            out.append(value)
        elif _is_tuple(_base(key.tp)) and typing.get_args(_base(key.tp))[-1] is not Ellipsis:
            out += [key.flag, *value.split(",")]
        else:
            out += [key.flag, value]
        takes_value = False
    return out


def _join_spaced(argv: list[str], flags: set[str]) -> list[str]:
    """``--seeds 0 1 qat.epochs=1`` as ``--seeds 0,1 qat.epochs=1``: a spaced flag takes
    the words after it up to the next option, ``key=value`` or ``--``."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] in flags:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("-") and "=" not in argv[j]:
                j += 1
            if j > i + 1:
                out.append(",".join(argv[i + 1:j]))
            i = j
            continue
        i += 1
    return out


def _is_switch(flag: str, keys: dict[str, Key]) -> bool:
    """Whether ``--flag`` takes no value (a bool key, ``--show``, ``--help``)."""
    if flag in ("--show", "--help"):
        return True
    return any(_base(k.tp) is bool and flag in (k.flag, "--no-" + k.flag[2:])
               for k in keys.values())
