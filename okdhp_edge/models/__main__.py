"""``okdhp models NAME [key=value ...] [--json] [--input-size W H]``: parameters and MACs
of a registered model (:class:`ModelsRequest`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import yaml

from okdhp_edge.grammar import Request, option
from okdhp_edge.utils.cli import UsageError, console_entry, request_main, run_cli


@dataclass(frozen=True)
class ModelsRequest(Request):
    """Prints the parameters and MACs of a registered model (``okdhp models okdhp
    branches=[2,3,4]``); the names are the family table's (``okdhp models list``)."""

    COMMAND: ClassVar[str] = "okdhp models"

    name: str = option(help="a registered model name ('list': every name)", positional=True)
    kwargs: tuple[str, ...] = option((), "constructor arguments, e.g. num_joints=16",
                                     positional=True, free=True, metavar="KEY=VALUE")
    input_size: tuple[int, int] = option((256, 256), "input size", minimum=16, maximum=4096,
                                         metavar=("W", "H"))
    json: bool = option(False, "print JSON")


def run(args: ModelsRequest) -> int:
    # torch inside: a torch-free install gets the one line that names the extra
    from okdhp_edge.models.info import count_macs, count_params
    from okdhp_edge.models.registry import create_model, list_models

    if args.name == "list":
        print("\n".join(list_models()))
        return 0
    kwargs = {}
    for kv in args.kwargs:
        if "=" not in kv:
            raise UsageError(f"'{kv}' is not key=value")
        k, v = kv.split("=", 1)
        kwargs[k] = yaml.safe_load(v)
    try:
        model = create_model(args.name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    info = {"name": args.name, "kwargs": kwargs, "input_size": list(args.input_size),
            "params": count_params(model), "macs": count_macs(model, tuple(args.input_size))}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{args.name} {kwargs or ''} @ {args.input_size[0]}x{args.input_size[1]}: "
              f"{info['params'] / 1e6:.2f} M params, {info['macs'] / 1e9:.2f} GMACs")
    return 0


main = request_main(ModelsRequest, run)
cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
