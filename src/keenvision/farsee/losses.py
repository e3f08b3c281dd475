"""Segmentation losses for FarSee-Net. The paper does not state its loss (docs/farsee.md), so the recipe chooses:

- `weighted_cross_entropy` with ENet class weights (Paszke et al. 2016, Sec. 5.2) is the CamVid default: mIoU
  averages classes equally and CamVid's rare classes (pole, sign, pedestrian, bicyclist: ~1% of pixels each) would
  otherwise barely contribute to the gradient of a small dataset;
- `ohem_cross_entropy` (online hard example mining as in PSPNet/BiSeNet/HRNet code, threshold 0.7) is selectable
  (``loss: ohem``), the usual choice for Cityscapes.

Shapes: ``logits [B, K, H, W]``, ``labels [B, H, W]`` (int64, class index or ``ignore_index``). Ignored pixels never
contribute; a batch with no labelled pixels gives a zero loss that still has a gradient graph.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def enet_class_weights(frequencies, c: float = 1.02) -> torch.Tensor:
    """ENet class weights ``w_c = 1 / ln(c + p_c)``, ``p_c`` the class's share of labelled pixels (see
    `keenvision.farsee.data.class_frequencies`); ``c = 1.02`` bounds the weights to [1/ln(2.02), 1/ln(1.02)] =
    [1.42, 50.5]. Returns float32 ``[K]``."""
    frequencies = torch.as_tensor(np.asarray(frequencies, np.float64))
    if frequencies.ndim != 1 or (frequencies < 0).any():
        raise ValueError("frequencies must be a 1-D array of non-negative class shares")
    return (1.0 / torch.log(c + frequencies)).float()


def _per_pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``-log softmax(z_i)[y_i]`` per pixel ``[B, H, W]`` (0 at ignored pixels), computed in float32."""
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                           class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Class-weighted cross entropy over the labelled pixels ``V``:

        L = sum_{i in V} w_{y_i} * (-log softmax(z_i)[y_i]) / sum_{i in V} w_{y_i}

    (``w = 1`` for all classes without ``class_weights``: the plain mean). Scalar."""
    losses = _per_pixel_cross_entropy(logits, labels, ignore_index)
    valid = labels != ignore_index
    if class_weights is None:
        weights = valid.float()
    else:
        weights = class_weights.to(losses.device, torch.float32)[labels.clamp(0, len(class_weights) - 1)] * valid
    return (losses * weights).sum() / weights.sum().clamp_min(1e-12)


def ohem_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, threshold: float = 0.7,
                       min_kept: int = 100_000, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Online hard example mining cross entropy: only the pixels the model still gets wrong-ish count.

    With ``p_i = softmax(z_i)[y_i]`` the probability of the true class at labelled pixel ``i``:

        S = {i : p_i < threshold}                      if |S| >= min_kept
        S = the min(min_kept, |V|) pixels of lowest p_i  otherwise
        L = sum_{i in S} w_{y_i} * (-log p_i) / sum_{i in S} w_{y_i}

    Keeping at least ``min_kept`` pixels stops the loss from vanishing once most pixels are confident. Scalar."""
    losses = _per_pixel_cross_entropy(logits, labels, ignore_index).flatten()
    flat_labels = labels.flatten()
    valid = flat_labels != ignore_index
    true_class_probability = torch.exp(-losses.detach())
    kept = valid & (true_class_probability < threshold)
    valid_count = int(valid.sum())
    if int(kept.sum()) < min(min_kept, valid_count):
        # the min_kept hardest labelled pixels (ignored ones pushed past every real probability)
        hardest = torch.where(valid, true_class_probability, torch.full_like(true_class_probability, 2.0))
        kept = torch.zeros_like(valid)
        kept[torch.topk(hardest, min(min_kept, valid_count), largest=False).indices] = True
    if class_weights is None:
        weights = kept.float()
    else:
        weights = class_weights.to(losses.device, torch.float32)[flat_labels.clamp(0, len(class_weights) - 1)] * kept
    return (losses * weights).sum() / weights.sum().clamp_min(1e-12)
