"""``keen``: one command line for every system. The declared systems (`core.system.systems`) add their commands;
this file only loops over them, adds the commands that span systems, dispatches, and turns errors into one-line
messages with a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys

from .core.cli import (  # noqa: F401 - names system CLIs imported from here
    UsageError,
    add_json_option,
    add_system_commands,
    deprecation_notes,
    print_json,
    raise_usage_errors,
)
from .core.errors import ImageReadError, WeightsError


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .app.cli import add_commands as add_app_commands
    from .batch.cli import add_commands as add_batch_commands
    from .core.system import systems
    from .demo import add_demo_command

    parser = argparse.ArgumentParser(prog="keen", description="keenvision: published vision methods, fast and tested.")
    parser.add_argument("--version", action="version", version=f"keenvision {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for system in systems():
        add_system_commands(commands, system)
    add_demo_command(commands)
    add_app_commands(commands)
    add_batch_commands(commands)
    models = commands.add_parser("models", help="the shipped weights: system, file, licence, recipe, measured metric")
    add_json_option(models)
    models.set_defaults(handler=run_models)
    return parser


def run_models(args: argparse.Namespace) -> int:
    from .core.bench import format_table
    from .core.registry import shipped_models
    from .core.system import systems

    entries = [entry for system in systems() for entry in shipped_models(system.name)]
    rows = []
    for entry in entries:
        value = entry.metric["value"]
        shown = "-" if value is None else f"{value:g}"
        rows.append([entry.name, entry.system, entry.file, f"{entry.metric['name']} {shown}", entry.metric["split"],
                     entry.recipe])
    print(format_table(["name", "system", "file", "metric", "measured on", "recipe"], rows))
    if args.json:
        print_json({"models": [entry.as_dict() for entry in entries]})
    return 0


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        raise_usage_errors(args)
        status = int(args.handler(args) or 0)
        deprecation_notes(args)
        return status
    except (UsageError, ImageReadError, WeightsError, OSError, ValueError) as error:  # the user can fix these
        print(f"keen {args.command}: error: {_one_line(error)}", file=sys.stderr)
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
