"""Reading images and videos into RGB ``uint8`` arrays ``[height, width, 3]``.

Everything a user may hand us ends up in the same form: paths (EXIF orientation applied), numpy arrays, PIL
images, torch tensors; grey, RGBA, palette and 16-bit images are converted; very large images can be reduced
while decoding so memory stays bounded.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}

Image.MAX_IMAGE_PIXELS = None  # we bound memory ourselves (max_pixels) instead of refusing large photos




def _to_uint8_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"{name}: expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"{name}: empty image {array.shape}")
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageReadError(f"{name}: image has NaN or infinite values")
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0  # float images in [0, 1] or [0, 255]
        array = np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]  # alpha is not part of the scene; drop it rather than composite on a colour
    return np.ascontiguousarray(array)


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.int64)
        peak = 65535 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255
        return _to_uint8_rgb((array * 255 // peak).astype(np.uint8), name)
    if image.mode == "F":
        return _to_uint8_rgb(np.asarray(image, dtype=np.float32), name)
    if image.mode != "RGB":
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return _to_uint8_rgb(np.array(image), name)  # a copy: PIL-backed arrays are read-only


def _is_tensor(value) -> bool:
    """``isinstance(value, torch.Tensor)`` without importing torch (2 s): a tensor exists only once torch is."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


@dataclass
class ReadImage:
    """An image as read, and the factor its coordinates were scaled by (1.0 unless reduced)."""

    pixels: np.ndarray
    scale: float = 1.0


def read_image(source, max_pixels: int | None = None, name: str | None = None) -> ReadImage:
    """Read a path, numpy array, PIL image or tensor as RGB uint8 ``[H, W, 3]``.

    Tensors may be ``[3, H, W]`` / ``[1, H, W]`` (torchvision layout) or ``[H, W, C]``; float tensors and arrays in
    [0, 1] or [0, 255]. With ``max_pixels``, larger images are reduced (JPEGs while decoding) and ``scale`` says by
    how much, so detections can be mapped back to the original.
    """
    name = name or (str(source) if isinstance(source, str | Path) else type(source).__name__)
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ImageReadError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file")
        try:
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels and width * height > max_pixels:
                    factor = (max_pixels / (width * height)) ** 0.5
                    image.draft("RGB", (int(width * factor), int(height * factor)))  # JPEG: decode at 1/2..1/8
                image = ImageOps.exif_transpose(image)
                pixels = _pil_to_rgb(image, name)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise ImageReadError(f"{path}: not a readable image ({type(error).__name__})") from None
        # EXIF may rotate by 90 degrees, so compare areas rather than sides
        scale = (pixels.shape[0] * pixels.shape[1] / (width * height)) ** 0.5
        read = ReadImage(pixels, scale)
    elif isinstance(source, Image.Image):
        read = ReadImage(_pil_to_rgb(source, name))
    elif _is_tensor(source):
        tensor = source.detach().cpu()
        if tensor.dim() == 3 and tensor.shape[0] in (1, 3, 4) and tensor.shape[2] not in (1, 3, 4):
            tensor = tensor.permute(1, 2, 0)
        read = ReadImage(_to_uint8_rgb(tensor.numpy(), name))
    elif isinstance(source, np.ndarray):
        read = ReadImage(_to_uint8_rgb(source, name))
    else:
        raise ImageReadError(f"{name}: cannot read an image from {type(source).__name__}")
    if max_pixels and read.pixels.shape[0] * read.pixels.shape[1] > max_pixels:
        height, width = read.pixels.shape[:2]
        factor = (max_pixels / (width * height)) ** 0.5
        size = (max(1, int(width * factor)), max(1, int(height * factor)))
        read = ReadImage(cv2.resize(read.pixels, size, interpolation=cv2.INTER_AREA), read.scale * size[0] / width)
    return read


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files named, and the images and videos inside folders named (sorted, not recursive into hidden files)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and (is_image(p) or is_video(p)))
        else:
            found.append(path)
    return found


@dataclass
class InputFrame:
    """One image, or one frame of a video, of a command's inputs: ``pixels`` RGB uint8 ``[H, W, 3]`` (reduced by
    ``scale`` when the input was above ``max_pixels``), or ``error`` (a one-line message) when it could not be read."""

    path: Path
    frame: int | None  # the video frame index; None for an image
    pixels: np.ndarray | None
    error: str | None = None
    scale: float = 1.0


def input_frames(paths: list[str | Path], video_step: int = 1, max_pixels: int | None = None,
                 videos: bool = True) -> Iterator[InputFrame]:
    """The one input pipeline of ``keen detect``, ``segment`` and ``hallucinate``: files and folders (`expand_paths`)
    -> every image, and every ``video_step``-th frame of every video, in input order. A file that cannot be read
    gives one `InputFrame` with ``error`` set and the rest carry on; with ``videos=False`` a video is such an error."""
    for path in expand_paths(paths):
        if is_video(path):
            if not videos:
                yield InputFrame(path, None, None, f"{path}: a video; this command reads images only")
                continue
            try:
                for index, frame in video_frames(path, video_step):
                    if max_pixels is not None and frame.shape[0] * frame.shape[1] > max_pixels:
                        reduced = read_image(frame, max_pixels)
                        yield InputFrame(path, index, reduced.pixels, scale=reduced.scale)
                    else:
                        yield InputFrame(path, index, frame)
            except ImageReadError as error:
                yield InputFrame(path, None, None, str(error))
            continue
        try:
            read = read_image(path, max_pixels)
        except ImageReadError as error:
            yield InputFrame(path, None, None, str(error))
            continue
        yield InputFrame(path, None, read.pixels, scale=read.scale)


def input_record(path: str | Path, frame: int | None, error: str | None) -> dict:
    """The start of every per-input JSON record: the input's path, its video frame and its error, where set."""
    record: dict = {"path": str(path)}
    if frame is not None:
        record["frame"] = frame
    if error is not None:
        record["error"] = error
    return record


def batched(items: Iterator, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class UniqueStems:
    """Output stems that never collide: the same file name in two folders (``a/p.jpg``, ``b/p.jpg``) gets ``p``
    then ``p_2``, so one output never overwrites another's. Frames of one video keep their own stems (the caller
    adds the frame index after the source's stem)."""

    def __init__(self):
        self._by_source: dict[Path, str] = {}
        self._taken: set[str] = set()

    def __call__(self, source: str | Path) -> str:
        """The stem for ``source``; the same source always gets the same stem."""
        source = Path(source)
        if source not in self._by_source:
            stem, copy = source.stem, 1
            while stem in self._taken:
                copy += 1
                stem = f"{source.stem}_{copy}"
            self._taken.add(stem)
            self._by_source[source] = stem
        return self._by_source[source]


def video_frames(path: str | Path, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, rgb)`` for every ``step``-th frame; raises ImageReadError if it cannot be decoded."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageReadError(f"{path}: cannot open as a video")
    try:
        index = 0
        decoded_any = False
        while True:
            if index % step:
                if not capture.grab():
                    break
            else:
                ok, frame = capture.read()
                if not ok:
                    break
                decoded_any = True
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        if not decoded_any:
            raise ImageReadError(f"{path}: no decodable frames")
    finally:
        capture.release()


def video_info(path: str | Path) -> dict[str, float]:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ImageReadError(f"{path}: cannot open as a video")
        return {"fps": capture.get(cv2.CAP_PROP_FPS) or 0.0, "frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    finally:
        capture.release()


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image atomically; the format follows the suffix."""
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image as {Path(path).suffix}")
    write_atomic(path, encoded.tobytes())
