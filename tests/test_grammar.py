"""The typed requests' grammar: one definition gives the parser (--flag and key=value), the
Python keywords, the checks and the reproducing command."""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import pytest

from okdhp_edge.errors import UsageError
from okdhp_edge.grammar import Request, option


@dataclass(frozen=True)
class Section:
    size: int = option(3, "a section's key", minimum=1, flag="--sec-size")
    mode: str = option("a", "its mode", choices=("a", "b"))


@dataclass(frozen=True)
class Demo(Request):
    """A demo command."""

    COMMAND: ClassVar[str] = "okdhp demo"

    src: Path = option(help="where from")
    rate: float = option(1.0, "a rate", minimum=0, above=True)
    count: int = option(2, "how many", minimum=0, maximum=10)
    names: tuple[str, ...] = option(("x",), "names", choices=("x", "y", "z"))
    label: Optional[str] = option(None, "a label")
    fast: bool = option(False, "go fast")
    slow: bool = option(True, "go slow")
    tags: tuple[str, ...] = option((), "repeatable", repeat=True)
    sec: Section = option(factory=Section)
    rest: tuple[str, ...] = option((), "overrides", positional=True)

    def check(self) -> None:
        if self.fast and not self.slow and self.count == 0:
            raise UsageError("fast, not slow and no count: nothing to do")


def test_flags_and_key_values_give_the_same_request():
    a = Demo.parse(["--src", "d", "--rate", "2", "--names", "y,z", "--fast", "--no-slow",
                    "--tags", "t1", "--tags", "t2", "--sec-size", "5", "a.b=1"])
    b = Demo.parse(["src=d", "rate=2", "names=y,z", "fast=true", "slow=off", "tags=t1",
                    "tags=t2", "sec_size=5", "a.b=1"])
    c = Demo.build(src="d", rate=2, names=["y", "z"], fast=True, slow=False,
                   tags=("t1", "t2"), sec_size=5, rest=("a.b=1",))
    assert a == b == c
    assert a.src == Path("d") and a.rate == 2.0 and a.sec.size == 5 and a.rest == ("a.b=1",)


def test_the_reproducing_command_parses_back_to_the_request():
    req = Demo.build(src="my dir", rate=0.5, label="x y", slow=False, tags=("a",),
                     mode="b", rest=("k.v=1",))
    cmd = req.command()
    assert cmd.startswith("okdhp demo ") and "--rate 0.5" in cmd and "--no-slow" in cmd
    assert "--count" not in cmd  # defaults are left out ...
    assert "--count 2" in req.command(spell=("count",))  # ... unless asked for
    import shlex
    assert Demo.parse(shlex.split(cmd)[2:]) == req


@pytest.mark.parametrize("argv, words", [
    (["--src", "d", "--rate", "0"], "rate (--rate): expected a finite number > 0, got 0.0"),
    (["--src", "d", "--rate", "nan"], "rate (--rate): expected a finite number > 0"),
    (["--src", "d", "count=11"], "count (--count): expected a whole number >= 0 and <= 10"),
    (["--src", "d", "count=2.5"], "expected a whole number, got '2.5'"),
    (["--src", "d", "names=y,w"], "'w' is not one of x, y, z"),
    (["--src", "d", "mode=bb"], "'bb' is not one of a, b; did you mean 'b'"),
    (["--src", "d", "--sec-size", "0"], "sec_size (--sec-size): expected a whole number >= 1"),
    (["--src", "d", "fast=maybe"], "expected true or false"),
    (["--src", "d", "rte=1"], "unknown key 'rte'; did you mean 'rate'"),
    (["--src", "d", "--rte", "1"], "unrecognized arguments"),
    ([], "okdhp demo needs src (--src)"),
    (["--src", "d", "--fast", "--no-slow", "count=0"], "nothing to do"),
])
def test_bad_command_lines_are_one_line_usage_errors(argv, words):
    with pytest.raises(UsageError) as err:
        Demo.parse(argv)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_python_keywords_meet_the_same_checks():
    with pytest.raises(UsageError, match="did you mean 'rate'"):
        Demo.build(src="d", rat=1)
    with pytest.raises(UsageError, match="rate .--rate.: expected a finite number > 0"):
        Demo.build(src="d", rate=-1)
    with pytest.raises(UsageError, match="count .--count.: expected int"):
        Demo.build(src="d", count="3")
    with pytest.raises(UsageError, match="expected a whole number >= 1"):
        Demo.build(src="d", sec_size=0)
    with pytest.raises(UsageError, match="count .--count.: expected a whole number >= 0"):
        Demo(src=Path("d"), count=-1)  # the dataclass itself checks


def test_a_value_given_to_a_flag_is_not_read_as_a_key():
    """``--label k=v``: the flag's value, not the key ``k``."""
    assert Demo.parse(["--src", "d", "--label", "rate=3"]).label == "rate=3"


def test_show_lists_every_key_with_its_default(capsys):
    assert Demo.parse(["--show"]) is None
    out = capsys.readouterr().out
    for key in ("src", "rate", "count", "names", "label", "fast", "slow", "tags", "sec_size",
                "mode", "rest"):
        assert f"  {key} " in out
    assert "float, default 1.0; > 0" in out and "one or more of x, y, z" in out


def test_help_names_the_okdhp_command(capsys):
    with pytest.raises(SystemExit) as done:
        Demo.parse(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: okdhp demo") and "key=value" in out


def test_replace_checks_again():
    req = Demo.build(src="d")
    assert req.replace(count=5).count == 5 and req.count == 2
    with pytest.raises(UsageError):
        req.replace(count=50)


@dataclass(frozen=True)
class Spaced(Request):
    """A request with a spaced list and overrides."""

    COMMAND: ClassVar[str] = "okdhp spaced"

    seeds: tuple[int, ...] = option((0,), "seeds", minimum=0, spaced=True)
    rest: tuple[str, ...] = option((), "overrides", positional=True)


def test_a_spaced_list_stops_at_the_next_option_or_override():
    """``--seeds 0 1 qat.epochs=1``: the override is not read as a seed."""
    req = Spaced.parse(["--seeds", "0", "1", "qat.epochs=1"])
    assert req.seeds == (0, 1) and req.rest == ("qat.epochs=1",)
    assert Spaced.parse(["--seeds", "0,1"]) == Spaced.parse(["seeds=0,1"]) == \
        Spaced.build(seeds=[0, 1])
    assert Spaced.parse(req.argv()) == req


def test_overrides_may_follow_a_flag():
    """``train --config C train.epochs=1 --no-zoo train.val_max_images=10``: every override
    is read, wherever it stands."""
    req = Demo.parse(["--src", "d", "a.b=1", "--fast", "c.d=2", "--no-slow", "e.f=3"])
    assert req.rest == ("a.b=1", "c.d=2", "e.f=3") and req.fast and not req.slow
