"""Face-detection benchmarks: WIDER FACE val AP, FDDB discrete ROC, and dlib's example faces.

* `evaluate_widerface` re-implements the official WIDER FACE ``eval_tools`` (``wider_eval.m`` and its helpers
  ``read_pred.m``, ``norm_score.m``, ``image_evaluation``, ``image_pr_info``, ``dataset_pr_info``, ``VOCap``;
  Yang et al., "WIDER FACE: A Face Detection Benchmark", CVPR 2016).
* `evaluate_fddb` re-implements FDDB's ``evaluate`` program (``evaluate.cpp``, ``Matching.cpp``,
  ``Results.cpp``; Jain and Learned-Miller, "FDDB: A Benchmark for Face Detection in Unconstrained Settings",
  UMass UM-CS-2010-009), without needing the images.
* `evaluate_dlib_examples` runs a detector on dlib's 43 annotated example faces and scores boxes and the five
  landmarks against dlib's 68-point shapes.

The writers produce the files those protocols read from `MTCNN.detect` output. ``docs/mtcnn_evaluation.md``
lists the formats and every deviation from the original tools.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image
from scipy.io import loadmat
from scipy.optimize import linear_sum_assignment

from ..core.boxes import box_iou
from ..core.data import data_root
from .annotations import five_points_from_ibug, read_imglab

WIDER_SETTINGS = ("easy", "medium", "hard")
WIDER_THRESHOLDS = 1000  # score thresholds of the official PR curve
FDDB_FOLDS = tuple(range(1, 11))


class _FaceLike(Protocol):
    box: np.ndarray
    score: float


class _Detector(Protocol):
    def detect(self, images: list) -> Any: ...


# ------------------------------------------------------------------------------------------------------------
# prediction files
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


# ------------------------------------------------------------------------------------------------------------
# WIDER FACE
class WiderGroundTruth:
    """``wider_face_val.mat`` boxes ``[x, y, w, h]`` per event and image, and per setting the 0-based indices
    of the faces that count (``gt_list`` of ``wider_<setting>_val.mat``; the other faces are ignored)."""

    def __init__(self, gt_dir: Path):
        mats = {}
        mat_names = {"all": "wider_face_val.mat"} | {s: f"wider_{s}_val.mat" for s in WIDER_SETTINGS}
        for key, name in mat_names.items():
            if not (gt_dir / name).is_file():
                raise FileNotFoundError(f"WIDER FACE ground truth file not found: {gt_dir / name}")
            mats[key] = loadmat(gt_dir / name)
        gt = mats["all"]
        self.events: list[str] = [str(e[0][0]) for e in gt["event_list"]]
        self.images: list[list[str]] = [[str(f[0][0]) for f in files[0]] for files in gt["file_list"]]
        self.boxes: list[list[np.ndarray]] = [[np.asarray(b[0], np.float64).reshape(-1, 4) for b in boxes[0]]
                                              for boxes in gt["face_bbx_list"]]
        self.keep: dict[str, list[list[np.ndarray]]] = {
            s: [[np.asarray(k[0], np.int64).ravel() - 1 for k in event[0]] for event in mats[s]["gt_list"]]
            for s in WIDER_SETTINGS}


@functools.lru_cache(maxsize=4)
def _load_wider_gt(gt_dir: str) -> WiderGroundTruth:
    return WiderGroundTruth(Path(gt_dir))


def load_widerface_ground_truth(gt_dir: str | Path | None = None) -> WiderGroundTruth:
    """The WIDER FACE val ground truth (cached per folder); default folder
    ``<data>/face_benchmark_annotations/wider_face_val``."""
    gt_dir = Path(gt_dir) if gt_dir is not None else data_root() / "face_benchmark_annotations/wider_face_val"
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"WIDER FACE ground truth folder not found: {gt_dir}")
    return _load_wider_gt(str(gt_dir.resolve()))


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]])


def _overlaps_inclusive(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``[x1, y1, x2, y2]`` boxes with the official ``boxoverlap.m`` convention: inclusive pixel
    coordinates, so widths are ``x2 - x1 + 1``; no overlap where the intersection is empty."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = inter / (area_a[:, None] + area_b[None, :] - inter)
    overlap[(iw <= 0) | (ih <= 0) | ~np.isfinite(overlap)] = 0
    return overlap


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """``VOCap``: area under the precision envelope, summed where recall changes. ``fmax`` because MATLAB's
    ``max`` skips the NaN precision (0 / 0) of thresholds above every score."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def _wider_predictions(pred_dir: str | Path | Mapping, gt: WiderGroundTruth,
                       events: list[int]) -> tuple[dict[tuple[int, int], np.ndarray], int]:
    """Predictions ``{(event, image): [N, 5]}`` for the evaluated events, and how many images had none."""
    found: dict[tuple[int, int], np.ndarray] = {}
    missing = 0
    if isinstance(pred_dir, Mapping):
        for i in events:
            per_event = pred_dir.get(gt.events[i], {})
            for j, image in enumerate(gt.images[i]):
                if image in per_event:
                    found[i, j] = np.asarray(per_event[image], np.float64).reshape(-1, 5)
                else:
                    missing += 1
        return found, missing
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"WIDER FACE prediction folder not found: {root}")
    for i in events:
        for j, image in enumerate(gt.images[i]):
            path = root / gt.events[i] / f"{image}.txt"
            if path.is_file():
                found[i, j] = _read_widerface_file(path)
            else:
                missing += 1  # read_pred.m: no file, no detections
    return found, missing


def evaluate_widerface(pred_dir: str | Path | Mapping[str, Mapping[str, Any]],
                       gt_dir: str | Path | None = None, iou_threshold: float = 0.5,
                       events: Iterable[str] | None = None) -> dict:
    """WIDER FACE val average precision on the easy, medium and hard settings, as the official ``eval_tools``.

    Protocol (``wider_eval.m``): scores are min-max normalised over all predictions of all images; each
    image's predictions are sorted by score, and each one in turn takes the ground-truth face of largest IoU
    (boxes ``x y w h`` with the inclusive ``+1`` pixel areas of ``boxoverlap.m``); at IoU >= ``iou_threshold``
    a face outside the setting's ``gt_list`` makes the prediction "ignored" (neither true nor false positive),
    a counted face is recalled once (later hits are false positives). At 1000 thresholds ``1 - t / 1000`` the
    recalled faces and non-ignored predictions are summed over images; precision is their ratio, recall is
    over all of the setting's faces, and AP is the VOC area under the precision envelope. As the official
    code, images without ground-truth boxes are skipped (their detections cost nothing).

    Args:
        pred_dir: the submission folder, ``<event>/<image>.txt`` files of image name, count and
            ``x y w h score`` lines (see `write_widerface_predictions`); or a mapping
            ``{event: {image: [N, 5] x, y, w, h, score}}``. A missing file means no detections (counted in
            ``missing_predictions``).
        gt_dir: folder with ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``; default the
            shared data's ``face_benchmark_annotations/wider_face_val``.
        iou_threshold: overlap for a match (0.5 in the benchmark).
        events: evaluate only these events (e.g. ``"0--Parade"``); faces of other events are not counted.

    Returns:
        ``{"easy", "medium", "hard"}``: AP in [0, 1]; ``faces_<setting>``: faces counted; ``images``:
        images evaluated; ``missing_predictions``: of those, images without predictions; ``iou_threshold``.

    One deviation: when every prediction has the same score the official normalisation divides by zero and
    drops every prediction; here all scores become 1.
    """
    gt = load_widerface_ground_truth(gt_dir)
    if events is None:
        event_ids = list(range(len(gt.events)))
    else:
        wanted = list(events)
        unknown = sorted(set(wanted) - set(gt.events))
        if unknown:
            raise ValueError(f"unknown WIDER FACE events {unknown}; events look like {gt.events[0]!r}")
        event_ids = [i for i, e in enumerate(gt.events) if e in set(wanted)]
    preds, missing = _wider_predictions(pred_dir, gt, event_ids)

    # norm_score.m: one min-max over every prediction of the evaluated images
    scores = np.concatenate([p[:, 4] for p in preds.values()] + [np.zeros(0)])
    low, high = (scores.min(), scores.max()) if len(scores) else (0.0, 1.0)

    thresholds = 1 - np.arange(1, WIDER_THRESHOLDS + 1) / WIDER_THRESHOLDS
    proposals = {s: np.zeros(WIDER_THRESHOLDS) for s in WIDER_SETTINGS}
    recalled = {s: np.zeros(WIDER_THRESHOLDS) for s in WIDER_SETTINGS}
    face_counts = dict.fromkeys(WIDER_SETTINGS, 0)
    images = 0
    for i in event_ids:
        for j in range(len(gt.images[i])):
            images += 1
            for s in WIDER_SETTINGS:
                face_counts[s] += len(gt.keep[s][i][j])
            pred, boxes = preds.get((i, j)), gt.boxes[i][j]
            if pred is None or len(pred) == 0 or len(boxes) == 0:
                continue
            pred = pred[np.argsort(-pred[:, 4], kind="stable")]  # read_pred.m sorts each image by score
            norm = (pred[:, 4] - low) / (high - low) if high > low else np.ones(len(pred))
            overlaps = _overlaps_inclusive(_xywh_to_xyxy(pred), _xywh_to_xyxy(boxes))
            best = overlaps.argmax(1)  # first of equal maxima, as MATLAB's max
            hit = overlaps[np.arange(len(pred)), best] >= iou_threshold
            # image_pr_info: at threshold t, the predictions ranked up to the last one scoring >= t
            n_above = np.searchsorted(-norm, -thresholds, side="right")
            last = np.maximum(n_above - 1, 0)
            for s in WIDER_SETTINGS:
                counts = np.zeros(len(boxes), bool)
                counts[gt.keep[s][i][j]] = True
                proposal = ~(hit & ~counts[best])  # a hit on an ignored face is no proposal
                good = np.flatnonzero(hit & counts[best])
                first = np.zeros(len(pred), np.int64)  # each counted face is recalled by its first hit only
                first[good[np.unique(best[good], return_index=True)[1]]] = 1
                proposals[s] += np.where(n_above > 0, np.cumsum(proposal)[last], 0)
                recalled[s] += np.where(n_above > 0, np.cumsum(first)[last], 0)

    result: dict[str, Any] = {}
    for s in WIDER_SETTINGS:
        if face_counts[s] == 0:
            result[s] = float("nan")
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalled[s] / proposals[s]
        result[s] = _voc_ap(recalled[s] / face_counts[s], precision)
    result.update({f"faces_{s}": face_counts[s] for s in WIDER_SETTINGS})
    result.update(images=images, missing_predictions=missing, iou_threshold=float(iou_threshold))
    return result


# ------------------------------------------------------------------------------------------------------------
# FDDB
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


# ------------------------------------------------------------------------------------------------------------
# dlib examples
def _greedy(allowed: np.ndarray, priority: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one pairs (gt, det) among ``allowed``, taken greedily by descending ``priority``."""
    pairs, used_g, used_d = [], set(), set()
    gs, ds = np.nonzero(allowed)
    for k in np.argsort(-priority[gs, ds], kind="stable"):
        g, d = int(gs[k]), int(ds[k])
        if g not in used_g and d not in used_d:
            pairs.append((g, d))
            used_g.add(g)
            used_d.add(d)
    return pairs


def _mean(values: Sequence[float] | np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _median(values: Sequence[float] | np.ndarray) -> float:
    return float(np.median(values)) if len(values) else math.nan


def evaluate_dlib_examples(detector: _Detector, data_dir: str | Path | None = None,
                           iou_threshold: float = 0.5, failure_nme: float = 0.1) -> dict:
    """Detection and five-point landmark accuracy on dlib's example faces (``training.xml`` + ``testing.xml``,
    43 faces in 9 PASCAL VOC photos; landmarks from the ``*_with_face_landmarks.xml`` twins).

    Detection: faces and detections are matched one-to-one, greedily by IoU (pairs with IoU >=
    ``iou_threshold``); ``recall`` is matched faces over faces, ``mean_iou`` the mean IoU of the matches,
    ``false_positives`` the unmatched detections. Box-convention caveat: dlib's boxes are squares spanning
    about brows to chin, MTCNN's are taller rectangles (forehead to chin, a little narrower: about 0.9x the
    width and 1.2x the height of dlib's on these photos), so the convention alone caps IoU near 0.75 for a
    well-placed detection and ``recall`` at IoU 0.5 can understate detection. ``recall_center`` /
    ``false_positives_center`` use a criterion blind to box size: a detection whose centre lies inside the
    face box, matched greedily by centre distance; ``median_width_ratio`` / ``median_height_ratio``
    (detection over face box, IoU matches) show the convention gap.

    Landmarks: the reference five points are derived from the 68 points (`five_points_from_ibug`; note dlib's
    68 points are themselves the output of dlib's ``shape_predictor_68_face_landmarks`` model, not manual
    labels). For each face matched by the centre criterion, NME is the mean point-to-point distance over the
    five points divided by the distance between the two reference eye centres; reported as ``nme_mean``,
    ``nme_median`` and ``nme_failure_rate`` (share with NME > ``failure_nme``) over ``nme_faces`` faces.

    Args:
        detector: anything with ``detect(list_of_paths) -> list[list[Face]]``, e.g. `keenvision.mtcnn.MTCNN`.
        data_dir: the ``faces_dlib_examples`` folder; default the shared data's.
        iou_threshold: IoU for a detection match.
        failure_nme: NME above which a face's landmarks count as failed.
    """
    data_dir = Path(data_dir) if data_dir is not None else data_root() / "faces_dlib_examples"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"dlib examples folder not found: {data_dir}")
    boxes: dict[str, list[dict]] = {}
    shapes: dict[str, list[dict]] = {}
    for split in ("training", "testing"):
        for name, faces in read_imglab(data_dir / f"{split}.xml").items():
            boxes.setdefault(name, []).extend(faces)
        for name, faces in read_imglab(data_dir / f"{split}_with_face_landmarks.xml").items():
            shapes.setdefault(name, []).extend(faces)
    names = sorted(boxes)
    results = detector.detect([str(data_dir / name) for name in names])

    n_faces = n_dets = fp = fp_center = matched = matched_center = 0
    ious, size_ratios, nmes = [], [], []
    for name, found in zip(names, results):
        faces = boxes[name]
        gt = np.array([f["box"] for f in faces]).reshape(-1, 4)
        counted = np.array([not f["ignore"] for f in faces], bool)
        det = np.array([np.asarray(d.box, np.float64)[:4] for d in found]).reshape(-1, 4)
        n_faces += int(counted.sum())
        n_dets += len(det)

        iou = box_iou(gt, det)
        pairs = _greedy(iou >= iou_threshold, iou)
        hits = [(g, d) for g, d in pairs if counted[g]]
        matched += len(hits)
        ious += [iou[g, d] for g, d in hits]
        size_ratios += [(det[d, 2:] - det[d, :2]) / (gt[g, 2:] - gt[g, :2]) for g, d in hits]
        fp += len(det) - len(pairs)  # a detection on an ignored face is no false positive

        centers = (det[:, :2] + det[:, 2:]) / 2
        inside = ((centers[None, :, 0] >= gt[:, None, 0]) & (centers[None, :, 0] < gt[:, None, 2])
                  & (centers[None, :, 1] >= gt[:, None, 1]) & (centers[None, :, 1] < gt[:, None, 3]))
        distance = np.linalg.norm(centers[None, :, :] - (gt[:, None, :2] + gt[:, None, 2:]) / 2, axis=-1)
        pairs = _greedy(inside, -distance)
        fp_center += len(det) - len(pairs)
        for g, d in pairs:
            if not counted[g]:
                continue
            matched_center += 1
            # the landmark files repeat the boxes, a few nudged by some pixels: take the best-overlapping one
            shaped = [s for s in shapes.get(name, []) if s["parts"] is not None and len(s["parts"]) == 68]
            overlap = box_iou(gt[g : g + 1], np.array([s["box"] for s in shaped]).reshape(-1, 4))[0]
            if not len(shaped) or overlap.max() < 0.5:
                continue
            reference = five_points_from_ibug(shaped[int(overlap.argmax())]["parts"])
            error = np.linalg.norm(np.asarray(found[d].landmarks, np.float64) - reference, axis=1).mean()
            nmes.append(error / np.linalg.norm(reference[1] - reference[0]))

    nme = np.array(nmes)
    ratios = np.array(size_ratios).reshape(-1, 2)
    return {
        "images": len(names), "faces": n_faces, "detections": n_dets, "iou_threshold": float(iou_threshold),
        "matched": matched, "recall": matched / max(n_faces, 1), "mean_iou": _mean(ious),
        "false_positives": fp, "median_width_ratio": _median(ratios[:, 0]),
        "median_height_ratio": _median(ratios[:, 1]),
        "recall_center": matched_center / max(n_faces, 1), "false_positives_center": fp_center,
        "nme_faces": len(nme), "nme_mean": _mean(nme), "nme_median": _median(nme),
        "nme_failure_rate": _mean(nme > failure_nme),
    }
