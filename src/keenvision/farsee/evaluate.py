"""The paper's metric: mean intersection-over-union over the classes (and pixel accuracy), at full label resolution.

IoU of class c = TP / (TP + FP + FN) over all pixels of the split (accumulated, not averaged per image), pixels
whose ground truth is the ignore index left out. mIoU is the mean over the classes; a class absent from both the
ground truth and the predictions of the whole split has no IoU (reported as None, left out of the mean, as
mmsegmentation does). Counting is done by torchmetrics (``MulticlassJaccardIndex``, ``MulticlassAccuracy``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ..core.progress import progress_bar
from .data import IMAGENET_MEAN, IMAGENET_STD, CamVidDataset, CityscapesDataset, Normalise, dataset_class


class SegmentationScores:
    """Accumulates predictions ``[B, H, W]`` (class indices) against labels ``[B, H, W]`` and reports mIoU,
    per-class IoU and pixel accuracy."""

    def __init__(self, class_names: Sequence[str], ignore_index: int | None, device: str | torch.device = "cpu"):
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        num_classes = len(self.class_names)
        self.iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index,
                                          zero_division=math.nan).to(device)
        self.accuracy = MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index).to(device)

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        if predictions.shape != labels.shape:
            raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ")
        self.iou.update(predictions, labels)
        self.accuracy.update(predictions, labels)

    def compute(self) -> dict:
        per_class = self.iou.compute().tolist()
        present = [value for value in per_class if not math.isnan(value)]
        return {
            "miou": sum(present) / len(present) if present else math.nan,
            "per_class_iou": {name: None if math.isnan(value) else value
                              for name, value in zip(self.class_names, per_class)},
            "pixel_accuracy": float(self.accuracy.compute()),
        }


def evaluate_segmentation(
    model: torch.nn.Module,
    data_dir: str | Path,
    split: str = "val",
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    drive: str | None = None,
    progress: bool = False,
) -> dict:
    """mIoU, per-class IoU and pixel accuracy of ``model`` on ``<data_dir>/<split>/images|labels`` (the
    `CamVidDataset` layout with ``classes.json``) or, where ``<data_dir>/leftImg8bit`` exists, on the Cityscapes
    layout (`CityscapesDataset`). A pair that cannot be read or fails its checks (size mismatch, label values out
    of range) is skipped and listed in ``skipped``; the scores are over the others.

    Args:
        model: maps normalised images ``[B, 3, H, W]`` to logits ``[B, K, h, w]``; K must equal the dataset's
            class count. Logits at another size than the labels are resized bilinearly to the label size, so the
            score is always at the dataset's full resolution.
        data_dir: the dataset root (holding ``classes.json``).
        split: split folder name (``val``, ``test``, ...); CamVid folders may be joined, ``train+val``.
        batch_size: images per forward (only consecutive images of one size are batched).
        device: where the model runs.
        limit: the first ``limit`` images only.
        mean: normalisation mean (default: the model's ``mean`` attribute, else ImageNet's).
        std: normalisation standard deviation (default: the model's ``std``, else ImageNet's).
        drive: CamVid only: score only the frames of this drive (e.g. ``0006R0`` of ``train+val``, the held-out
            drive of configs/farsee/camvid_holdout.yaml); ValueError naming the split's drives when it has none.
        progress: a bar over the images on stderr (`keenvision.core.progress`).

    Returns:
        ``{"split", "dataset", "images", "miou", "per_class_iou": {name: IoU or None}, "pixel_accuracy",
        "num_classes", "ignore_index", "skipped": [message, ...]}``; ``images`` counts the pairs scored.
        ValueError when no pair of the first ``limit`` could be scored.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    mean = tuple(mean or getattr(model, "mean", IMAGENET_MEAN))
    std = tuple(std or getattr(model, "std", IMAGENET_STD))
    layout = dataset_class(data_dir)
    dataset = layout(data_dir, split, transform=Normalise(mean, std))
    if drive is not None:
        if layout is not CamVidDataset:
            raise ValueError("drive selects CamVid frames by file name; this is a Cityscapes root")
        dataset.select_drive(drive, keep=True)
    model_classes = getattr(model, "num_classes", None)
    if model_classes is not None and model_classes != dataset.num_classes:
        raise ValueError(f"the model has {model_classes} classes, {Path(data_dir) / 'classes.json'} names "
                         f"{dataset.num_classes}")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    scores = SegmentationScores(dataset.class_names, dataset.ignore_index, device)
    was_training = model.training
    model.eval()

    def score(images: list[torch.Tensor], labels: list[torch.Tensor]) -> None:
        batch = torch.stack(images).to(device)
        target = torch.stack(labels).to(device)
        logits = model(batch)
        if logits.shape[1] != dataset.num_classes:
            raise ValueError(f"the model returned {logits.shape[1]} classes, the dataset has {dataset.num_classes}")
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        scores.update(logits.argmax(1), target)

    try:
        with torch.inference_mode():
            images, labels, skipped = [], [], []
            for index in progress_bar(range(count), desc="eval", unit="img", enabled=progress):
                try:
                    image, label = dataset[index]
                except ValueError as error:  # unreadable file, size mismatch, label out of range: go on
                    skipped.append(str(error))
                    continue
                if images and (len(images) == batch_size or image.shape != images[0].shape):
                    score(images, labels)
                    images, labels = [], []
                images.append(image)
                labels.append(label)
            if images:
                score(images, labels)
    finally:
        model.train(was_training)
    if len(skipped) == count:
        raise ValueError(f"no image/label pair of {Path(data_dir) / split} could be scored: {skipped[0]}")
    return {"split": split, "drive": drive, "dataset": "cityscapes" if layout is CityscapesDataset else "camvid",
            "images": count - len(skipped), **scores.compute(), "num_classes": dataset.num_classes,
            "ignore_index": dataset.ignore_index, "skipped": skipped}
