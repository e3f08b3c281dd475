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
    size: tuple[int, int] | None = None  # (width, height)
    error: str | None = None

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


def _frames_of(path: Path, video_step: int) -> Iterator[tuple[Path, int | None, np.ndarray | str, float]]:
    """(path, frame index or None, pixels or error message, scale) for every image/frame of one input."""
    if is_video(path):
        try:
            for index, frame in video_frames(path, video_step):
                yield path, index, frame, 1.0
        except ImageReadError as error:
            yield path, None, str(error), 1.0
        return
    try:
        read = read_image(path)
    except ImageReadError as error:
        yield path, None, str(error), 1.0
        return
    yield path, None, read.pixels, read.scale


def detect_files(detector: MTCNN, paths: list[str | Path], batch_size: int = 8,
                 video_step: int = 1) -> Iterator[tuple[FileResult, np.ndarray | None]]:
    """Yield ``(result, pixels)`` per image and per video frame (every ``video_step``-th), in input order.

    Images are detected ``batch_size`` at a time (any mix of sizes); unreadable inputs give a result with
    ``error`` set and the rest carry on. Huge images are reduced to ``detector.max_image_pixels`` first."""
    def inputs():
        for path in expand_paths(paths):
            yield from _frames_of(path, video_step)

    for batch in _batches(inputs(), batch_size):
        good = [item for item in batch if isinstance(item[2], np.ndarray)]
        pixels = []
        for _, _, image, _ in good:
            if image.shape[0] * image.shape[1] > detector.max_image_pixels:
                image = read_image(image, detector.max_image_pixels).pixels
            pixels.append(image)
        faces = iter(detector.detect_arrays(pixels)) if pixels else iter(())
        scaled = iter(pixels)
        for path, frame, image, _ in batch:
            if isinstance(image, str):
                yield FileResult(Path(path), frame, error=image), None
                continue
            image_faces, used = next(faces), next(scaled)
            factor = used.shape[1] / image.shape[1]
            if factor != 1.0:  # detected on a reduced copy: map back to the original pixels
                for face in image_faces:
                    face.box, face.landmarks = face.box / factor, face.landmarks / factor
            yield FileResult(Path(path), frame, image_faces, (image.shape[1], image.shape[0])), image


def output_name(result: FileResult, suffix: str) -> str:
    stem = result.path.stem
    return f"{stem}_f{result.frame:06d}{suffix}" if result.frame is not None else f"{stem}{suffix}"


def write_outputs(result: FileResult, image: np.ndarray, out_dir: Path, annotate: bool = True,
                  aligned_size: tuple[int, int] | None = None) -> list[Path]:
    """Annotated image (``<stem>.jpg``/``<stem>_f<frame>.jpg``) and, with ``aligned_size``, aligned face crops
    (``aligned/<stem>_<k>.png``); every file written atomically. Returns the paths written."""
    written = []
    if annotate:
        boxes = [f.box for f in result.faces]
        canvas = draw_boxes(image, boxes, [f.score for f in result.faces], [f.landmarks for f in result.faces])
        path = out_dir / output_name(result, ".jpg")
        write_image(path, canvas)
        written.append(path)
    if aligned_size is not None:
        for index, face in enumerate(result.faces):
            path = out_dir / "aligned" / output_name(result, f"_{index}.png")
            write_image(path, align(image, face.landmarks, aligned_size))
            written.append(path)
    return written

