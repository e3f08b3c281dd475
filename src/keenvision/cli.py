"""``keen``: one command line for every system. Each system adds its subcommands; this file only dispatches and
turns errors into one-line messages with a non-zero exit."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from .core.io import ImageReadError
from .core.weights import WeightsError


class UsageError(Exception):
    """Bad arguments or inputs the user can fix; printed as one line, exit status 2."""


def finite_json(value):
    """`value` with every NaN or infinite float replaced by None: strict JSON has no NaN / Infinity, so a parser
    of our last line (jq, JSON.parse) would reject it (an mIoU over a split with no labelled pixels is NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def print_json(record: dict) -> None:
    print(json.dumps(finite_json(record), separators=(",", ":"), allow_nan=False), flush=True)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """The ``--json`` flag every eval/bench command takes: one JSON object as the last line of stdout."""
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def add_trainer_options(parser: argparse.ArgumentParser) -> None:
    """The Lightning options every ``keen <system> train`` takes; `trainer_overrides` reads them back."""
    parser.add_argument("--num-threads", type=int, help="CPU threads (one per job when two jobs share a CPU)")
    parser.add_argument("--accelerator", help="Lightning accelerator: auto (default), cpu, gpu, ...")
    parser.add_argument("--devices", type=int, help="devices per node; more than 1 trains with DDP")
    parser.add_argument("--num-nodes", type=int, help="machines for multi-node DDP (launch one process per node)")


def trainer_overrides(args: argparse.Namespace) -> dict:
    """The recipe overrides of `add_trainer_options` that were given (checked: counts >= 1)."""
    for option in ("num_threads", "devices", "num_nodes"):
        require_positive(getattr(args, option), "--" + option.replace("_", "-"))
    values = {option: getattr(args, option) for option in ("num_threads", "accelerator", "devices", "num_nodes")}
    return {key: value for key, value in values.items() if value is not None}


def require_positive(value: int | None, option: str) -> None:
    """One-line UsageError unless `value` is None or >= 1."""
    if value is not None and value < 1:
        raise UsageError(f"{option} must be >= 1, got {value}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo import add_demo_command
    from .diffrate.cli import add_commands as add_diffrate_commands
    from .engagement.cli import add_commands as add_engagement_commands
    from .farsee.cli import add_commands as add_farsee_commands
    from .mtcnn.cli import add_commands as add_mtcnn_commands
    from .sicnn.cli import add_commands as add_sicnn_commands

    parser = argparse.ArgumentParser(prog="keen", description="keenvision: published vision methods, fast and tested.")
    parser.add_argument("--version", action="version", version=f"keenvision {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    add_mtcnn_commands(commands)
    add_sicnn_commands(commands)
    add_diffrate_commands(commands)
    add_farsee_commands(commands)
    add_engagement_commands(commands)
    add_demo_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (UsageError, ImageReadError, WeightsError, FileNotFoundError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"keen {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keen: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - last resort: one line, not a traceback (KEEN_DEBUG=1 shows it)
        if os.environ.get("KEEN_DEBUG"):
            raise
        print(f"keen {args.command}: unexpected error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
