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
