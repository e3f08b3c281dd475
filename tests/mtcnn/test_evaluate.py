"""The benchmark evaluators on the real WIDER FACE / FDDB ground truth and dlib's example faces.

Predictions are built from the ground truth itself, so every expected number is derived, not measured."""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest

from keenvision.mtcnn import Face
from keenvision.mtcnn.annotations import five_points_from_ibug, read_imglab
from keenvision.mtcnn.evaluate import (
    evaluate_dlib_examples,
    evaluate_fddb,
    evaluate_widerface,
    fddb_overlaps,
    load_fddb_ground_truth,
    load_widerface_ground_truth,
    read_fddb_predictions,
    write_fddb_predictions,
    write_widerface_predictions,
)


# ------------------------------------------------------------------------------------------------------------
# WIDER FACE
@pytest.fixture(scope="module")
def wider(data_dir):
    gt_dir = data_dir / "face_benchmark_annotations" / "wider_face_val"
    return gt_dir, load_widerface_ground_truth(gt_dir)


def _wider_predictions(gt, select=lambda i, j, boxes: np.arange(len(boxes)), score=1.0):
    """{event: {image: [N, 5]}} with the selected ground-truth boxes as detections."""
    out = {}
    for i, event in enumerate(gt.events):
        out[event] = {}
        for j, (image, boxes) in enumerate(zip(gt.images[i], gt.boxes[i])):
            chosen = boxes[select(i, j, boxes)]
            out[event][image] = np.column_stack([chosen, np.full(len(chosen), score)])
    return out


def _recoverable(boxes):
    """Faces an exact copy of their box can recall: a box with negative width overlaps nothing under the
    inclusive +1 convention, and of two identical boxes the first takes every hit."""
    ok = (boxes[:, 2] >= 0) & (boxes[:, 3] >= 0)
    _, first = np.unique(boxes, axis=0, return_index=True)
    unique = np.zeros(len(boxes), bool)
    unique[first] = True
    return ok & unique


def test_widerface_perfect_predictions(wider):
    gt_dir, gt = wider
    result = evaluate_widerface(_wider_predictions(gt), gt_dir)
    assert (result["faces_easy"], result["faces_medium"], result["faces_hard"]) == (7211, 13319, 31958)
    assert result["images"] == 3226 and result["missing_predictions"] == 0
    # Exact copies fall short of 1 only where the protocol cannot score them: one box (39--Ice_Skating) has
    # width -2, so its copy overlaps nothing and is a false positive in every setting (and a missed hard
    # face); one hard face (21--Festival) is annotated twice, so the second copy is a false positive and a
    # miss.
    assert result["easy"] == pytest.approx(7211 / 7212, abs=1e-12)
    assert result["medium"] == pytest.approx(13319 / 13320, abs=1e-12)
    assert result["hard"] == pytest.approx((31956 / 31958) ** 2, abs=1e-12)


def test_widerface_recoverable_faces_give_ap_one(wider):
    gt_dir, gt = wider
    preds = _wider_predictions(gt, lambda i, j, b: np.flatnonzero(_recoverable(b)))
    result = evaluate_widerface(preds, gt_dir)
    assert result["easy"] == result["medium"] == 1.0
    assert result["hard"] == pytest.approx(31956 / 31958, abs=1e-12)  # precision 1, two faces unreachable


def test_widerface_no_predictions(wider, tmp_path):
    gt_dir, gt = wider
    for pred in ({}, tmp_path):  # mapping and (empty) submission folder
        result = evaluate_widerface(pred, gt_dir)
        assert result["easy"] == result["medium"] == result["hard"] == 0.0
        assert result["missing_predictions"] == result["images"] == 3226


def test_widerface_half_of_the_faces(wider):
    gt_dir, gt = wider
    # every other face of every image; with one score the PR curve is a single point (recall, precision 1)
    select = lambda i, j, b: np.flatnonzero(_recoverable(b) & (np.arange(len(b)) % 2 == 0))  # noqa: E731
    result = evaluate_widerface(_wider_predictions(gt, select), gt_dir)
    for setting in ("easy", "medium", "hard"):
        found = sum(np.isin(gt.keep[setting][i][j], select(i, j, gt.boxes[i][j])).sum()
                    for i in range(len(gt.events)) for j in range(len(gt.images[i])))
        assert result[setting] == pytest.approx(found / result[f"faces_{setting}"], abs=1e-12)
        assert 0.3 < result[setting] < 0.7


def test_widerface_boxes_below_the_iou_threshold(wider):
    gt_dir, gt = wider

    def shrunk(score):  # half-size boxes about the same centre: IoU about 0.25 with their own face
        preds = _wider_predictions(gt, lambda i, j, b: np.flatnonzero(_recoverable(b)), score)
        for images in preds.values():
            for rows in images.values():
                rows[:, :2] += rows[:, 2:4] / 4
                rows[:, 2:4] /= 2
        return preds

    result = evaluate_widerface(shrunk(1.0), gt_dir, iou_threshold=0.5)
    assert result["easy"] == result["medium"] == result["hard"] == 0.0
    assert evaluate_widerface(shrunk(1.0), gt_dir, iou_threshold=0.1)["easy"] > 0.9


def test_widerface_subset_of_events_from_files(wider, tmp_path):
    gt_dir, gt = wider
    events = ["1--Handshaking", "3--Riot", "4--Dancing"]
    n_images = 0
    for event in events:
        i = gt.events.index(event)
        for image, boxes in zip(gt.images[i], gt.boxes[i]):
            scores = np.linspace(1, 0.9, len(boxes))
            xyxy = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4], scores])
            write_widerface_predictions(tmp_path, event, image + ".jpg", xyxy)
            n_images += 1
    result = evaluate_widerface(tmp_path, gt_dir, events=events)
    assert result["images"] == n_images and result["missing_predictions"] == 0
    assert result["easy"] == result["medium"] == result["hard"] == 1.0

    # over all events the other images are missing, so AP is the share of faces in these events
    result = evaluate_widerface(tmp_path, gt_dir)
    assert result["missing_predictions"] == 3226 - n_images
    for setting in ("easy", "medium", "hard"):
        share = sum(len(k) for e in events for k in gt.keep[setting][gt.events.index(e)])
        assert result[setting] == pytest.approx(share / result[f"faces_{setting}"], abs=1e-12)


def _reference_widerface_ap(preds, gt, events, setting, iou_threshold=0.5):
    """The official algorithm written as plainly as the MATLAB: a loop per prediction and per threshold."""
    scores = [s for e in events for rows in preds[e].values() for s in rows[:, 4]]
    low, high = min(scores), max(scores)
    curve = np.zeros((1000, 2))
    count_face = 0
    for event in events:
        i = gt.events.index(event)
        for j, image in enumerate(gt.images[i]):
            keep = gt.keep[setting][i][j]
            count_face += len(keep)
            pred, boxes = preds[event][image], gt.boxes[i][j]
            if len(pred) == 0 or len(boxes) == 0:
                continue
            pred = pred[np.argsort(-pred[:, 4], kind="stable")]
            norm = list((pred[:, 4] - low) / (high - low))
            recall_list, proposal, pred_recall = np.zeros(len(boxes)), np.ones(len(pred)), np.zeros(len(pred))
            for h, (x, y, w, hh, _) in enumerate(pred):
                best, best_iou = 0, -1.0
                for g, (gx, gy, gw, gh) in enumerate(boxes):
                    iw = min(x + w, gx + gw) - max(x, gx) + 1
                    ih = min(y + hh, gy + gh) - max(y, gy) + 1
                    union = (w + 1) * (hh + 1) + (gw + 1) * (gh + 1) - iw * ih
                    iou = 0.0 if iw <= 0 or ih <= 0 else iw * ih / union
                    if iou > best_iou:
                        best, best_iou = g, iou
                if best_iou >= iou_threshold:
                    if best not in keep:
                        recall_list[best], proposal[h] = -1, -1
                    elif recall_list[best] == 0:
                        recall_list[best] = 1
                pred_recall[h] = np.sum(recall_list == 1)
            descending = [-s for s in norm]
            for t in range(1000):
                last = bisect.bisect_right(descending, -(1 - (t + 1) / 1000)) - 1
                if last >= 0:
                    curve[t] += [np.sum(proposal[: last + 1] == 1), pred_recall[last]]
    precision = np.divide(curve[:, 1], curve[:, 0], out=np.zeros(1000), where=curve[:, 0] > 0)
    recall = curve[:, 1] / count_face
    mrec, mpre = np.r_[0, recall, 1], np.r_[0, precision, 0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    changes = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def test_widerface_matches_a_plain_reimplementation(wider):
    gt_dir, gt = wider
    rng = np.random.default_rng(0)
    events = ["11--Meeting", "14--Traffic"]
    preds = {}
    for event in events:
        i = gt.events.index(event)
        preds[event] = {}
        for image, boxes in zip(gt.images[i], gt.boxes[i]):
            found = boxes[rng.random(len(boxes)) < 0.7]  # some faces missed
            jitter = found + rng.normal(0, 0.15, found.shape) * found[:, [2, 3, 2, 3]]  # some IoU < 0.5
            noise = np.column_stack([rng.uniform(0, 800, (3, 2)), rng.uniform(5, 80, (3, 2))])
            rows = np.vstack([jitter, noise, found[:2]])  # plus false positives and duplicates
            preds[event][image] = np.column_stack([rows, rng.uniform(0.2, 0.99, len(rows))])
    result = evaluate_widerface(preds, gt_dir, events=events)
    for setting in ("easy", "medium", "hard"):
        expected = _reference_widerface_ap(preds, gt, events, setting)
        assert 0.1 < expected < 0.95
        assert result[setting] == pytest.approx(expected, abs=1e-12)
    # scores only matter through their min-max normalised ranks
    rescaled = {e: {k: np.column_stack([v[:, :4], 7 * v[:, 4] - 3]) for k, v in p.items()}
                for e, p in preds.items()}
    again = evaluate_widerface(rescaled, gt_dir, events=events)
    for setting in ("easy", "medium", "hard"):
        assert again[setting] == pytest.approx(result[setting], abs=1e-12)


def test_widerface_errors(wider, tmp_path):
    gt_dir, _ = wider
    with pytest.raises(FileNotFoundError, match="ground truth folder"):
        evaluate_widerface({}, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown WIDER FACE events"):
        evaluate_widerface({}, gt_dir, events=["Parade"])
    bad = tmp_path / "0--Parade" / "0_Parade_marchingband_1_465.txt"
    bad.parent.mkdir()
    bad.write_text("0_Parade_marchingband_1_465\n2\n1 2 3 4 0.9\n1 2 three 4 0.8\n")
    with pytest.raises(ValueError, match=r"0_Parade_marchingband_1_465\.txt:4: expected 'left top width"):
        evaluate_widerface(tmp_path, gt_dir, events=["0--Parade"])
    bad.write_text("0_Parade_marchingband_1_465\n1\n1 2 3 4 0.9\n1 2 3 4 0.8\n")
    with pytest.raises(ValueError, match=r"\.txt:4: more boxes than the count"):
        evaluate_widerface(tmp_path, gt_dir, events=["0--Parade"])
    bad.write_text("0_Parade_marchingband_1_465\nmany\n")
    with pytest.raises(ValueError, match=r"\.txt:2: expected the number of boxes"):
        evaluate_widerface(tmp_path, gt_dir, events=["0--Parade"])


def test_widerface_writer_takes_faces(tmp_path):
    face = Face(box=np.array([10.0, 20.0, 50.0, 70.0]), score=0.99999994, landmarks=np.zeros((5, 2)))
    path = write_widerface_predictions(tmp_path, "0--Parade", "img.jpg", [face])
    assert path == tmp_path / "0--Parade" / "img.txt"
    assert path.read_text().splitlines() == ["img", "1", "10.000 20.000 40.000 50.000 0.99999994"]


# ------------------------------------------------------------------------------------------------------------
# FDDB
@pytest.fixture(scope="module")
def fddb(data_dir):
    gt_dir = data_dir / "face_benchmark_annotations" / "fddb_folds"
    return gt_dir, load_fddb_ground_truth(gt_dir)


def _bounding_rectangles(ellipses, score=1.0):
    """The axis-aligned rectangle around each rotated ellipse, as ``left top width height score``."""
    major, minor, angle, cx, cy = ellipses.T
    half_w = np.hypot(major * np.cos(angle), minor * np.sin(angle))
    half_h = np.hypot(major * np.sin(angle), minor * np.cos(angle))
    return np.column_stack([cx - half_w, cy - half_h, 2 * half_w, 2 * half_h, np.full(len(ellipses), score)])


def test_fddb_ground_truth(fddb):
    _, gt = fddb
    assert len(gt) == 2845 and sum(len(e) for _, e in gt) == 5171
    assert gt[0][0] == "2002/08/11/big/img_591" and gt[0][1][0] == pytest.approx([123.5833, 85.5495, 1.265839,
                                                                                   269.6934, 161.7812])


def test_fddb_overlap_ratio():
    circle = np.array([[50, 50, 0.0, 100, 100]])
    # a disc against its bounding square: pi / 4 up to the rasterisation
    assert fddb_overlaps(circle, np.array([[50, 50, 100, 100]]))[0, 0] == pytest.approx(math.pi / 4, abs=0.01)
    assert fddb_overlaps(circle, np.array([[50, 50, 10, 10]]))[0, 0] == 0.0
    # a disc centred on the image's left edge and the square around its right half: clipping to the image
    # drops the left half, so the ratio is pi / 4 again; unclipped the left half joins the union
    edge = np.array([[50, 50, 0.0, 0, 100]])
    right_half = np.array([[0, 50, 50, 100]])
    clipped = fddb_overlaps(edge, right_half, image_size=(200, 200))[0, 0]
    assert clipped == pytest.approx(math.pi / 4, abs=0.01)
    unclipped = (math.pi * 2500 / 2) / (math.pi * 2500 / 2 + 5000)
    assert fddb_overlaps(edge, right_half)[0, 0] == pytest.approx(unclipped, abs=0.01)


def test_fddb_bounding_rectangles_are_all_found(fddb):
    gt_dir, gt = fddb
    result = evaluate_fddb({name: _bounding_rectangles(e) for name, e in gt}, gt_dir)
    assert result["faces"] == 5171 and result["images"] == 2845 and result["detections"] == 5171
    assert result["max_fp"] == 0 and result["tpr_at_fp"] == {"500": 1.0, "1000": 1.0, "2000": 1.0}
    assert result["roc"] == [[0, 0.0], [0, 1.0]]
    assert 0.7 < result["tpr_at_fp_continuous"]["500"] < 0.8  # mean overlap of an ellipse with its box


def test_fddb_false_positives_are_counted_exactly(fddb):
    gt_dir, _ = fddb
    folds = [1, 2, 3]
    gt = load_fddb_ground_truth(gt_dir, folds)
    k = 1200
    preds = {name: _bounding_rectangles(e) for name, e in gt}
    # k spurious boxes far left of every image, with distinct scores below the true detections'
    for n in range(k):
        name = gt[n % len(gt)][0]
        spurious = [-1000.0 - 60 * n, 10, 40, 40, 0.5 - n * 1e-4]
        preds[name] = np.vstack([preds[name], spurious])
    result = evaluate_fddb(preds, gt_dir, folds, roc_points=10_000)
    assert result["max_fp"] == k
    assert [fp for fp, _ in result["roc"]] == [0, 0, *range(1, k + 1)]
    assert all(tpr == 1.0 for _, tpr in result["roc"][1:])

    # ranked above the faces instead, the spurious boxes come first: no TPR until all k are in
    for rows in preds.values():
        rows[rows[:, 4] < 0.6, 4] += 1
    result = evaluate_fddb(preds, gt_dir, folds)
    assert result["tpr_at_fp"] == {"500": 0.0, "1000": 0.0, "2000": 1.0}


def test_fddb_matching_is_one_to_one(fddb):
    gt_dir, gt = fddb
    # each face detected twice: the second copies (lower score) are all false positives
    preds = {name: np.vstack([_bounding_rectangles(e), _bounding_rectangles(e, 0.5)]) for name, e in gt}
    result = evaluate_fddb(preds, gt_dir)
    assert result["roc"][-1] == [5171, 1.0] and result["tpr_at_fp"]["2000"] == 1.0


def test_fddb_no_or_misplaced_detections(fddb):
    gt_dir, gt = fddb
    result = evaluate_fddb({}, gt_dir)
    assert result["tpr_at_fp"] == {"500": 0.0, "1000": 0.0, "2000": 0.0}
    assert result["missing_predictions"] == 2845 and result["roc"] == [[0, 0.0]]
    # moved sideways by 0.6 of their width the boxes overlap their face by about 0.2; only single-face images,
    # as in group photos a moved box can land on the neighbour
    shifted = {name: _bounding_rectangles(e) for name, e in gt if len(e) == 1}
    for rows in shifted.values():
        rows[:, 0] += 0.6 * rows[:, 2]
    result = evaluate_fddb(shifted, gt_dir)
    assert result["roc"][-1] == [len(shifted), 0.0] and result["missing_predictions"] == 2845 - len(shifted)


def test_fddb_detection_files(fddb, tmp_path):
    gt_dir, gt = fddb
    for fold in (1, 2):
        fold_gt = load_fddb_ground_truth(gt_dir, [fold])
        faces = [(name + ".jpg", np.column_stack([r[:, :2], r[:, :2] + r[:, 2:4], r[:, 4]]))
                 for name, e in fold_gt for r in [_bounding_rectangles(e, 0.9)]]
        write_fddb_predictions(tmp_path / f"fold-{fold:02d}-out.txt", faces)
    assert len(read_fddb_predictions(tmp_path)) == len(load_fddb_ground_truth(gt_dir, [1, 2]))
    result = evaluate_fddb(tmp_path, gt_dir, folds=[1, 2])
    assert result["tpr_at_fp"]["500"] == 1.0 and result["missing_predictions"] == 0
    result = evaluate_fddb(tmp_path / "fold-01-out.txt", gt_dir, folds=[1, 3])
    assert result["missing_predictions"] == len(load_fddb_ground_truth(gt_dir, [3]))
    bad = tmp_path / "bad.txt"
    bad.write_text("2002/08/11/big/img_591\n2\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match=r"bad\.txt: ends after 1 of 2 boxes"):
        evaluate_fddb(bad, gt_dir)
    bad.write_text("2002/08/11/big/img_591\n1\n1 2 3 0.5\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: expected 'left top width height score'"):
        evaluate_fddb(bad, gt_dir)
    with pytest.raises(FileNotFoundError):
        evaluate_fddb(tmp_path / "none.txt", gt_dir)


# ------------------------------------------------------------------------------------------------------------
# dlib examples
class _Oracle:
    """Returns the annotated boxes and the reference five points, shifted by ``offset`` pixels."""

    def __init__(self, data_dir, offset=(0.0, 0.0)):
        self.shapes = {}
        for split in ("training", "testing"):
            self.shapes.update(read_imglab(data_dir / f"{split}_with_face_landmarks.xml"))
        self.offset = np.asarray(offset)

    def detect(self, paths):
        return [[Face(box=f["box"], score=1.0, landmarks=five_points_from_ibug(f["parts"]) + self.offset)
                 for f in self.shapes[path.rsplit("/", 1)[-1]]] for path in paths]


def test_dlib_examples_oracle(data_dir):
    folder = data_dir / "faces_dlib_examples"
    result = evaluate_dlib_examples(_Oracle(folder), folder)
    assert (result["images"], result["faces"], result["detections"]) == (9, 43, 43)
    assert result["recall"] == result["recall_center"] == 1.0 and result["false_positives"] == 0
    assert result["mean_iou"] > 0.95  # two landmark-file boxes differ from training.xml by a few pixels
    assert result["nme_faces"] == 43 and result["nme_mean"] == 0.0 and result["nme_failure_rate"] == 0.0

    # every point 5 px off: NME is 5 / inter-ocular distance per face
    result = evaluate_dlib_examples(_Oracle(folder, (3.0, 4.0)), folder)
    shapes = _Oracle(folder).shapes
    eyes = np.array([five_points_from_ibug(f["parts"])[:2] for faces in shapes.values() for f in faces])
    nme = 5 / np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=1)
    assert result["nme_mean"] == pytest.approx(nme.mean())
    assert result["nme_failure_rate"] == pytest.approx(np.mean(nme > 0.1))


def test_dlib_examples_mtcnn(data_dir, detector):
    result = evaluate_dlib_examples(detector, data_dir / "faces_dlib_examples")
    # measured on CPU: 42/43 found at IoU 0.5 (mean IoU 0.69), no false positives; NME mean 0.056, median
    # 0.053, 2/42 faces above 0.1
    assert result["faces"] == 43
    assert result["recall"] >= 0.95 and result["recall_center"] >= 0.95
    assert result["false_positives"] <= 2
    assert 0.6 < result["mean_iou"] < 0.8  # the box conventions differ (see evaluate_dlib_examples)
    assert result["nme_faces"] >= 41
    assert result["nme_mean"] < 0.07 and result["nme_median"] < 0.065 and result["nme_failure_rate"] <= 0.1
