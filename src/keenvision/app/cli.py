"""``keen app [--host H] [--port P]``."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    from .server import DEFAULT_HOST, DEFAULT_PORT

    app = commands.add_parser("app", help="a local web app with a view per system (needs the 'app' extra)")
    app.add_argument("--host", default=DEFAULT_HOST, help=f"address to serve on (default {DEFAULT_HOST}, this machine)")
    app.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    app.set_defaults(handler=run_app)


def run_app(args: argparse.Namespace) -> int:
    from ..core.errors import UsageError
    from .server import check_port, launch

    check_port(args.host, args.port)  # before importing Gradio (seconds): a busy port is answered at once
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("keen app needs Gradio: pip install 'keenvision[app]'") from None
    app = launch(args.host, args.port, block=False)
    print(f"keen app: serving on http://{args.host}:{args.port}/ (Ctrl+C stops it)", flush=True)
    try:
        app.block_thread()
    finally:
        app.close()
    return 0
