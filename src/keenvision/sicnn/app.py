"""SICNN's tab of ``keen app``: `hallucinate` computes it without Gradio, `build_view` lays it out."""

from __future__ import annotations

import functools

import numpy as np

from ..core.uploads import AppInputError, read_upload, two_column_view


@functools.cache
def hallucinator():
    """The shipped CNN-H (and its MTCNN) on the CPU, loaded once."""
    from .hallucinate import Hallucinator

    return Hallucinator(device="cpu")


def hallucinate(upload=None) -> tuple[list[tuple[np.ndarray, str]], dict]:
    """Per face a strip LR 12x14 | bicubic x8 | SICNN x8 | the aligned photo, and the JSON record. Every face is
    reduced to 12x14 first, so large faces show what the network recovers from 168 pixels."""
    from .hallucinate import side_by_side

    pixels, source = read_upload(upload)
    faces = hallucinator().hallucinate_image(pixels, all_faces=True)
    if not faces:
        raise AppInputError(f"{source}: no face found (MTCNN, smallest face 20 pixels)")
    strips = [(side_by_side(face), f"face {index}: score {face.score:.3f}") for index, face in enumerate(faces)]
    return strips, {"source": source, "faces": [face.to_dict() for face in faces]}


def build_view(gr, shown) -> None:
    (photo,), run, (strips,) = two_column_view(
        gr, "Each face aligned to 96x112, reduced to 12x14 and brought back x8: low resolution | bicubic | SICNN | "
        "the aligned photo.", [lambda: gr.File(label="photo with faces", type="filepath")], "Hallucinate",
        [lambda: gr.Gallery(label="LR | bicubic | SICNN | photo", columns=1, height="auto", format="png")])
    record = gr.JSON(label="JSON")
    run.click(shown(hallucinate), [photo], [strips, record], api_name="hallucinate")
