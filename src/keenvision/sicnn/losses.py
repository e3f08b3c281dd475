"""SICNN's losses (Zhang et al., ECCV 2018, Sec. 3): pixel L_SR, super-identity L_SI, margin L_FR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pixel_loss(super_resolved: torch.Tensor, high_resolution: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The pixel loss L_SR between ``[B, 3, H, W]`` faces.

    ``reduction="mean"``: mean squared error ``1/(B C H W) sum (SR - HR)^2``.
    ``reduction="image_sum"``: the paper's ``1/B sum_i ||SR_i - HR_i||_2^2`` (squared error summed over each
    image, averaged over the batch) = ``C H W`` x the mean; Caffe's EuclideanLoss in the sample is half of that,
    ``1/(2B) sum``. The ratio of L_SR to alpha * L_SI, hence the meaning of alpha, depends on this choice.
    """
    squared = (super_resolved - high_resolution).pow(2)
    if reduction == "mean":
        return squared.mean()
    if reduction == "image_sum":
        return squared.flatten(1).sum(1).mean()
    raise ValueError(f"reduction must be 'mean' or 'image_sum', got {reduction!r}")


def super_identity_loss(features_sr: torch.Tensor, features_hr: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The super-identity loss L_SI (paper Eq. 4): the squared Euclidean distance between FC5 features of the
    hallucinated and the HR face, both projected onto the unit hypersphere, averaged over the batch.

    ``L_SI = 1/B sum_i || f(SR_i) / ||f(SR_i)|| - f(HR_i) / ||f(HR_i)|| ||_2^2``, in [0, 4]; 0 when the features
    are parallel. ``[B, D], [B, D] -> scalar``.

    The distance is summed over the D feature dimensions and averaged over the batch only. SirLPS/Face-
    Hallucination's ``SuperIdentityLoss`` takes the mean over all B x D elements (its own comment says "wrong
    here!"), which divides L_SI by D (512) and so weakens alpha by that factor; this one does not.
    """
    unit_sr = F.normalize(features_sr, dim=1, eps=eps)
    unit_hr = F.normalize(features_hr, dim=1, eps=eps)
    return (unit_sr - unit_hr).pow(2).sum(1).mean()


def margin_loss(head: nn.Module, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The recognition loss L_FR: softmax cross-entropy over the margin logits of ``head`` (`SphereFaceHead`,
    `CosFaceHead` or `ArcFaceHead`), ``-1/B sum_i log( e^{z_{i,y_i}} / sum_j e^{z_{i,j}} )``, where the target
    logit carries the margin:

    - A-Softmax: ``z_y = |x| (lambda cos theta_y + psi(theta_y)) / (1 + lambda)``, ``z_j = |x| cos theta_j``,
      ``psi(theta) = (-1)^k cos(m theta) - 2k`` (m = 4);
    - CosFace: ``z_y = s (cos theta_y - m)``, ``z_j = s cos theta_j``;
    - ArcFace: ``z_y = s cos(theta_y + m)``, ``z_j = s cos theta_j``.

    ``embeddings [B, D]`` (unnormalised FC5), ``labels [B]`` -> scalar.
    """
    return F.cross_entropy(head(embeddings, labels), labels)
