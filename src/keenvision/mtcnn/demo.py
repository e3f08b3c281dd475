"""The MTCNN section of ``keen demo``: detections, landmarks and aligned crops on the embedded astronaut photo."""

from __future__ import annotations

import time
from pathlib import Path

from ..core.draw import draw_boxes
from ..core.io import write_image
from ..core.report import Section
from .alignment import align
from .benchmark import sample_image
from .detector import MTCNN


def demo_section(out_dir: Path, device: str | None = "cpu") -> Section:
    image = sample_image()
    detector = MTCNN(device=device)
    detector.detect_arrays([image])  # warm-up, so the time below is the steady state
    start = time.perf_counter()
    faces = detector.detect_arrays([image])[0]
    elapsed = time.perf_counter() - start
    section = Section("MTCNN face detection and alignment")
    section.paragraphs.append(
        f"Zhang et al. (2016), the authors' released weights converted from Caffe. {len(faces)} face(s) found in "
        f"the {image.shape[1]}x{image.shape[0]} astronaut photo (scikit-image, public domain) in "
        f"{elapsed * 1000:.0f} ms on {detector.device}.")
    annotated = draw_boxes(image, [f.box for f in faces], [f.score for f in faces], [f.landmarks for f in faces])
    write_image(out_dir / "mtcnn_detections.png", annotated)
    section.images.append(("mtcnn_detections.png", "boxes, scores and the 5 landmarks"))
    for index, face in enumerate(faces):
        for width, height in ((96, 112), (112, 112)):
            name = f"mtcnn_aligned_{index}_{width}x{height}.png"
            write_image(out_dir / name, align(image, face.landmarks, (width, height)))
            section.images.append((name, f"face {index} aligned to the {width}x{height} template"))
    section.table = (["face", "score", "box x1,y1,x2,y2", "left eye", "right eye"],
                     [[i, f"{f.score:.4f}", ", ".join(f"{v:.1f}" for v in f.box),
                       ", ".join(f"{v:.1f}" for v in f.landmarks[0]), ", ".join(f"{v:.1f}" for v in f.landmarks[1])]
                      for i, f in enumerate(faces)])
    if not faces:
        section.paragraphs.append("No face found: this is a regression; the astronaut photo has one clear face.")
    return section
