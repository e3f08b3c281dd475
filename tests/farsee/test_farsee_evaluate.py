"""mIoU / pixel accuracy on the real CamVid validation labels: an oracle that returns the ground truth scores 1.0, a
known perturbation scores the hand-computed IoU, and a tiny hand-made example checks the counting itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from keenvision.farsee.data import CamVidDataset, read_label
from keenvision.farsee.evaluate import SegmentationScores, evaluate_segmentation
from keenvision.farsee.model import FarSeeNet

SKY, BUILDING, IGNORE, CLASSES = 0, 1, 11, 11


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def camvid(data_dir):
    root = data_dir / "camvid"
    if not (root / "val" / "labels").is_dir():
        pytest.skip(f"{root} not found")
    return root


class LabelOracle(nn.Module):
    """Returns one-hot logits of the real labels of the split, image after image in dataset order (whatever the
    batching), after ``perturb`` (labels -> labels); ignored pixels are predicted as class 0 (they never count)."""

    def __init__(self, label_paths, perturb=None):
        super().__init__()
        self.labels = [torch.from_numpy(read_label(path)) for path in label_paths]
        self.perturb = perturb or (lambda labels: labels)
        self.next_index = 0
        self.num_classes = CLASSES

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        labels = torch.stack(self.labels[self.next_index:self.next_index + len(images)])
        self.next_index += len(images)
        assert labels.shape[-2:] == images.shape[-2:]  # the evaluator feeds full-resolution images
        predicted = self.perturb(labels.clone())
        predicted[predicted == IGNORE] = 0
        return F.one_hot(predicted, CLASSES).permute(0, 3, 1, 2).float()


def _labels(camvid, count):
    dataset = CamVidDataset(camvid, "val")
    return [label for _, label in dataset.pairs[:count]]


def test_ground_truth_scores_one(camvid):
    paths = _labels(camvid, 5)
    result = evaluate_segmentation(LabelOracle(paths), camvid, "val", batch_size=2, limit=5)  # batches 2, 2, 1
    assert result["images"] == 5 and result["split"] == "val"
    assert result["miou"] == pytest.approx(1.0) and result["pixel_accuracy"] == pytest.approx(1.0)
    present = set(np.unique(np.concatenate([read_label(p).ravel() for p in paths]))) - {IGNORE}
    assert {name for name, value in result["per_class_iou"].items() if value is not None} == {
        CamVidDataset(camvid, "val").class_names[i] for i in present}
    assert all(value == pytest.approx(1.0) for value in result["per_class_iou"].values() if value is not None)
    assert result["num_classes"] == CLASSES and result["ignore_index"] == IGNORE


def test_sky_predicted_as_building_gives_the_hand_computed_iou(camvid):
    paths = _labels(camvid, 4)
    labels = np.stack([read_label(p) for p in paths])
    sky, building = (labels == SKY).sum(), (labels == BUILDING).sum()
    valid = (labels != IGNORE).sum()
    present = [c for c in range(CLASSES) if (labels == c).any()]
    assert sky > 0 and building > 0

    def sky_to_building(batch):
        batch[batch == SKY] = BUILDING
        return batch

    result = evaluate_segmentation(LabelOracle(paths, sky_to_building), camvid, "val", batch_size=3, limit=4)
    names = CamVidDataset(camvid, "val").class_names
    # Sky: TP 0 -> IoU 0. Building: TP = its pixels, FP = the sky pixels -> B / (B + S). Every other class 1.
    assert result["per_class_iou"][names[SKY]] == 0.0
    assert result["per_class_iou"][names[BUILDING]] == pytest.approx(building / (building + sky), rel=1e-6)
    expected_miou = (0 + building / (building + sky) + (len(present) - 2)) / len(present)
    assert result["miou"] == pytest.approx(expected_miou, rel=1e-6)
    assert result["pixel_accuracy"] == pytest.approx(1 - sky / valid, rel=1e-6)


def test_counting_on_a_hand_made_example():
    scores = SegmentationScores(["a", "b", "c", "d"], ignore_index=9)
    predictions = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    labels = torch.tensor([[[0, 1, 1], [1, 2, 9]]])  # the last pixel is ignored, whatever is predicted there
    scores.update(predictions, labels)
    result = scores.compute()
    # a: TP 1, FP 1 (pixel (0,1)) -> 1/2; b: TP 2, FN 1 -> 2/3; c: TP 1 -> 1; d: absent everywhere -> None
    assert result["per_class_iou"] == {"a": pytest.approx(0.5), "b": pytest.approx(2 / 3), "c": pytest.approx(1.0),
                                       "d": None}
    assert result["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert result["pixel_accuracy"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="differ"):
        scores.update(predictions, labels[..., :2])


def test_a_real_network_and_bad_inputs(camvid, tmp_path):
    torch.manual_seed(0)
    model = FarSeeNet(CLASSES, width=16).train()
    result = evaluate_segmentation(model, camvid, "val", batch_size=2, limit=2)
    assert model.training  # scored in eval mode, handed back as it came
    assert result["images"] == 2 and 0 <= result["miou"] <= 1 and 0 <= result["pixel_accuracy"] <= 1
    assert len(result["per_class_iou"]) == CLASSES and not math.isnan(result["miou"])
    with pytest.raises(ValueError, match="classes"):
        evaluate_segmentation(FarSeeNet(5, width=16), camvid, "val", limit=1)
    with pytest.raises(FileNotFoundError):
        evaluate_segmentation(model, tmp_path / "missing", "val")
    with pytest.raises(FileNotFoundError):
        evaluate_segmentation(model, camvid, "test")  # the shared CamVid has train and val only
