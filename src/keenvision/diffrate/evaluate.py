"""Top-1 accuracy of a ViT with and without a DiffRate schedule, in one pass over the data.

Each batch is decoded once and run through the original model and then through the patched model (patch,
forward, unpatch), so both numbers come from the same images in the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from ..core.progress import progress_bar
from .data import ImageClassificationData, Preprocessing
from .method.flops import schedule_gflops
from .method.patch import is_patched, patch, unpatch
from .method.schedule import Schedule


def _patch_options(model: torch.nn.Module) -> dict[str, Any] | None:
    """The options of an already patched model (to restore it afterwards), else None."""
    if not is_patched(model):
        return None
    state = model._diffrate_state
    return {"schedule": state["schedule"], "merge_mode": state["merge_mode"],
            "proportional_attention": state["proportional"], "trace_source": state["trace_source"]}


def evaluate_top1(
    model: torch.nn.Module,
    data_dir: str | Path,
    split: str = "test",
    schedule: Schedule | None = None,
    batch_size: int = 64,
    limit_per_class: int | None = None,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    merge_mode: str = "mean",
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1 of `model` on ``data_dir``/`split` and, with `schedule`, of the same model compressed by it.

    Args:
        model: a timm VisionTransformer (moved to `device`; a patched model is restored as it was).
        data_dir: image-classification folder in a layout :class:`ImageClassificationData` reads; class
            indices are the sorted class-folder names and must be valid outputs of the model.
        split: "test", "val", ... (folder or zip name).
        schedule: the compression to compare against (None: original only).
        batch_size: images per forward.
        limit_per_class: first N images of every class only (quick checks).
        device: where to run.
        num_workers: DataLoader worker processes.
        merge_mode: merge weighting of the compressed model (see :func:`patch`).
        progress: a bar over the batches on stderr (`keenvision.core.progress`).

    Returns:
        ``{"split", "images", "classes", "top1_original"}`` plus, with a schedule, ``"top1_compressed"``,
        ``"gflops_original"`` and ``"gflops_compressed"`` (the paper's formula); accuracies in [0, 1].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    restore = _patch_options(model)
    if restore is not None:
        unpatch(model)
    try:
        if schedule is not None:  # check the schedule before decoding any image
            patch(model, schedule, merge_mode=merge_mode)
            unpatch(model)
        dataset = ImageClassificationData(data_dir, split, Preprocessing.for_model(model), limit_per_class)
        num_classes = int(model.num_classes)
        if num_classes < len(dataset.classes):
            raise ValueError(f"{data_dir} has {len(dataset.classes)} classes but the model has {num_classes} outputs")
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        metrics = {"original": MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device)}
        if schedule is not None:
            metrics["compressed"] = MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device)
        was_training = model.training
        model.to(device).eval()
        with torch.no_grad():
            for images, labels in progress_bar(loader, desc="eval", unit="batch", enabled=progress):
                images, labels = images.to(device), labels.to(device)
                metrics["original"].update(model(images), labels)
                if schedule is not None:
                    patch(model, schedule, merge_mode=merge_mode)
                    try:
                        metrics["compressed"].update(model(images), labels)
                    finally:
                        unpatch(model)
        model.train(was_training)
        result: dict[str, Any] = {"split": split, "images": len(dataset), "classes": len(dataset.classes),
                                  "top1_original": float(metrics["original"].compute())}
        if schedule is not None:
            result["top1_compressed"] = float(metrics["compressed"].compute())
            result["gflops_original"] = schedule_gflops(model)
            result["gflops_compressed"] = schedule_gflops(model, schedule)
        return result
    finally:
        if restore is not None:
            restore_schedule = restore.pop("schedule")
            patch(model, restore_schedule, **restore)
