"""``keen app``: a local Gradio page with one tab per system on the shipped weights, offline.

Each tab's button is also an API endpoint (``api_name``: detect, hallucinate, segment, engagement, diffrate), so
``gradio_client.Client("http://127.0.0.1:7860/").predict(..., api_name="/detect")`` gives what the page shows.
Uploads are taken as files of any type (not decoded or type-checked by Gradio), so a corrupt, empty or wrong one
reaches our reader and comes back as one line in the page (`views.AppInputError` -> ``gr.Error``) instead of a
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
    from .views import AppInputError

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

    from . import views

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown("# keenvision\nFive published vision methods on their shipped weights, on this machine. Each "
                    "button is also an API endpoint (see *Use via API* below).")
        with gr.Tab("MTCNN: faces"):
            gr.Markdown("Face boxes, scores and 5 landmarks (Zhang et al. 2016, the authors' weights), and each "
                        "face aligned to 112x112.")
            with gr.Row():
                with gr.Column():
                    photo = gr.File(label="image", type="filepath")
                    webcam = gr.Image(label="or a webcam frame", sources=["webcam"], type="numpy")
                    run = gr.Button("Detect faces", variant="primary")
                with gr.Column():
                    annotated = gr.Image(label="detections", type="numpy", format="png")
                    crops = gr.Gallery(label="aligned faces", columns=6, height="auto", format="png")
            record = gr.JSON(label="JSON")
            run.click(_shown(views.detect), [photo, webcam], [annotated, crops, record], api_name="detect")
        with gr.Tab("SICNN: face hallucination"):
            gr.Markdown("Each face aligned to 96x112, reduced to 12x14 and brought back x8: low resolution | "
                        "bicubic | SICNN | the aligned photo.")
            with gr.Row():
                with gr.Column():
                    face_photo = gr.File(label="photo with faces", type="filepath")
                    run = gr.Button("Hallucinate", variant="primary")
                strips = gr.Gallery(label="LR | bicubic | SICNN | photo", columns=1, height="auto", format="png")
            record = gr.JSON(label="JSON")
            run.click(_shown(views.hallucinate), [face_photo], [strips, record], api_name="hallucinate")
        with gr.Tab("FarSee-Net: street segmentation"):
            gr.Markdown("CamVid's 11 classes on an image or one frame of a video (FarSee-Net, ICRA 2020).")
            with gr.Row():
                with gr.Column():
                    street = gr.File(label="image or video", type="filepath")
                    second = gr.Number(label="video: frame at second", value=0, minimum=0)
                    run = gr.Button("Segment", variant="primary")
                with gr.Column():
                    blended = gr.Image(label="overlay", type="numpy", format="png")
                    speed = gr.Markdown()
            shares = gr.Label(label="class shares", num_top_classes=11)
            record = gr.JSON(label="JSON")
            run.click(_shown(views.segment), [street, second], [blended, shares, speed, record], api_name="segment")
        with gr.Tab("Engagement"):
            gr.Markdown("Engagement intensity of a learner's video, per segment and for the video (EmotiW levels "
                        "0, 0.33, 0.66, 1), from our face pipeline's gaze and head pose.")
            with gr.Row():
                with gr.Column():
                    clip = gr.File(label="video (or an OpenFace CSV)", type="filepath")
                    run = gr.Button("Score engagement", variant="primary")
                with gr.Column():
                    timeline = gr.Image(label="segment timeline", type="numpy", format="png")
                    score = gr.Markdown()
            record = gr.JSON(label="JSON")
            run.click(_shown(views.engagement), [clip], [timeline, score, record], api_name="engagement")
        with gr.Tab("DiffRate: ViT token compression"):
            gr.Markdown("A timm ViT (random weights, or the shipped CIFAR-10 ViT) and a prune+merge schedule: "
                        "FLOPs from the formula and throughput measured for both models in the same run.")
            with gr.Row():
                with gr.Column():
                    model_name = gr.Dropdown(list(views.DIFFRATE_MODELS), value="cifar10-vit", allow_custom_value=True,
                                             label="model (any timm ViT name)")
                    schedule = gr.Dropdown(views.diffrate_schedules(), value="shipped:cifar10-vit/0.11",
                                           label="schedule")
                    target = gr.Number(label="FLOPs target for uniform (GFLOPs)", value=0.11)
                    batch = gr.Slider(1, 64, value=1, step=1, label="batch")
                    run = gr.Button("Measure", variant="primary")
                with gr.Column():
                    kept = gr.Image(label="tokens kept per block", type="numpy", format="png")
                    summary = gr.Markdown()
            record = gr.JSON(label="JSON")
            run.click(_shown(views.diffrate), [model_name, schedule, target, batch], [kept, summary, record],
                      api_name="diffrate")
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

    from .views import MAX_UPLOAD

    check_port(host, port)
    app = build_app()
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts
    app.queue(default_concurrency_limit=1, max_size=16).launch(
        server_name=host, server_port=port, prevent_thread_lock=not block, quiet=True, show_error=False,
        max_file_size=MAX_UPLOAD, ssr_mode=False, theme=theme, footer_links=["api"])
    return app
