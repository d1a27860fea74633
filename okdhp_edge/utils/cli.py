"""CLI plumbing shared by the ``python -m okdhp_edge.*`` entry points."""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from okdhp_edge.errors import OkdhpError, UsageError

# what `pip install okdhp_edge[train]` adds to the torch-free runtime (pyproject.toml)
TRAIN_EXTRA = ("torch", "onnx", "safetensors", "psutil", "cpuinfo", "nncf")


__all__ = ["Command", "UsageError", "commands_markdown", "console_entry", "dispatch",
           "one_line", "request_main", "run_cli", "setup_logging", "table_help"]


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr with a compact format."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line. An error raised in a DataLoader worker comes back
    as the same type with the worker's whole traceback in its text ("Caught DataError in
    DataLoader worker process 0 ... Original Traceback ..."): its last line is the message."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def console_entry(main: Callable[[Optional[list[str]]], int]) -> Callable[[], None]:
    """The console-script entry point of a CLI module (``okdhp-train`` ...): ``main`` run
    as ``python -m`` runs it, with one-line errors and the same exit codes."""

    def entry() -> None:
        run_cli(main)

    return entry


def run_cli(main: Callable[[Optional[list[str]]], int], argv: Optional[list[str]] = None) -> None:
    """Run ``main`` and turn a user's error (:class:`okdhp_edge.errors.OkdhpError`) into one
    line and its exit status."""
    try:
        code = main(argv)
    except OkdhpError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        code = exc.exit_code
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        print(f"error: this command needs okdhp_edge's training extra ({exc}): "
              "pip install 'okdhp_edge[train]'", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def request_main(request: Any, run: Callable[[Any], int]
                 ) -> Callable[[Optional[list[str]]], int]:
    """The ``main(argv)`` of a command whose options are ``request`` (a
    :class:`okdhp_edge.grammar.Request` class): parse (``--show`` prints the keys and
    stops), set up logging, ``run(request)``; its return is the exit status."""

    def main(argv: Optional[list[str]] = None) -> int:
        req = request.parse(list(sys.argv[1:] if argv is None else argv))
        if req is None:
            return 0
        setup_logging()
        return run(req)

    return main


@dataclass(frozen=True)
class Command:
    """One entry of a command table: ``target`` runs it (``module`` whose ``main(argv)``
    does, or ``module:function``), ``summary`` is its line in the table's help."""

    target: str
    summary: str

    def main(self) -> Callable[[list[str]], int]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr or "main")


def table_help(prog: str, intro: str, commands: dict[str, Command],
               default: Optional[str] = None) -> str:
    """The help of a command table, generated from it: what ``prog --help`` prints."""
    import inspect
    import textwrap

    width = max(map(len, commands)) + 4
    lines = [f"usage: {prog} <command> [options]", "", inspect.cleandoc(intro), "",
             "commands:"]
    for name, c in commands.items():
        text = c.summary + (" (the default)" if name == default else "")
        lines += textwrap.wrap(text, 96, initial_indent=f"  {name:<{width - 2}}",
                               subsequent_indent=" " * width)
    lines += [""] + textwrap.wrap(
        f"`{prog} <command> --help` gives a command's options, `--show` every key with its "
        "default; options are --flag value or key=value alike.", 96)
    return "\n".join(lines)


def commands_markdown(prog: str, commands: dict[str, Command]) -> str:
    """A command table as Markdown (the README's: a test keeps the two equal)."""
    return "\n".join(["| command | what it does |", "|---|---|"] + [
        f"| `{prog} {name}` | {c.summary} |" for name, c in commands.items()])


def dispatch(argv: list[str], commands: dict[str, Command], prog: str, intro: str,
             default: Optional[str] = None) -> int:
    """The one sub-command mechanism of every command table (``okdhp``, ``okdhp bench``,
    ``okdhp zoo``, ``okdhp experiments``): ``<prog> <command> [options]``. ``default``: the
    command an option-first argv runs (``okdhp bench --zoo Z`` is ``okdhp bench run --zoo
    Z``). ``-h``/``--help`` or nothing prints the table's help; an unknown command is a
    :class:`UsageError` naming the command it is close to (a misspelling), or every command
    where none is close (``okdhp nope`` is not a misspelt ``models``)."""
    import difflib

    if not argv or argv[0] in ("-h", "--help"):
        print(table_help(prog, intro, commands, default))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command.startswith("-") and default is not None:
        command, rest = default, argv
    if command not in commands:
        near = difflib.get_close_matches(command, list(commands), n=1, cutoff=0.6)
        hint = (f"did you mean '{near[0]}'?" if near
                else f"the commands are: {', '.join(commands)}")
        raise UsageError(f"unknown command '{command}' of {prog}; {hint} ({prog} --help says "
                         "what each does)")
    return commands[command].main()(rest)
