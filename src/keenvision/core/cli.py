"""What every ``keen`` command shares, so a system's ``cli.py`` only parses, calls its API and prints: the option
builders (one flag name per meaning; sizes HEIGHTxWIDTH; old names kept as deprecated aliases), argument checks,
the per-input loop with its skip/fail reports and exit codes, strict JSON last lines, and the ``train`` command
built from a system's declaration (`core.system.Training`). Imports nothing heavy: building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

# --- output -------------------------------------------------------------------------------------------------------

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


# --- option builders ----------------------------------------------------------------------------------------------

class _Option(argparse.Action):
    """An option checked while parsing, so that a handler receives only valid values: ``convert`` (a function that
    raises UsageError) and the bounds ``minimum`` (>=), ``above`` (>), ``below`` (<), ``maximum`` (<=), applied to
    each value. A refused value is kept for `raise_usage_errors`, so it is reported like every other mistake: one
    line naming the option as typed, exit status 2 (argparse's own error prints the usage too). ``old_names`` still
    work and are named by `deprecation_notes` after the command ran (not before: an error stays one line)."""

    def __init__(self, option_strings, dest, old_names=(), flag=False, convert=None, minimum=None, above=None,
                 below=None, maximum=None, **kwargs):
        if flag:
            kwargs.update(nargs=0, const=True, default=kwargs.get("default", False))
        super().__init__(option_strings, dest, **kwargs)
        self.old_names, self.convert = tuple(old_names), convert
        self.bounds = [(bound, test, text) for bound, test, text in (
            (minimum, lambda v, b: v >= b, ">="), (above, lambda v, b: v > b, ">"),
            (below, lambda v, b: v < b, "<"), (maximum, lambda v, b: v <= b, "<=")) if bound is not None]

    def _checked(self, value, option: str):
        value = self.convert(value) if self.convert else value
        for bound, test, text in self.bounds:
            if not test(value, bound):
                raise UsageError(f"{option} must be {text} {bound:g}, got {value:g}")
        return value

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.old_names:
            note = f"{option_string} is deprecated, use {self.option_strings[0]}"
            namespace.__dict__.setdefault("deprecated_options", []).append(note)
        try:
            if self.nargs == 0:
                values = self.const
            elif isinstance(values, list):
                values = [self._checked(value, option_string) for value in values]
            else:
                values = self._checked(values, option_string)
        except UsageError as error:
            namespace.__dict__.setdefault("usage_errors", []).append(str(error))
            return
        setattr(namespace, self.dest, values)


def raise_usage_errors(args: argparse.Namespace) -> None:
    """The first value an `_Option` refused while parsing, as a UsageError."""
    if getattr(args, "usage_errors", None):
        raise UsageError(args.usage_errors[0])


def deprecation_notes(args: argparse.Namespace) -> None:
    """One stderr line per deprecated option name the command was given."""
    for note in getattr(args, "deprecated_options", []):
        print(f"keen: {note}", file=sys.stderr)


def add_option(parser, name: str, *old_names: str, flag: bool = False, **kwargs) -> argparse.Action:
    """``parser.add_argument(name, ...)`` checked while parsing (`_Option`: ``convert``, ``minimum``, ``above``,
    ``below``, ``maximum``); ``old_names`` are deprecated aliases (named as such in the help)."""
    if old_names and kwargs.get("help"):
        kwargs["help"] += f" ({', '.join(old_names)}: deprecated)"
    kwargs.setdefault("dest", name.lstrip("-").replace("-", "_"))
    return parser.add_argument(name, *old_names, action=_Option, old_names=old_names, flag=flag, **kwargs)


def add_json_option(parser, help: str = "print one JSON object as the last line") -> None:
    """``--json``: one JSON object as the last line (eval, bench ...) or one per input (per-input commands)."""
    parser.add_argument("--json", action="store_true", help=help)


def _output_path(text: str) -> Path:
    """An output path whose nearest existing ancestor is a folder (``/dev/full/x.onnx`` is refused at once)."""
    path = Path(text)
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UsageError(f"--out {path}: {ancestor} is not a folder")
            break
    return path


def add_out_option(parser, help: str, required: bool = False, default: str | None = None) -> None:
    """``--out``: a file or folder to write; a path under something that is not a folder is a usage error."""
    add_option(parser, "--out", convert=_output_path, required=required,
               default=None if default is None else Path(default), help=help)


def add_input_command(commands: argparse._SubParsersAction, name: str, help: str, description: str,
                      out: str, out_default: str | None = None, inputs: str = "images, folders of images/videos, or "
                      "videos", metavar: str = "PATH", handler=None) -> argparse.ArgumentParser:
    """A command over input files (``keen detect``, ``segment``, ``hallucinate``): ``PATH ...``, ``--out`` (help
    ``out``) and ``--json`` (one object per input), its handler running `run_per_input`."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument("paths", nargs="+", metavar=metavar, help=inputs)
    add_out_option(parser, out, default=out_default)
    add_json_option(parser, "one JSON object per input (image, video frame) on stdout")
    parser.set_defaults(handler=handler)
    return parser


def add_weights_option(parser, system: str, default: str | None = None, extra: str = "a .safetensors export",
                       **kwargs) -> None:
    """``--weights``: the system's shipped names (from the registry, the default marked) or ``extra``."""
    from .registry import weights_help

    kwargs.setdefault("help", weights_help(system, default, extra))
    parser.add_argument("--weights", default=default, **kwargs)


def add_device_option(parser, default: str | None = None, help: str | None = None) -> None:
    shown = "cuda when available" if default is None else default
    parser.add_argument("--device", default=default, help=help or f"cpu, cuda, cuda:1 ... (default: {shown})")


def add_threads_option(parser, help: str = "CPU threads for torch (default: torch's choice)") -> None:
    add_option(parser, "--threads", "--num-threads", type=int, minimum=1, help=help)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` for a ``--threads`` given, nothing otherwise."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def parse_size(text: str, option: str = "--size", minimum: int = 32) -> tuple[int, int]:
    """``"1024x2048"`` -> (1024, 2048): HEIGHTxWIDTH everywhere, both at least ``minimum``, at most 64e6 pixels."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", str(text))
    if match is None:
        raise UsageError(f"{option} {text!r}: expected HEIGHTxWIDTH, e.g. 1024x2048")
    height, width = int(match[1]), int(match[2])
    if height < minimum or width < minimum or height * width > 64_000_000:
        raise UsageError(f"{option} {text!r}: height and width must be at least {minimum} and the area at most "
                         "64e6 pixels")
    return height, width


def add_size_option(parser, option: str, default: str, help: str, minimum: int = 32, several: bool = False) -> None:
    """A HEIGHTxWIDTH option, parsed to ``(height, width)`` (a bad one is a one-line usage error); ``several``: one
    or more sizes, a list of them (``default`` then names them separated by spaces)."""
    def size(text: str) -> tuple[int, int]:
        return parse_size(text, option, minimum)

    if several:
        add_option(parser, option, convert=size, nargs="+", default=[size(text) for text in default.split()],
                   help=f"{help}, HEIGHTxWIDTH ... (default {default})")
        return
    add_option(parser, option, convert=size, default=size(default), help=f"{help}, HEIGHTxWIDTH (default {default})")


# --- checks -------------------------------------------------------------------------------------------------------

def require_positive(value: int | float | None, option: str) -> None:
    """One-line UsageError unless `value` is None or >= 1."""
    if value is not None and value < 1:
        raise UsageError(f"{option} must be >= 1, got {value}")


def require_file(path: Path | None, option: str) -> None:
    """One-line UsageError unless `path` is None or a regular file (a folder or a device is named as such)."""
    if path is None or path.is_file():
        return
    raise UsageError(f"{option} {path}: " + ("not a regular file" if path.exists() else "no such file"))


def require_folder(path: Path | None, option: str) -> None:
    if path is not None and not path.is_dir():
        raise UsageError(f"{option} {path}: " + ("not a folder" if path.exists() else "no such folder"))


# --- the per-input loop -------------------------------------------------------------------------------------------

@dataclass
class InputResult:
    """What a command made of one input (an image, a video frame, a file): its JSON record and its line for
    people, or ``error`` (one line) when it was skipped; ``note`` is a remark on stderr about a used input."""

    record: dict | None = None
    line: str | None = None
    error: str | None = None
    note: str | None = None


def each_input(paths: list[Path], work: Callable[[Path], InputResult]) -> Iterator[InputResult]:
    """``work(path)`` per input; one that raises a user's error (ValueError, ImageReadError, FileNotFoundError) is
    a skipped `InputResult` (one line) and the rest carry on, except a single input, whose own error is then the
    command's (exit status 2)."""
    for path in paths:
        try:
            yield work(path)
        except (ValueError, FileNotFoundError) as error:
            if len(paths) == 1:
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            yield InputResult({"source": str(path), "error": message}, error=message)


def print_record(record: dict, digits: int) -> None:
    """``key: value`` lines of a flat result (floats to ``digits`` places, a dict on one line, lists left out)."""
    def shown(value) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else f"{value}"

    for key, value in record.items():
        if isinstance(value, dict):
            print(f"{key}: " + ", ".join(f"{k}={shown(v)}" for k, v in value.items()))
        elif not isinstance(value, list):
            print(f"{key}: {shown(value)}")


def run_per_input(command: str, results: Iterable[InputResult], as_json: bool, nothing: str,
                  summary: Callable[[int, int], str | None] | None = None, unit: str | None = "img") -> int:
    """The one loop of every command over inputs: per input a line (a JSON object with ``as_json``), a skipped
    one reported on stderr (and its record under ``as_json``) while the rest carry on; none usable is a one-line
    usage error ('``nothing`` (N failed)'); then ``summary(done, failed)`` on stderr. Exit status 1 when some
    input failed, else 0. ``unit`` names the progress bar's unit (None: no bar)."""
    if unit is not None:
        from .progress import progress_bar

        results = progress_bar(results, desc=command.split()[-1], unit=unit, enabled=not as_json)
    done = failed = 0
    for result in results:
        if result.note:
            print(f"keen {command}: {result.note}", file=sys.stderr)
        if result.error is not None:
            failed += 1
            print(f"keen {command}: skipped {result.error}", file=sys.stderr)
        else:
            done += 1
        if as_json and result.record is not None:
            print_json(result.record)
        elif not as_json and result.error is None and result.line is not None:
            print(result.line, flush=True)
    if done == 0:
        raise UsageError(nothing + (f" ({failed} failed)" if failed else ""))
    message = summary(done, failed) if summary else None
    if message:
        print(f"keen {command}: {message}", file=sys.stderr)
    return 1 if failed else 0


# --- training -----------------------------------------------------------------------------------------------------

def add_trainer_options(parser: argparse.ArgumentParser, example: str, steps: bool = True,
                        config_required: bool = True) -> None:
    """The options every ``keen <system> train`` takes (`trainer_overrides` reads them back): the recipe, where the
    run goes, seed and precision, threads and Lightning's devices; with ``steps`` also resuming and a step limit
    (engagement fits seconds-long models by epochs: no steps, no resume, one process)."""
    parser.add_argument("--config", type=Path, required=config_required, help=f"YAML recipe, e.g. {example}")
    parser.add_argument("--run-dir", type=Path, help="where checkpoints, logs and the exported weights go")
    parser.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    add_option(parser, "--threads", "--num-threads", type=int, dest="num_threads", minimum=1,
               help="CPU threads (one per job when two jobs share a CPU)")
    parser.add_argument("--accelerator", help="Lightning accelerator: auto, cpu, gpu, ... (default: the recipe's)")
    parser.add_argument("--precision", help="Lightning precision: 32-true, 16-mixed, bf16-mixed, auto ...")
    if steps:
        parser.add_argument("--resume", action="store_true",
                            help="continue from the run's last checkpoint (in the run folder or under KEEN_RUNS)")
        add_option(parser, "--max-steps", type=int, minimum=1, help="stop after this many optimiser steps")
        add_option(parser, "--devices", type=int, minimum=1, help="devices per node; more than 1 trains with DDP")
        add_option(parser, "--num-nodes", type=int, minimum=1, help="machines for multi-node DDP (one process per "
                                                                    "node)")


def trainer_overrides(args: argparse.Namespace) -> dict:
    """The recipe overrides of `add_trainer_options` that were given (counts were checked while parsing; here the
    recipe must be a file)."""
    raise_usage_errors(args)
    require_file(args.config, "--config")
    options = ("run_dir", "seed", "num_threads", "accelerator", "precision", "resume", "max_steps", "devices",
               "num_nodes")
    values = {option: getattr(args, option, None) for option in options}
    values["resume"] = values["resume"] or None  # store_true: False means "not given"
    values["run_dir"] = str(values["run_dir"]) if values["run_dir"] else None
    return {key: value for key, value in values.items() if value is not None}


def _run_training(args: argparse.Namespace, train, handle=None) -> int:
    """Train from ``args`` (the options of `add_trainer_options` and a system's own, read by ``handle``)."""
    extra = handle(args) if handle else {}
    if extra is True:  # the system's own option was served instead of training
        return 0
    overrides = trainer_overrides(args)
    written = train(args.config, overrides | (extra or {}))
    from lightning.fabric.utilities.rank_zero import rank_zero_only  # the rank `fit` set (0 without DDP)

    if rank_zero_only.rank == 0:  # under DDP every rank returns; one line, from the rank that wrote the export
        print(f"trained weights: {written}")
    return 0


def add_system_commands(commands: argparse._SubParsersAction, system) -> None:
    """``keen <system> TOOL ...`` and the system's top-level verbs, from its declaration: its ``commands`` adds
    them, and ``train`` comes from its ``training``."""
    from .system import reference

    parser = commands.add_parser(system.name, help=system.summary, description=system.description)
    tools = parser.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True
    system.resolve("commands")(commands, tools)
    training = system.training
    train = tools.add_parser("train", help=f"train from a YAML recipe ({training.example})")
    add_trainer_options(train, training.example, steps=training.steps)
    add_options, handle = system.train_options()
    if add_options:
        add_options(train)
    train.set_defaults(handler=lambda args: _run_training(args, reference(training.run), handle))


def train_module_main(description: str, example: str, train, export_checkpoint, add_options=None,
                      handle=None, steps: bool = True, argv: list[str] | None = None) -> None:
    """``python -m keenvision.<system>.train``: the options of ``keen <system> train`` and, with an
    ``export_checkpoint``, ``--export CHECKPOINT OUT`` (export a checkpoint's model, e.g. of a run still going).
    ``add_options(parser)`` adds a system's own options; ``handle(args)`` may serve them and return True, or return
    overrides (a dict) for the recipe. Errors are one line, exit status 2, as under ``keen``."""
    parser = argparse.ArgumentParser(description=description)
    add_trainer_options(parser, example, steps=steps, config_required=False)
    if export_checkpoint is not None:
        parser.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "OUT"), help="only export a checkpoint's "
                                                                                     "model")
    if add_options:
        add_options(parser)
    args = parser.parse_args(argv)
    if getattr(args, "export", None):
        exported = export_checkpoint(*args.export)
        for path in exported.values() if isinstance(exported, dict) else [exported]:
            print(path)
        return
    if args.config is None and not (handle and handle(args) is True):
        parser.error("--config is required" + (" (or --export CHECKPOINT OUT)" if export_checkpoint else ""))
    if args.config is not None:
        _run_training(args, train, handle)


def train_main(system_name: str, argv: list[str] | None = None) -> None:
    """``python -m keenvision.<system>.train``, from the system's declaration (the same options as ``keen <system>
    train``, plus ``--export``)."""
    from .system import get_system, reference

    system = get_system(system_name)
    training = system.training
    train_module_main(system.summary, training.example, reference(training.run),
                      reference(training.export) if training.export else None, *system.train_options(),
                      training.steps, argv)
