"""The MTCNN training recipe on real data: sample categories, losses, a few P-Net steps, resume, R-Net mining.

Training runs use dlib's example photos (and their 68-point landmarks reduced to 5) for a handful of steps only;
they check that the machinery runs and learns, never accuracy."""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from safetensors import safe_open
from torchvision.ops import box_iou as torchvision_box_iou

from keenvision.core.io import read_image
from keenvision.core.weights import load_weights
from keenvision.mtcnn import MTCNN
from keenvision.mtcnn.data import (
    LANDMARK,
    NEGATIVE,
    PART,
    POSITIVE,
    CropDataset,
    CropSettings,
    RatioSampler,
    Samples,
    dlib_xml_to_landmarks,
    dlib_xml_to_wider,
    label_by_iou,
    landmark_samples,
    mined_samples,
    random_crop_samples,
    read_landmark_faces,
    read_wider_boxes,
)
from keenvision.mtcnn.losses import (
    box_regression_loss,
    face_classification_loss,
    landmark_regression_loss,
    mtcnn_loss,
)
from keenvision.mtcnn.train import (
    StageModule,
    export_stage_weights,
    load_config,
    merge_stage_weights,
    train_from_config,
)

SMOKE_CONFIG = Path(__file__).parents[2] / "configs" / "mtcnn" / "smoke.yaml"


@pytest.fixture(scope="module")
def dlib_training_faces(data_dir, tmp_path_factory):
    """dlib's 4 training photos as WIDER boxes and 5-point faces, through the converters."""
    folder = data_dir / "faces_dlib_examples"
    out = tmp_path_factory.mktemp("dlib")
    images = read_wider_boxes(dlib_xml_to_wider(folder / "training.xml", out / "boxes.txt"), folder)
    faces = read_landmark_faces(dlib_xml_to_landmarks(folder / "training_with_face_landmarks.xml",
                                                      out / "landmarks.txt"), folder)
    return images, faces


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def _logged_train_steps(run_dir: Path, version: int) -> list[int]:
    with open(run_dir / "logs" / f"version_{version}" / "metrics.csv") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


# ------------------------------------------------------------------------------------------------------------
# annotations and samples
def test_dlib_xml_converts_to_wider_boxes_and_five_points(dlib_training_faces, data_dir):
    images, faces = dlib_training_faces
    assert [p.path.name for p in images] == ["2007_007763.jpg", "2008_002079.jpg", "2008_001009.jpg",
                                             "2008_001322.jpg"]
    assert sum(len(i.boxes) for i in images) == 18 and len(faces) == 18
    # <box top='90' left='194' width='37' height='37'/> -> edge box [194, 90, 231, 127]
    np.testing.assert_array_equal(images[0].boxes[0], [194, 90, 231, 127])
    np.testing.assert_array_equal(faces[0].box, [194, 90, 231, 127])
    first_box = ET.parse(data_dir / "faces_dlib_examples" / "training_with_face_landmarks.xml").find(".//box")
    first = {int(p.get("name")): (float(p.get("x")), float(p.get("y"))) for p in first_box.iter("part")}
    left_eye = np.mean([first[k] for k in range(36, 42)], axis=0) + 0.5
    np.testing.assert_allclose(faces[0].points[0], left_eye, atol=0.006)  # file keeps 2 decimals
    np.testing.assert_allclose(faces[0].points[3], np.array(first[48]) + 0.5, atol=0.006)
    for face in faces:  # image-left eye left of the image-right eye, mouth below the eyes
        assert face.points[0, 0] < face.points[1, 0] and face.points[3, 0] < face.points[4, 0]
        assert face.points[3:, 1].min() > face.points[:2, 1].max()


def test_random_crops_fall_in_their_iou_ranges(dlib_training_faces):
    images, _ = dlib_training_faces
    samples = random_crop_samples(images, 12, CropSettings(), np.random.default_rng(0))
    counts = samples.counts()
    assert counts["negative"] > 100 and counts["positive"] > 50 and counts["part"] > 50
    assert samples.crops.shape == (len(samples), 12, 12, 3) and samples.crops.dtype == np.uint8
    ground_truth = {str(i.path): torch.as_tensor(i.boxes) for i in images}
    for index in range(len(samples)):
        faces = ground_truth[samples.image_paths[samples.image_ids[index]]]
        box = torch.as_tensor(samples.crop_boxes[index], dtype=torch.float64)[None]
        assert box[0, 2] - box[0, 0] == box[0, 3] - box[0, 1]  # square crops
        iou = torchvision_box_iou(box, faces)[0]  # an independent IoU
        best = float(iou.max())
        label = samples.labels[index]
        if label == NEGATIVE:
            assert best < 0.3
            assert not samples.box_targets[index].any()
        else:
            assert label in (POSITIVE, PART)
            assert best > 0.65 if label == POSITIVE else 0.4 <= best <= 0.65
            # the box target turns the crop into the matched face: x1 + t1 * w, ..., as the detector calibrates
            side = float(box[0, 2] - box[0, 0])
            recovered = box[0].numpy() + samples.box_targets[index] * side
            np.testing.assert_allclose(recovered, faces[int(iou.argmax())].numpy(), atol=1e-3)


def test_landmark_targets_decode_to_the_annotated_points(dlib_training_faces):
    _, faces = dlib_training_faces
    samples = landmark_samples(faces, 48, CropSettings(landmark_crops_per_face=4), np.random.default_rng(1))
    assert samples.counts()["landmark"] == len(samples) >= len(faces)
    by_path_box = {(str(f.path), tuple(f.box)): f for f in faces}
    for index in range(len(samples)):
        crop = samples.crop_boxes[index].astype(np.float64)
        side = crop[2] - crop[0]
        targets = samples.landmark_targets[index]
        assert ((targets >= 0) & (targets <= 1)).all()
        # the detector's decoding (_stage_onet): x = x1 + w * p, y = y1 + h * p, x1..x5 then y1..y5
        decoded = np.stack([crop[0] + side * targets[:5], crop[1] + side * targets[5:]], axis=1)
        path = samples.image_paths[samples.image_ids[index]]
        matches = [f for (p, _), f in by_path_box.items() if p == path
                   and np.abs(f.points - decoded).max() < 1e-3]
        assert len(matches) == 1
        assert torchvision_box_iou(torch.as_tensor(crop)[None], torch.as_tensor(matches[0].box)[None]) > 0.65


def test_mined_samples_are_the_proposals_labelled_by_iou(dlib_training_faces, detector):
    images, _ = dlib_training_faces
    images = images[:2]
    pixels = [read_image(i.path).pixels for i in images]
    proposals = detector.propose(pixels, "pnet")
    samples = mined_samples(images, 24, detector, "pnet", np.random.default_rng(0), max_negatives_per_image=None)
    assert samples.mined.all() and samples.crops.shape[1:] == (24, 24, 3)
    assert samples.counts()["positive"] > 0 and samples.counts()["negative"] > 0
    expected = 0
    for faces, boxes in zip(images, proposals):
        labels = label_by_iou(torchvision_box_iou(torch.as_tensor(boxes[:, :4]), torch.as_tensor(faces.boxes))
                              .max(dim=1).values.numpy())
        expected += int((labels >= 0).sum())
        mine = np.array([samples.image_paths[k] for k in samples.image_ids]) == str(faces.path)
        # every mined crop is one of the proposals, with the label its IoU says
        for crop_box, label in zip(samples.crop_boxes[mine], samples.labels[mine]):
            row = np.flatnonzero((boxes[:, :4] == crop_box).all(axis=1))
            assert len(row) >= 1 and labels[row[0]] == label
    assert len(samples) == expected


def test_ratio_sampler_mixes_3_1_1_2_in_every_batch():
    labels = np.array([NEGATIVE] * 50 + [POSITIVE] * 7 + [PART] * 30 + [LANDMARK] * 40)
    sampler = RatioSampler(labels, 70, {"negative": 3, "positive": 1, "part": 1, "landmark": 2}, 5, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler) == 350
    for start in range(0, 350, 70):
        assert np.bincount(labels[order[start:start + 70]], minlength=4).tolist() == [30, 10, 10, 20]
    # a category with no samples drops out and the rest keep their proportions
    sampler = RatioSampler(labels[labels != PART], 60, {"negative": 3, "positive": 1, "part": 1, "landmark": 2}, 1)
    assert np.bincount(labels[labels != PART][list(sampler)], minlength=4).tolist() == [30, 10, 0, 20]


# ------------------------------------------------------------------------------------------------------------
# losses, hand-computed
def test_face_classification_loss_is_cross_entropy_on_negatives_and_positives():
    log3 = math.log(3.0)
    # positive with p(face) = 3/4, negative with p(face) = 1/4: both lose -log(3/4); part / landmark ignored
    logits = torch.tensor([[0.0, log3], [log3, 0.0], [5.0, -5.0], [-5.0, 5.0]])
    labels = torch.tensor([POSITIVE, NEGATIVE, PART, LANDMARK])
    loss = face_classification_loss(logits, labels, ohem_ratio=1.0)
    assert loss.item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_ohem_back_propagates_only_the_hardest_70_percent():
    # ten positives whose face logit margins make losses strictly increase with the index
    margins = torch.linspace(3.0, -1.5, 10)
    logits = torch.stack([torch.zeros(10), margins], dim=1).requires_grad_()
    labels = torch.full((10,), POSITIVE)
    loss = face_classification_loss(logits, labels, ohem_ratio=0.7)
    per_sample = torch.nn.functional.cross_entropy(logits.detach(), torch.ones(10, dtype=torch.long), reduction="none")
    assert loss.item() == pytest.approx(per_sample[3:].mean().item(), rel=1e-6)
    loss.backward()
    assert (logits.grad[:3] == 0).all()  # the easiest 30% get no gradient
    assert (logits.grad[3:].abs().sum(dim=1) > 0).all()


def test_box_and_landmark_losses_are_squared_l2_over_their_samples():
    labels = torch.tensor([POSITIVE, PART, NEGATIVE, LANDMARK])
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0] * 4, [9.0] * 4, [9.0] * 4])
    box_targets = torch.tensor([[0.0] * 4, [0.5, 0.0, 0.0, 0.0], [0.0] * 4, [0.0] * 4])
    # positive: 0.01 + 0.04 + 0.09 + 0.16 = 0.3; part: 0.25; negative and landmark faces do not count
    assert box_regression_loss(boxes, box_targets, labels).item() == pytest.approx((0.3 + 0.25) / 2)
    points = torch.zeros(4, 10)
    points[0] = 7.0  # not a landmark face: ignored
    point_targets = torch.zeros(4, 10)
    point_targets[3, :2] = torch.tensor([0.3, 0.4])
    assert landmark_regression_loss(points, point_targets, labels).item() == pytest.approx(0.25)


def test_total_loss_weights_the_tasks_and_zeroes_absent_ones():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], requires_grad=True)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.0, 0.4]], requires_grad=True)
    points = torch.ones(2, 10, requires_grad=True)
    labels = torch.tensor([POSITIVE, PART])
    total, parts = mtcnn_loss((logits[:, :, None, None], boxes[:, :, None, None], points[:, :, None, None]),
                              labels, torch.zeros(2, 4), torch.zeros(2, 10), alpha=(1.0, 0.5, 1.0))
    assert parts["face"].item() == pytest.approx(-math.log(0.75))
    assert parts["box"].item() == pytest.approx(0.25 / 2)
    assert parts["landmark"].item() == 0.0  # no landmark face in the batch
    assert total.item() == pytest.approx(-math.log(0.75) + 0.5 * 0.125)
    total.backward()
    assert points.grad is not None and not points.grad.any()


def test_config_defaults_and_overrides():
    config = load_config(SMOKE_CONFIG, {"stage": "onet", "max_steps": 7, "mining.pnet": "x.safetensors",
                                        "lr": None})
    assert config["alpha"] == {"face": 1.0, "box": 0.5, "landmark": 1.0}  # the paper's O-Net weights
    assert config["max_steps"] == 7 and config["mining"]["pnet"] == "x.safetensors"
    assert config["lr"] == 0.001 and config["ohem_ratio"] == 0.7
    assert config["data"]["val"]["boxes"]  # a dotted override elsewhere keeps the YAML's data
    assert load_config(SMOKE_CONFIG)["alpha"] == {"face": 1.0, "box": 0.5, "landmark": 0.5}
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(SMOKE_CONFIG, {"max_step": 3})
    with pytest.raises(ValueError, match=r"unknown config keys \['mining.threshold'\]"):
        load_config(SMOKE_CONFIG, {"mining.threshold": 3})


# ------------------------------------------------------------------------------------------------------------
# training
@pytest.fixture(scope="module")
def pnet_run(data_dir, tmp_path_factory):
    """30 P-Net steps from a saved initialisation, then 10 more resumed from the checkpoint."""
    run_dir = tmp_path_factory.mktemp("pnet")
    L.seed_everything(0, verbose=False)
    initial = export_stage_weights(StageModule("pnet").net, "pnet", run_dir / "initial.safetensors")
    overrides = {"run_dir": str(run_dir), "init_weights": str(initial), "max_steps": 30, "lr": 0.003}
    first = train_from_config(SMOKE_CONFIG, overrides)
    first_weights = load_weights(first)
    resumed = train_from_config(SMOKE_CONFIG, {**overrides, "max_steps": 40, "resume": True})
    return run_dir, initial, first_weights, resumed


@pytest.mark.slow
def test_pnet_training_lowers_the_loss_on_a_fixed_batch(pnet_run):
    run_dir, initial, first_weights, _ = pnet_run
    samples = Samples.load(run_dir / "samples" / "train")
    order = list(RatioSampler(samples.labels, 140, {"negative": 3, "positive": 1, "part": 1, "landmark": 2}, 1))
    dataset = CropDataset(samples)
    images, labels, boxes, points = (torch.stack([torch.as_tensor(dataset[i][k]) for i in order]) for k in range(4))

    def loss_with(state):
        module = StageModule("pnet")
        module.net.load_state_dict({k[5:]: v for k, v in state.items()})
        with torch.no_grad():
            return mtcnn_loss(module.net(images), labels, boxes, points, (1.0, 0.5, 0.5), 1.0)

    before_total, before = loss_with(load_weights(initial))
    after_total, after = loss_with(first_weights)
    assert after_total < 0.8 * before_total
    assert after["face"] < before["face"] and after["landmark"] < before["landmark"]


@pytest.mark.slow
def test_resume_continues_the_step_count(pnet_run):
    run_dir, _, first_weights, resumed = pnet_run
    assert _metadata(run_dir / "pnet.safetensors")["global_step"] == "40"
    assert _logged_train_steps(run_dir, 0) == list(range(30))
    assert _logged_train_steps(run_dir, 1) == list(range(30, 40))  # picked up at step 30, not from scratch
    state = load_weights(resumed)
    assert set(state) == set(first_weights) and all(k.startswith("pnet.") for k in state)
    assert any(not torch.equal(state[k], first_weights[k]) for k in state)


@pytest.mark.slow
def test_rnet_trains_on_samples_mined_by_the_trained_pnet(pnet_run, tmp_path):
    _, _, _, pnet_weights = pnet_run
    rnet = train_from_config(SMOKE_CONFIG, {"stage": "rnet", "run_dir": str(tmp_path), "max_steps": 3,
                                            "mining.pnet": str(pnet_weights), "mining.thresholds": [0.3, 0.7, 0.7],
                                            "mining.max_negatives_per_image": 50})
    samples = Samples.load(tmp_path / "samples" / "train")
    mined = np.asarray(samples.mined)
    assert mined.sum() > 0 and samples.crops.shape[1:] == (24, 24, 3)
    assert set(np.unique(np.asarray(samples.labels)[mined])) <= {NEGATIVE, POSITIVE, PART}
    assert _metadata(rnet)["global_step"] == "3"
    # the stage files combine into detector weights the cascade loads
    merged = merge_stage_weights(tmp_path / "detector.safetensors", pnet=pnet_weights, rnet=rnet)
    detector = MTCNN(weights=merged, device="cpu")
    assert detector.pnet.landmarks is not None and detector.rnet.landmarks is not None
    assert isinstance(detector.detect(np.zeros((60, 80, 3), np.uint8)), list)
