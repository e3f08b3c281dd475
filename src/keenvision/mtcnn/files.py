"""Detection over files: images, folders and videos, in batches, one bad file never stopping the rest."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.draw import draw_boxes
from ..core.io import ImageReadError, expand_paths, is_video, read_image, video_frames, write_image
from .align import align
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
        record: dict = {"path": str(self.path)}
        if self.frame is not None:
            record["frame"] = self.frame
        if self.error is not None:
            record["error"] = self.error
        else:
            record["width"], record["height"] = self.size
            record["faces"] = [face.to_dict() for face in self.faces]
        return record


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_Frame = tuple[Path, int | None, np.ndarray | str, float]


def _frames_of(path: Path, video_step: int, max_pixels: int) -> Iterator[_Frame]:
    """(path, frame index or None, pixels or error message, scale) for every image/frame of one input; images
    above ``max_pixels`` are reduced while decoding and ``scale`` says by how much."""
    if is_video(path):
        try:
            for index, frame in video_frames(path, video_step):
                if frame.shape[0] * frame.shape[1] > max_pixels:
                    reduced = read_image(frame, max_pixels)
                    yield path, index, reduced.pixels, reduced.scale
                else:
                    yield path, index, frame, 1.0
        except ImageReadError as error:
            yield path, None, str(error), 1.0
        return
    try:
        read = read_image(path, max_pixels)
    except ImageReadError as error:
        yield path, None, str(error), 1.0
        return
    yield path, None, read.pixels, read.scale


def detect_files(detector: MTCNN, paths: list[str | Path], batch_size: int = 8,
                 video_step: int = 1) -> Iterator[tuple[FileResult, np.ndarray | None]]:
    """Yield ``(result, pixels)`` per image and per video frame (every ``video_step``-th), in input order.

    Images are detected ``batch_size`` at a time (any mix of sizes); unreadable inputs give a result with
    ``error`` set and the rest carry on. Images above ``detector.max_image_pixels`` are reduced while decoding
    (memory stays bounded); their faces are reported in original pixels and ``result.scale`` is the reduction of
    the returned ``pixels``."""
    def inputs():
        for path in expand_paths(paths):
            yield from _frames_of(path, video_step, detector.max_image_pixels)

    for batch in _batches(inputs(), batch_size):
        pixels = [image for _, _, image, _ in batch if isinstance(image, np.ndarray)]
        faces = iter(detector.detect_arrays(pixels)) if pixels else iter(())
        for path, frame, image, scale in batch:
            if isinstance(image, str):
                yield FileResult(Path(path), frame, error=image), None
                continue
            image_faces = next(faces)
            for face in image_faces:  # back to the original pixels
                face.box, face.landmarks = face.box / scale, face.landmarks / scale
            size = (round(image.shape[1] / scale), round(image.shape[0] / scale))
            yield FileResult(Path(path), frame, image_faces, size, scale=scale), image


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

