"""MTCNN's tab of ``keen app``: `detect` computes it without Gradio, `build_view` lays it out."""

from __future__ import annotations

import functools
import time

import numpy as np

from ..core.uploads import read_upload, two_column_view


@functools.cache
def detector():
    """The shipped detector on the CPU, loaded once and warmed up (so the first view's time is the steady one)."""
    from .detector import MTCNN

    model = MTCNN(device="cpu")
    model.detect_arrays([np.zeros((64, 64, 3), np.uint8)])
    return model


def detect(upload=None, webcam: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """(image with boxes, scores and landmarks drawn, aligned 112x112 crops, the JSON record)."""
    from ..core.draw import draw_boxes
    from .alignment import align

    pixels, source = read_upload(upload, webcam)
    start = time.perf_counter()
    faces = detector().detect_arrays([pixels])[0]
    elapsed = time.perf_counter() - start
    annotated = draw_boxes(pixels, [f.box for f in faces], [f.score for f in faces], [f.landmarks for f in faces])
    crops = [align(pixels, face.landmarks, (112, 112)) for face in faces]
    record = {"source": source, "width": int(pixels.shape[1]), "height": int(pixels.shape[0]),
              "milliseconds": round(1000 * elapsed, 1),
              "faces": [{"box": [round(float(v), 2) for v in face.box], "score": round(float(face.score), 5),
                         "landmarks": [[round(float(v), 2) for v in point] for point in face.landmarks]}
                        for face in faces]}
    return annotated, crops, record


def build_view(gr, shown) -> None:
    (photo, webcam), run, (annotated, crops) = two_column_view(
        gr, "Face boxes, scores and 5 landmarks (Zhang et al. 2016, the authors' weights), and each face aligned to "
        "112x112.", [lambda: gr.File(label="image", type="filepath"),
                     lambda: gr.Image(label="or a webcam frame", sources=["webcam"], type="numpy")], "Detect faces",
        [lambda: gr.Image(label="detections", type="numpy", format="png"),
         lambda: gr.Gallery(label="aligned faces", columns=6, height="auto", format="png")])
    record = gr.JSON(label="JSON")
    run.click(shown(detect), [photo, webcam], [annotated, crops, record], api_name="detect")
