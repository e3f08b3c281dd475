"""Detection over files: images, folders and videos, in batches, one bad file never stopping the rest."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.draw import draw_boxes
from ..core.io import batched, input_frames, input_record, write_image
from .alignment import align
from .detector import MTCNN, Face


@dataclass
class FileResult:
    """Faces found in one image or one video frame, or the error that stopped it (``faces`` is then empty)."""

    path: Path
    frame: int | None = None
    faces: list[Face] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height) of the original image
    error: str | None = None
    scale: float = 1.0  # size of the pixels detected on / original size (below 1 for reduced huge images)

    def to_dict(self) -> dict:
        record = input_record(self.path, self.frame, self.error)
        if self.error is None:
            record["width"], record["height"] = self.size
            record["faces"] = [face.to_dict() for face in self.faces]
        return record


def detect_files(detector: MTCNN, paths: list[str | Path], batch_size: int = 8,
                 video_step: int = 1) -> Iterator[tuple[FileResult, np.ndarray | None]]:
    """Yield ``(result, pixels)`` per image and per video frame (every ``video_step``-th), in input order.

    Images are detected ``batch_size`` at a time (any mix of sizes); unreadable inputs give a result with
    ``error`` set and the rest carry on. Images above ``detector.max_image_pixels`` are reduced while decoding
    (memory stays bounded); their faces are reported in original pixels and ``result.scale`` is the reduction of
    the returned ``pixels``."""
    for batch in batched(input_frames(paths, video_step, detector.max_image_pixels), batch_size):
        readable = [item.pixels for item in batch if item.error is None]
        faces = iter(detector.detect_arrays(readable)) if readable else iter(())
        for item in batch:
            if item.error is not None:
                yield FileResult(item.path, item.frame, error=item.error), None
                continue
            image_faces = next(faces)
            for face in image_faces:  # back to the original pixels
                face.box, face.landmarks = face.box / item.scale, face.landmarks / item.scale
            size = (round(item.pixels.shape[1] / item.scale), round(item.pixels.shape[0] / item.scale))
            yield FileResult(item.path, item.frame, image_faces, size, scale=item.scale), item.pixels


def output_name(result: FileResult, suffix: str, stem: str | None = None) -> str:
    stem = stem or result.path.stem
    return f"{stem}_f{result.frame:06d}{suffix}" if result.frame is not None else f"{stem}{suffix}"


def write_outputs(result: FileResult, image: np.ndarray, out_dir: Path, annotate: bool = True,
                  aligned_size: tuple[int, int] | None = None, stem: str | None = None) -> list[Path]:
    """Annotated image (``<stem>.jpg``/``<stem>_f<frame>.jpg``) and, with ``aligned_size``, aligned face crops
    (``aligned/<stem>_<k>.png``); every file written atomically. Returns the paths written."""
    written = []
    if annotate:  # drawn on the pixels detected on, which huge images had reduced
        canvas = draw_boxes(image, [f.box * result.scale for f in result.faces], [f.score for f in result.faces],
                            [f.landmarks * result.scale for f in result.faces])
        path = out_dir / output_name(result, ".jpg", stem)
        write_image(path, canvas)
        written.append(path)
    if aligned_size is not None:
        for index, face in enumerate(result.faces):
            path = out_dir / "aligned" / output_name(result, f"_{index}.png", stem)
            write_image(path, align(image, face.landmarks * result.scale, aligned_size))
            written.append(path)
    return written

