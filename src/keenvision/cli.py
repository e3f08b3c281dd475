"""``keen``: one command line for every system. Each system adds its subcommands; this file only dispatches and
turns errors into one-line messages with a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys

from .core.cli import UsageError, print_json  # noqa: F401 - print_json: the name system CLIs used to import here
from .core.errors import ImageReadError, WeightsError


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .app.cli import add_commands as add_app_commands
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
    add_app_commands(commands)
    models = commands.add_parser("models", help="the shipped weights: system, file, licence, recipe, measured metric")
    models.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    models.set_defaults(handler=run_models)
    return parser


def run_models(args: argparse.Namespace) -> int:
    from .core.bench import format_table
    from .core.registry import shipped_models

    entries = shipped_models()
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
