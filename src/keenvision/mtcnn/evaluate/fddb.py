"""FDDB's discrete ROC: its ``evaluate`` program (``evaluate.cpp``, ``Matching.cpp``, ``Results.cpp``; Jain and
Learned-Miller, "FDDB: A Benchmark for Face Detection in Unconstrained Settings", UMass UM-CS-2010-009)
re-implemented, without needing the images."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from ...core.data import data_root
from .predictions import _numbered_lines, _parse_count, read_fddb_predictions

FDDB_FOLDS = tuple(range(1, 11))


def load_fddb_ground_truth(gt_dir: str | Path | None = None,
                           folds: Iterable[int] | None = None) -> list[tuple[str, np.ndarray]]:
    """``(image_name, [K, 5] major_radius, minor_radius, angle, center_x, center_y)`` per image of the folds
    (``FDDB-fold-XX-ellipseList.txt``, in ``FDDB-fold-XX.txt`` order); default all ten folds of
    ``<data>/face_benchmark_annotations/fddb_folds``."""
    gt_dir = Path(gt_dir) if gt_dir is not None else data_root() / "face_benchmark_annotations/fddb_folds"
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"FDDB ground truth folder not found: {gt_dir}")
    out = []
    for fold in folds if folds is not None else FDDB_FOLDS:
        ellipse_file = gt_dir / f"FDDB-fold-{fold:02d}-ellipseList.txt"
        list_file = gt_dir / f"FDDB-fold-{fold:02d}.txt"
        for path in (ellipse_file, list_file):
            if not path.is_file():
                raise FileNotFoundError(f"FDDB ground truth file not found: {path}")
        ellipses: dict[str, np.ndarray] = {}
        lines = _numbered_lines(ellipse_file)
        for lineno, name in lines:
            count_line = next(lines, None)
            if count_line is None:
                raise ValueError(f"{ellipse_file}:{lineno}: image {name.strip()!r} has no count line")
            count, rows = _parse_count(count_line[1], ellipse_file, count_line[0]), []
            for _ in range(count):
                row_no, text = next(lines, (None, ""))
                try:
                    rows.append([float(v) for v in text.split()[:5]])
                except ValueError:
                    rows.append([])
                if row_no is None or len(rows[-1]) != 5:
                    raise ValueError(f"{ellipse_file}:{row_no}: expected an ellipse, got {text.strip()!r}")
            ellipses[name.strip()] = np.array(rows, np.float64).reshape(-1, 5)
        for name in list_file.read_text().split():
            if name not in ellipses:
                raise ValueError(f"{list_file}: image {name!r} has no entry in {ellipse_file.name}")
            out.append((name, ellipses[name]))
    return out


def _cv_round(values: np.ndarray) -> np.ndarray:
    # cvPointFrom32f(cvPoint2D32f(...)): to float32, then cvRound (half to even)
    return np.rint(np.asarray(values, np.float32)).astype(np.int64)


def fddb_overlaps(ellipses: np.ndarray, boxes: np.ndarray,
                  image_size: tuple[int, int] | None = None) -> np.ndarray:
    """FDDB's overlap ratio ``[K, N]`` of annotated ellipses and ``left top width height`` detections: both
    are rasterised as FDDB's ``EllipseR``/``RectangleR`` draw them (OpenCV, filled: centre rounded, radii
    truncated, angle in degrees; rectangle corners ``(x, y)`` and ``(x + w, y + h)`` rounded, inclusive) and
    the ratio is the pixel count of the intersection over that of the union. ``image_size`` ``(width,
    height)`` clips both to the image as the original's image-sized masks do; without it nothing is
    clipped."""
    ellipses = np.asarray(ellipses, np.float64).reshape(-1, 5)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    corners = _cv_round(np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]]))
    rx0, rx1 = np.minimum(corners[:, 0], corners[:, 2]), np.maximum(corners[:, 0], corners[:, 2])
    ry0, ry1 = np.minimum(corners[:, 1], corners[:, 3]), np.maximum(corners[:, 1], corners[:, 3])
    if image_size is not None:
        rx0, ry0 = np.maximum(rx0, 0), np.maximum(ry0, 0)
        rx1, ry1 = np.minimum(rx1, image_size[0] - 1), np.minimum(ry1, image_size[1] - 1)
    rect_area = np.clip(rx1 - rx0 + 1, 0, None) * np.clip(ry1 - ry0 + 1, 0, None)
    out = np.zeros((len(ellipses), len(boxes)))
    for k, (major, minor, angle, cx, cy) in enumerate(ellipses):
        axes = (int(major), int(minor))
        radius = max(axes) + 2
        (center_x, center_y) = _cv_round([cx, cy])
        mask = np.zeros((2 * radius + 1, 2 * radius + 1), np.uint8)
        # the ellipse file's angle is radians; EllipseR draws at 180 - (pi - angle) * 180 / pi degrees
        cv2.ellipse(mask, (radius, radius), axes, math.degrees(angle), 0, 360, 1, thickness=-1)
        x0, y0 = center_x - radius, center_y - radius  # image coordinates of mask[0, 0]
        if image_size is not None:
            ys, xs = np.arange(mask.shape[0]) + y0, np.arange(mask.shape[1]) + x0
            mask &= ((ys[:, None] >= 0) & (ys[:, None] < image_size[1])
                     & (xs[None, :] >= 0) & (xs[None, :] < image_size[0])).astype(np.uint8)
        cumulative = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table
        size = mask.shape[0]
        cx0, cx1 = np.clip(rx0 - x0, 0, size), np.clip(rx1 - x0 + 1, 0, size)
        cy0, cy1 = np.clip(ry0 - y0, 0, size), np.clip(ry1 - y0 + 1, 0, size)
        inter = (cumulative[cy1, cx1] - cumulative[cy0, cx1] - cumulative[cy1, cx0] + cumulative[cy0, cx0])
        inter = np.where((cx1 > cx0) & (cy1 > cy0), inter, 0)
        union = cumulative[-1, -1] + rect_area - inter
        out[k] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return out


def _fddb_image(overlaps: np.ndarray, scores: np.ndarray) -> list[tuple[float, int, float, int]]:
    """Per unique score, highest first: (score, discrete TP, continuous TP, FP) of the detections scoring at
    least that much. As ``evaluate.cpp``, each threshold re-runs the one-to-one matching (Hungarian,
    maximising the summed overlap) on its detections; a matched pair is a discrete TP when its overlap > 0.5
    and adds its overlap to the continuous TP; every other detection is a false positive."""
    results = []
    for threshold in np.unique(scores)[::-1]:
        valid = scores >= threshold
        sub = overlaps[:, valid]
        rows, cols = linear_sum_assignment(sub, maximize=True)
        matched = sub[rows, cols]
        tp = int(np.sum(matched > 0.5))
        results.append((float(threshold), tp, float(matched[matched > 0].sum()), int(valid.sum()) - tp))
    return results


def _image_size(image_dir: Path, name: str) -> tuple[int, int]:
    path = image_dir / f"{name}.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"FDDB image not found: {path}")
    with Image.open(path) as image:  # reads the header only
        return image.size


def evaluate_fddb(pred: str | Path | Mapping[str, Any], gt_dir: str | Path | None = None,
                  folds: Iterable[int] | None = None, fp_points: Sequence[int] = (500, 1000, 2000),
                  image_dir: str | Path | None = None, roc_points: int = 200) -> dict:
    """FDDB discrete (and continuous) ROC, as FDDB's ``evaluate`` with rectangle detections (``-f 0``).

    Protocol: detections are ``left top width height score`` rectangles, annotations ellipses; the overlap
    ratio is intersection over union of their pixel masks (`fddb_overlaps`). For every distinct detection
    score ``s`` of the whole set, each image matches its detections scoring ``>= s`` to its faces one-to-one
    (Hungarian, maximum total overlap); discrete TP = matched pairs with overlap > 0.5, FP = the other
    detections, TPR = TP / all faces. This traces ``DiscROC.txt``; ``ContROC.txt`` sums the matched overlaps
    instead.

    Args:
        pred: an FDDB detection file, a folder of them (every ``*.txt``, e.g. ``fold-01-out.txt``...), or a
            mapping ``{image_name: [N, 5] left, top, width, height, score}``. Images of the folds without
            detections count as none (``missing_predictions``); detections of other images are ignored
            (``unknown_images``).
        gt_dir: folder with ``FDDB-fold-XX.txt`` and ``FDDB-fold-XX-ellipseList.txt``; default the shared
            data's ``face_benchmark_annotations/fddb_folds``.
        folds: fold numbers to evaluate (default 1..10, the benchmark).
        fp_points: false-positive counts at which to report the TPR.
        image_dir: the FDDB images (``<image_dir>/<name>.jpg``); only their sizes are read, to clip the masks
            as the original does. Without it the masks are not clipped to the image.
        roc_points: at most this many ``[fp, tpr]`` points in the returned (downsampled) ROC.

    Returns:
        ``tpr_at_fp``: ``{str(k): TPR}`` at the lowest threshold with at most ``k`` false positives (the step
        ROC read at ``k``; the final TPR when the curve stops before ``k``); ``tpr_at_fp_continuous`` the same
        for the continuous score; ``roc``: ``[[fp, tpr], ...]`` by increasing FP; ``faces``, ``images``,
        ``detections``, ``max_fp``, ``missing_predictions``, ``unknown_images``.
    """
    gt = load_fddb_ground_truth(gt_dir, folds)
    detections = dict(pred) if isinstance(pred, Mapping) else read_fddb_predictions(pred)
    detections = {name.removesuffix(".jpg"): np.asarray(rows, np.float64).reshape(-1, 5)
                  for name, rows in detections.items()}
    image_root = Path(image_dir) if image_dir is not None else None

    # Results::merge adds up, at each threshold, every image's result at its lowest score >= threshold; so
    # summing per-image increments from the highest score down gives the same curve
    increments = []
    faces = n_detections = missing = 0
    for name, ellipses in gt:
        faces += len(ellipses)
        dets = detections.get(name)
        if dets is None:
            missing += 1
            continue
        if len(dets) == 0:
            continue
        n_detections += len(dets)
        size = _image_size(image_root, name) if image_root is not None else None
        previous = (0, 0.0, 0)
        for score, tp, tp_cont, fp in _fddb_image(fddb_overlaps(ellipses, dets[:, :4], size), dets[:, 4]):
            increments.append((score, tp - previous[0], tp_cont - previous[1], fp - previous[2]))
            previous = (tp, tp_cont, fp)
    known = {name for name, _ in gt}
    unknown = sum(1 for name in detections if name not in known)

    roc = np.zeros((1, 4))  # (fp, tp, tp_cont, score); the first point is "no detection", score +inf
    roc[0, 3] = np.inf
    if increments:
        inc = np.array(increments)
        inc = inc[np.argsort(-inc[:, 0], kind="stable")]
        cumulative = np.cumsum(inc[:, 1:], axis=0)
        last_of_score = np.flatnonzero(np.append(inc[1:, 0] != inc[:-1, 0], True))
        points = np.column_stack([cumulative[last_of_score][:, [2, 0, 1]], inc[last_of_score, 0]])
        roc = np.vstack([roc, points])
    fp, tpr, tpr_cont = roc[:, 0], roc[:, 1] / max(faces, 1), roc[:, 2] / max(faces, 1)

    def at(curve: np.ndarray, k: int) -> float:
        return float(curve[fp <= k].max())

    keep = np.unique(np.linspace(0, len(roc) - 1, min(roc_points, len(roc))).round().astype(int))
    return {
        "tpr_at_fp": {str(k): at(tpr, k) for k in fp_points},
        "tpr_at_fp_continuous": {str(k): at(tpr_cont, k) for k in fp_points},
        "roc": [[int(fp[i]), round(float(tpr[i]), 6)] for i in keep],
        "faces": faces, "images": len(gt), "detections": n_detections, "max_fp": int(fp.max()),
        "missing_predictions": missing, "unknown_images": unknown,
    }
