"""MTCNN's multi-task loss (Zhang et al. 2016, section II.B), one small function per task.

Each sample takes part in the tasks its category allows (the paper's beta_ij in {0, 1}): negatives and positives in
face classification, positives and part faces in box regression, landmark faces in landmark regression. Each task
loss is averaged over the samples taking part in it (so its scale does not depend on the batch mix), and a task
with no sample in the batch contributes an exact zero that is still connected to the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import LANDMARK, NEGATIVE, PART, POSITIVE

STAGE_ALPHA = {"pnet": (1.0, 0.5, 0.5), "rnet": (1.0, 0.5, 0.5), "onet": (1.0, 0.5, 1.0)}
"""The paper's task weights (det, box, landmark) per stage."""


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    if not mask.any():
        return anchor.sum() * 0.0  # zero, yet part of the graph, so every parameter still gets a gradient
    return values[mask].mean()


def face_classification_loss(face_logits: torch.Tensor, labels: torch.Tensor, ohem_ratio: float = 0.7) -> torch.Tensor:
    """Cross-entropy face / non-face with online hard sample mining.

    ``L_det_i = -(y_i log p_i + (1 - y_i) log(1 - p_i))`` with ``p_i = softmax(face_logits_i)[1]`` and
    ``y_i = 1`` for positives, 0 for negatives; only those two categories count. Of these ``n`` losses only the
    ``k = ceil(ohem_ratio * n)`` largest are kept (the hard samples) and ``L_det = (1 / k) sum_{top k} L_det_i``,
    so the easiest ``n - k`` get no gradient.

    Args:
        face_logits: ``[N, 2]`` (non-face, face) logits.
        labels: ``[N]`` sample categories (NEGATIVE, POSITIVE, PART, LANDMARK).
        ohem_ratio: fraction of the classification losses back-propagated, 0.7 in the paper; 1 keeps all.
    """
    if not 0 < ohem_ratio <= 1:
        raise ValueError(f"ohem_ratio must be in (0, 1], got {ohem_ratio}")
    mask = (labels == NEGATIVE) | (labels == POSITIVE)
    if not mask.any():
        return face_logits.sum() * 0.0
    losses = F.cross_entropy(face_logits[mask], (labels[mask] == POSITIVE).long(), reduction="none")
    kept = max(1, math.ceil(ohem_ratio * losses.numel() - 1e-9))  # 0.7 * 10 is 7.000000000000001 in floats
    return losses.topk(kept).values.mean()


def box_regression_loss(box_offsets: torch.Tensor, box_targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared L2 on the 4 box offsets of positives and part faces.

    ``L_box_i = || t_hat_i - t_i ||_2^2 = sum_{c=1..4} (t_hat_ic - t_ic)^2``, averaged over those samples.
    """
    mask = (labels == POSITIVE) | (labels == PART)
    return _masked_mean(((box_offsets - box_targets) ** 2).sum(dim=1), mask, box_offsets)


def landmark_regression_loss(landmark_offsets: torch.Tensor, landmark_targets: torch.Tensor,
                             labels: torch.Tensor) -> torch.Tensor:
    """Squared L2 on the 10 landmark coordinates (x1..x5, y1..y5 as fractions of the crop) of landmark faces.

    ``L_landmark_i = || l_hat_i - l_i ||_2^2 = sum_{c=1..10} (l_hat_ic - l_ic)^2``, averaged over those samples.
    """
    mask = labels == LANDMARK
    return _masked_mean(((landmark_offsets - landmark_targets) ** 2).sum(dim=1), mask, landmark_offsets)


def mtcnn_loss(outputs: tuple[torch.Tensor, ...], labels: torch.Tensor, box_targets: torch.Tensor,
               landmark_targets: torch.Tensor, alpha: tuple[float, float, float] = (1.0, 0.5, 0.5),
               ohem_ratio: float = 0.7) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total ``L = alpha_det L_det + alpha_box L_box + alpha_landmark L_landmark``.

    ``outputs`` is a network's ``(face_logits, box_offsets[, landmark_offsets])``, each ``[N, C]`` (P-Net's
    ``[N, C, 1, 1]`` on 12x12 crops is flattened); without a landmark head the landmark term is left out.
    Returns the total and the unweighted task losses ``{"face", "box", "landmark"}``.
    """
    outputs = tuple(o.flatten(1) for o in outputs)
    parts = {"face": face_classification_loss(outputs[0], labels, ohem_ratio),
             "box": box_regression_loss(outputs[1], box_targets, labels)}
    total = alpha[0] * parts["face"] + alpha[1] * parts["box"]
    if len(outputs) > 2:
        parts["landmark"] = landmark_regression_loss(outputs[2], landmark_targets, labels)
        total = total + alpha[2] * parts["landmark"]
    return total, parts
