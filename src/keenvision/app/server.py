"""``keen app``: a local Gradio page with one tab per declared system (its `core.system.AppView`: the view lives in
``<system>/app.py``) on the shipped weights, offline.

Each tab's button is also an API endpoint (``api_name``: detect, hallucinate, segment, engagement, diffrate), so
``gradio_client.Client("http://127.0.0.1:7860/").predict(..., api_name="/detect")`` gives what the page shows.
Uploads are taken as files of any type (not decoded or type-checked by Gradio), so a corrupt, empty or wrong one
reaches our reader and comes back as one line in the page (`core.uploads.AppInputError` -> ``gr.Error``) instead of a
preprocessing traceback in the server's log.
"""

from __future__ import annotations

import functools
import os
import socket

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network at run time (set before Gradio loads)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
TITLE = "keenvision"


def _shown(view):
    """Turn the user's mistakes into Gradio's in-page error (one line) and anything else into one line too."""
    import gradio as gr

    from ..core.errors import ImageReadError, WeightsError
    from ..core.uploads import AppInputError

    @functools.wraps(view)
    def wrapped(*args):
        try:
            return view(*args)
        except (AppInputError, ImageReadError, WeightsError) as error:
            raise gr.Error(str(error).strip().splitlines()[0], print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - the page shows one line, never a traceback
            raise gr.Error(f"unexpected error: {type(error).__name__}: {str(error).strip()[:200]}",
                           print_exception=False) from None

    return wrapped


def build_app():
    """The `gradio.Blocks` of ``keen app`` (not launched)."""
    import gradio as gr

    from ..core.system import reference, systems

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown("# keenvision\nFive published vision methods on their shipped weights, on this machine. Each "
                    "button is also an API endpoint (see *Use via API* below).")
        for system in systems():
            if system.app is not None:
                with gr.Tab(system.app.tab):
                    reference(system.app.build)(gr, _shown)
    return app


def check_port(host: str, port: int) -> None:
    """UsageError naming the port unless it can be bound now (Gradio's own message is a search over a range)."""
    from ..core.errors import UsageError

    if not 0 < port < 65536:
        raise UsageError(f"port {port}: give 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as the server will: a port in TIME_WAIT (an app just stopped) is free, one with a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            reason = "is in use" if error.errno in (98, 48, 10048) else f"cannot be opened ({error.strerror})"
            raise UsageError(f"port {port} on {host} {reason}; choose another with --port") from None


def launch(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, block: bool = True):
    """Start the app on ``host:port``; returns the running `gradio.Blocks` (with ``block=False``, at once)."""
    import gradio as gr

    from ..core.uploads import MAX_UPLOAD

    check_port(host, port)
    app = build_app()
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts
    app.queue(default_concurrency_limit=1, max_size=16).launch(
        server_name=host, server_port=port, prevent_thread_lock=not block, quiet=True, show_error=False,
        max_file_size=MAX_UPLOAD, ssr_mode=False, theme=theme, footer_links=["api"])
    return app
