"""dlib's 43 annotated example faces: a detector's recall and IoU, and its five landmarks against dlib's 68-point
shapes (normalised mean error)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...core.boxes import box_iou
from ...core.data import data_root
from ..annotations import five_points_from_ibug, read_imglab
from .predictions import _Detector


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
