"""WIDER FACE val AP (easy/medium/hard): the official ``eval_tools`` (``wider_eval.m`` and its helpers ``read_pred.m``,
``norm_score.m``, ``image_evaluation``, ``image_pr_info``, ``dataset_pr_info``, ``VOCap``; Yang et al., "WIDER FACE:
A Face Detection Benchmark", CVPR 2016) re-implemented."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from ...core.data import data_root
from .predictions import _read_widerface_file

WIDER_SETTINGS = ("easy", "medium", "hard")
WIDER_THRESHOLDS = 1000  # score thresholds of the official PR curve


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
