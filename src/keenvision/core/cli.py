"""What every ``keen <system>`` command shares: the one-line usage error, strict JSON last lines, the ``--json``
flag, the Lightning trainer options and argument checks. Imports nothing heavy, so building the parser stays fast."""

from __future__ import annotations

import argparse
import json
import math

from .errors import UsageError

__all__ = ["UsageError", "add_json_option", "add_trainer_options", "finite_json", "print_json", "require_positive",
           "trainer_overrides"]


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
