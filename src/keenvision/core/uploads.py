"""What ``keen app``'s views share, without Gradio: uploads read into RGB pixels (an image, a video frame) with
their limits, PNG plots turned into pixels, and `AppInputError`, the one-line message a page shows as it is.
Each system's view (``<system>/app.py``, declared in its ``system.py``) reads its inputs through these."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageReadError, UsageError

MAX_UPLOAD = "100mb"            # Gradio refuses larger uploads before they reach a view
MAX_IMAGE_PIXELS = 80_000_000   # refused outright: an 80 MP image is a decompression bomb or a mistake here
WORK_PIXELS = 4_194_304         # larger photos are reduced (area-averaged) before detection / segmentation
MAX_VIDEO_SECONDS = 600         # engagement: EmotiW clips are ~5 minutes; longer ones belong to the command line
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class AppInputError(UsageError):
    """An upload or a setting the user can fix; its one-line message is shown in the page."""


# --- inputs -------------------------------------------------------------------------------------------------------

def upload_path(upload, what: str) -> Path:
    if upload is None or (isinstance(upload, str) and not upload):
        raise AppInputError(f"no {what}: upload one first")
    path = Path(upload if isinstance(upload, str | Path) else getattr(upload, "name", upload))
    if not path.is_file():
        raise AppInputError(f"the uploaded {what} is missing on the server; upload it again")
    if path.stat().st_size == 0:
        raise AppInputError(f"{path.name}: the file is empty")
    return path


def read_upload(upload, webcam: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(RGB uint8 pixels, a note) from an uploaded image file, or else a webcam frame. Images above
    `MAX_IMAGE_PIXELS` are refused from their header (before decoding); above `WORK_PIXELS` they are reduced."""
    from .io import read_image

    if upload is None and webcam is not None:
        return read_image(np.asarray(webcam), max_pixels=WORK_PIXELS).pixels, "webcam frame"
    path = upload_path(upload, "image")
    try:
        Image.MAX_IMAGE_PIXELS = None  # our own limit below, with a message instead of PIL's warning or error
        with Image.open(path) as header:
            width, height = header.size
    except Exception:  # noqa: BLE001 - PIL raises many types for junk; the message names the file
        raise AppInputError(f"{path.name}: not a readable image (JPEG, PNG, BMP, TIFF, WebP ...)") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise AppInputError(f"{path.name}: {width}x{height} is {width * height / 1e6:.0f} MP; the app takes up to "
                            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP (the command line takes any size)")
    try:
        read = read_image(path, max_pixels=WORK_PIXELS)
    except ImageReadError as error:
        raise AppInputError(f"{path.name}: {str(error).split(': ', 1)[-1]}") from None
    note = f"{path.name}, {width}x{height}"
    if read.scale < 1:
        note += f" (reduced to {read.pixels.shape[1]}x{read.pixels.shape[0]})"
    return read.pixels, note


def read_video_frame(upload, second: float = 0.0) -> tuple[np.ndarray, str]:
    """The frame of an uploaded video at ``second`` (the last one when past the end), RGB uint8."""
    import cv2

    path = upload_path(upload, "video")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise AppInputError(f"{path.name}: cannot open as a video")
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        index = int(max(0.0, float(second or 0)) * fps) if fps > 0 else 0
        if frames > 0:
            index = min(index, frames - 1)
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok and index:  # some containers do not seek: decode from the start instead
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = capture.read()
            index = 0
    finally:
        capture.release()
    if not ok:
        raise AppInputError(f"{path.name}: no decodable frame")
    pixels = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if pixels.shape[0] * pixels.shape[1] > WORK_PIXELS:
        factor = (WORK_PIXELS / (pixels.shape[0] * pixels.shape[1])) ** 0.5
        pixels = cv2.resize(pixels, (int(pixels.shape[1] * factor), int(pixels.shape[0] * factor)),
                            interpolation=cv2.INTER_AREA)
    at = f"{index / fps:.2f} s" if fps > 0 else f"frame {index}"
    return pixels, f"{path.name}, frame {index} ({at})"


def is_video_upload(upload) -> bool:
    return upload is not None and Path(str(upload)).suffix.lower() in VIDEO_SUFFIXES


def png_pixels(write_png) -> np.ndarray:
    """Run ``write_png(path)`` (a plotting function that writes a PNG) in a scratch folder and return the pixels."""
    from .io import read_image

    with tempfile.TemporaryDirectory(prefix="keen-app-") as folder:
        path = Path(folder) / "plot.png"
        write_png(path)
        return read_image(path).pixels


def two_column_view(gr, description: str, inputs: list, button: str, outputs: list) -> tuple[list, object, list]:
    """The layout every view of ``keen app`` shares (``gr`` is the Gradio module): ``description``, then the
    components ``inputs`` makes (zero-argument callables) and a ``button`` on the left, those ``outputs`` makes on
    the right. Returns (input components, the button, output components) for the view to wire."""
    gr.Markdown(description)
    with gr.Row():
        with gr.Column():
            fields = [make() for make in inputs]
            run = gr.Button(button, variant="primary")
        with gr.Column():
            shown = [make() for make in outputs]
    return fields, run, shown
