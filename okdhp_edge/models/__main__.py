"""``python -m okdhp_edge.models NAME [key=value ...] [--json] [--input-size W H]``:
print parameters and MACs of a registered model."""

from __future__ import annotations

import argparse
import json
from typing import Optional

import yaml

from okdhp_edge.utils.cli import UsageError, console_entry, count, run_cli


def main(argv: Optional[list[str]] = None) -> int:
    # torch inside: a torch-free install gets the one line that names the extra
    from okdhp_edge.models.info import count_macs, count_params
    from okdhp_edge.models.registry import create_model, list_models

    p = argparse.ArgumentParser(prog="python -m okdhp_edge.models", description=__doc__)
    p.add_argument("name", help=f"one of: {', '.join(list_models())}")
    p.add_argument("kwargs", nargs="*", help="constructor arguments, e.g. num_joints=16")
    p.add_argument("--input-size", type=count(16), nargs=2, default=(256, 256), metavar=("W", "H"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
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


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
