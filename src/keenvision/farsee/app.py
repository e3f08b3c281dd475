"""FarSee-Net's tab of ``keen app``: `segment` computes it without Gradio, `build_view` lays it out."""

from __future__ import annotations

import functools
import time

import numpy as np

from ..core.uploads import is_video_upload, read_upload, read_video_frame, two_column_view


@functools.cache
def segmenter():
    """The shipped model on the CPU, batch 1, loaded once."""
    from .segment import Segmenter

    return Segmenter(device="cpu", batch_size=1)


def segment(upload=None, second: float = 0.0) -> tuple[np.ndarray, dict[str, float], str, dict]:
    """(overlay, class shares, a line with the speed, the JSON record) for an image or a video frame."""
    from .segment import overlay

    pixels, source = read_video_frame(upload, second) if is_video_upload(upload) else read_upload(upload)
    model = segmenter()
    model.segment(pixels)  # warm-up: the first call pays for allocation, not the network
    start = time.perf_counter()
    result = model.segment(pixels)
    elapsed = time.perf_counter() - start
    shares = {name: round(float(share), 4) for name, share in result.class_fractions(model.class_names).items()}
    speed = (f"{1 / elapsed:.1f} fps ({1000 * elapsed:.0f} ms for {pixels.shape[1]}x{pixels.shape[0]}, batch 1, "
             f"CPU, reading and colouring excluded)")
    record = {"source": source, "width": int(pixels.shape[1]), "height": int(pixels.shape[0]),
              "milliseconds": round(1000 * elapsed, 1), "class_shares": shares}
    return overlay(pixels, result.labels, model.palette), shares, f"**{source}**: {speed}", record


def build_view(gr, shown) -> None:
    (street, second), run, (blended, speed) = two_column_view(
        gr, "CamVid's 11 classes on an image or one frame of a video (FarSee-Net, ICRA 2020).",
        [lambda: gr.File(label="image or video", type="filepath"),
         lambda: gr.Number(label="video: frame at second", value=0, minimum=0)], "Segment",
        [lambda: gr.Image(label="overlay", type="numpy", format="png"), gr.Markdown])
    shares = gr.Label(label="class shares", num_top_classes=11)
    record = gr.JSON(label="JSON")
    run.click(shown(segment), [street, second], [blended, shares, speed, record], api_name="segment")
