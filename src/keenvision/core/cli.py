"""What every ``keen <system>`` command shares: the one-line usage error, strict JSON last lines, the ``--json``
flag, the Lightning trainer options and argument checks. Imports nothing heavy, so building the parser stays fast."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

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


def add_trainer_options(parser: argparse.ArgumentParser, example: str, steps: bool = True,
                        config_required: bool = True) -> None:
    """The options every ``keen <system> train`` takes (`trainer_overrides` reads them back): the recipe, where the
    run goes, seed and precision, threads and Lightning's devices; with ``steps`` also resuming and a step limit
    (engagement fits seconds-long models by epochs: no steps, no resume, one process)."""
    parser.add_argument("--config", type=Path, required=config_required, help=f"YAML recipe, e.g. {example}")
    parser.add_argument("--run-dir", type=Path, help="where checkpoints, logs and the exported weights go")
    parser.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    parser.add_argument("--num-threads", type=int, help="CPU threads (one per job when two jobs share a CPU)")
    parser.add_argument("--accelerator", help="Lightning accelerator: auto, cpu, gpu, ... (default: the recipe's)")
    parser.add_argument("--precision", help="Lightning precision: 32-true, 16-mixed, bf16-mixed, auto ...")
    if steps:
        parser.add_argument("--resume", action="store_true",
                            help="continue from the run's last checkpoint (in the run folder or under KEEN_RUNS)")
        parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
        parser.add_argument("--devices", type=int, help="devices per node; more than 1 trains with DDP")
        parser.add_argument("--num-nodes", type=int, help="machines for multi-node DDP (one process per node)")


def trainer_overrides(args: argparse.Namespace) -> dict:
    """The recipe overrides of `add_trainer_options` that were given (checked: counts >= 1, the recipe exists)."""
    for option in ("num_threads", "devices", "num_nodes", "max_steps"):
        require_positive(getattr(args, option, None), "--" + option.replace("_", "-"))
    if not args.config.is_file():
        raise UsageError(f"--config {args.config}: no such file")
    options = ("run_dir", "seed", "num_threads", "accelerator", "precision", "resume", "max_steps", "devices",
               "num_nodes")
    values = {option: getattr(args, option, None) for option in options}
    values["resume"] = values["resume"] or None  # store_true: False means "not given"
    values["run_dir"] = str(values["run_dir"]) if values["run_dir"] else None
    return {key: value for key, value in values.items() if value is not None}


def require_positive(value: int | None, option: str) -> None:
    """One-line UsageError unless `value` is None or >= 1."""
    if value is not None and value < 1:
        raise UsageError(f"{option} must be >= 1, got {value}")


def train_module_main(description: str, example: str, train, export_checkpoint, add_options=None,
                      handle=None) -> None:
    """``python -m keenvision.<system>.train``: the options of ``keen <system> train`` and ``--export CHECKPOINT
    OUT`` (export a checkpoint's model, e.g. of a run still going). ``add_options(parser)`` adds a system's own
    options; ``handle(args)`` may serve them and return True, or return overrides (a dict) for the recipe."""
    parser = argparse.ArgumentParser(description=description)
    add_trainer_options(parser, example, config_required=False)
    parser.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "OUT"), help="only export a checkpoint's model")
    if add_options:
        add_options(parser)
    args = parser.parse_args()
    extra = handle(args) if handle else {}
    if extra is True:
        return
    if args.export:
        exported = export_checkpoint(*args.export)
        for path in exported.values() if isinstance(exported, dict) else [exported]:
            print(path)
        return
    if args.config is None:
        parser.error("--config is required (or --export CHECKPOINT OUT)")
    print(train(args.config, trainer_overrides(args) | (extra or {})))
