"""Prediction files of the face benchmarks: WIDER FACE's ``<event>/<image>.txt`` and FDDB's detection lists,
written from `MTCNN.detect` output and read back (``docs/mtcnn_evaluation.md`` lists the formats)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class _FaceLike(Protocol):
    box: np.ndarray
    score: float


class _Detector(Protocol):
    def detect(self, images: list) -> Any: ...


def _as_rows(faces: Sequence[_FaceLike] | np.ndarray) -> np.ndarray:
    """``[N, 5]`` left, top, width, height, score from `Face` objects or an ``[N, 5]`` x1, y1, x2, y2, score
    array (pixel-edge coordinates, so the width is ``x2 - x1``)."""
    if isinstance(faces, np.ndarray):
        boxes = np.asarray(faces, np.float64).reshape(-1, 5)
    else:
        boxes = np.array([[*np.asarray(f.box, np.float64)[:4], float(f.score)] for f in faces]).reshape(-1, 5)
    return np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2], boxes[:, 4]])


def _format_rows(rows: np.ndarray) -> list[str]:
    # MTCNN scores crowd near 1 (0.9999...), so they keep 9 significant digits or the ranking would tie
    return [f"{x:.3f} {y:.3f} {w:.3f} {h:.3f} {s:.9g}" for x, y, w, h, s in rows]


def write_widerface_predictions(out_dir: str | Path, event: str, image_name: str,
                                faces: Sequence[_FaceLike] | np.ndarray) -> Path:
    """Write one image's detections as ``out_dir/<event>/<image_name>.txt`` in the WIDER FACE submission
    format: the image name, the count, then ``left top width height score`` per face.

    ``faces`` are `Face` objects (or an ``[N, 5]`` x1, y1, x2, y2, score array) in pixel-edge coordinates;
    ``image_name`` may carry its ``.jpg``."""
    stem = Path(image_name).stem if image_name.endswith(".jpg") else image_name
    path = Path(out_dir) / event / f"{stem}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _as_rows(faces)
    path.write_text("\n".join([stem, str(len(rows)), *_format_rows(rows)]) + "\n")
    return path


def write_fddb_predictions(path: str | Path,
                           detections: Iterable[tuple[str, Sequence[_FaceLike] | np.ndarray]]) -> Path:
    """Write ``(image_name, faces)`` pairs as one FDDB detection file: per image its name (as in the fold
    lists, e.g. ``2002/08/11/big/img_591``), the count, then ``left top width height score`` per face."""
    lines = []
    for name, faces in detections:
        rows = _as_rows(faces)
        lines += [name.removesuffix(".jpg"), str(len(rows)), *_format_rows(rows)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _parse_count(text: str, path: Path, lineno: int) -> int:
    try:
        count = int(text.strip())
    except ValueError:
        raise ValueError(f"{path}:{lineno}: expected the number of boxes, got {text.strip()!r}") from None
    if count < 0:
        raise ValueError(f"{path}:{lineno}: negative number of boxes {count}")
    return count


def _parse_box(text: str, path: Path, lineno: int) -> list[float]:
    fields = text.split()
    try:
        values = [float(v) for v in fields[:5]]
    except ValueError:
        values = []
    if len(values) < 5 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{path}:{lineno}: expected 'left top width height score', got {text.strip()!r}")
    return values


def _read_boxes(lines: Iterator[tuple[int, str]], count: int, path: Path) -> np.ndarray:
    rows = []
    for _ in range(count):
        lineno, text = next(lines, (None, ""))
        if lineno is None:
            raise ValueError(f"{path}: ends after {len(rows)} of {count} boxes")
        rows.append(_parse_box(text, path, lineno))
    return np.array(rows, np.float64).reshape(-1, 5)


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    # blank lines carry nothing in either format (trailing ones are common)
    return ((i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip())


def _read_widerface_file(path: Path) -> np.ndarray:
    lines = _numbered_lines(path)
    if next(lines, None) is None:
        raise ValueError(f"{path}: empty prediction file (expected image name, count, boxes)")
    lineno, text = next(lines, (None, ""))
    if lineno is None:
        raise ValueError(f"{path}: missing the count line after the image name")
    boxes = _read_boxes(lines, _parse_count(text, path, lineno), path)
    extra = next(lines, None)
    if extra is not None:
        raise ValueError(f"{path}:{extra[0]}: more boxes than the count {len(boxes)} on line {lineno}")
    return boxes


def read_fddb_predictions(pred: str | Path) -> dict[str, np.ndarray]:
    """Read FDDB detections (one file, or every ``*.txt`` of a folder in name order) as
    ``{image_name: [N, 5] left, top, width, height, score}``."""
    pred = Path(pred)
    if not pred.exists():
        raise FileNotFoundError(f"FDDB predictions not found: {pred}")
    files = sorted(pred.glob("*.txt")) if pred.is_dir() else [pred]
    out: dict[str, np.ndarray] = {}
    for path in files:
        lines = _numbered_lines(path)
        for lineno, name in lines:
            name = name.strip().removesuffix(".jpg")
            if name in out:
                raise ValueError(f"{path}:{lineno}: second block for image {name!r}")
            count_line = next(lines, None)
            if count_line is None:
                raise ValueError(f"{path}:{lineno}: image {name!r} has no count line")
            out[name] = _read_boxes(lines, _parse_count(count_line[1], path, count_line[0]), path)
    return out
