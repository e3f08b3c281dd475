"""Losses of the engagement regressor: MSE on the intensity and the EmotiW 2019 rank loss on pooled features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

RANK_MARGIN = 0.75  # m of the 2019 code's kw_rank_loss (docs/engagement.md)

# The six hinge terms of the 2019 rank loss, levels 0..3 (the notes' c1..c4), as (near pair, far pair, margin in m):
# [d(near) - d(far) + k m]_+ asks the far pair's centroids to lie at least k m farther apart than the near pair's.
RANK_TERMS = (
    ((0, 1), (0, 2), 1), ((0, 1), (0, 3), 2),
    ((1, 2), (1, 3), 1), ((1, 2), (0, 3), 2),
    ((2, 3), (1, 3), 1), ((2, 3), (0, 3), 2),
)
_DISTANCE_EPS = 1e-12  # keeps d(sqrt)/dx finite where two centroids coincide (e.g. dead ReLU features at init)


def labels_to_levels(labels: torch.Tensor) -> torch.Tensor:
    """Intensity labels {0, 0.33, 0.66, 1} -> level indices {0, 1, 2, 3} (``round(3 y)``)."""
    return torch.round(labels.detach().float() * 3).clamp(0, 3).long()


def level_centroids(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch class centroids: ``embeddings`` ``[B, F]``, ``labels`` ``[B]`` -> ``(centroids [4, F], present
    [4] bool)``; a level absent from the batch has a zero row and ``present`` False."""
    levels = labels_to_levels(labels)
    one_hot = F.one_hot(levels, 4).to(embeddings.dtype)  # [B, 4]
    counts = one_hot.sum(0)
    centroids = one_hot.t() @ embeddings / counts.clamp(min=1).unsqueeze(1)
    return centroids, counts > 0


def rank_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = RANK_MARGIN) -> torch.Tensor:
    """The 2019 rank loss, differentiable: with ``d_ij = ||c_i - c_j||`` between the batch's level centroids,

        L = [d12 - d13 + m]_+ + [d12 - d14 + 2m]_+ + [d23 - d24 + m]_+ + [d23 - d14 + 2m]_+
          + [d34 - d24 + m]_+ + [d34 - d14 + 2m]_+

    (levels 1..4 = intensities 0, 0.33, 0.66, 1): adjacent levels' centroids must be closer than those one level
    farther by ``m``, and than the extremes' by ``2m``. A term enters only when all the levels it names are in the
    batch (its centroids are defined); with no such term the loss is a zero that still carries a (zero) gradient.

    The public version (``kw_rank_loss`` in kaiwang960112/EmotiW_2019_engagement_regression) computed this in NumPy
    on ``feature_results.cpu().data.numpy()``, so it returned a plain float cut off from the graph: backward gave no
    gradient to the network at all (and the training script had it commented out). It also started each level's count
    at 1 (centroid = sum / (n + 1), shrunk towards the origin) and kept the zero vector as the centroid of a level
    missing from the batch, so those distances were meaningless. Here the centroids are torch means over the levels
    present, and the distance is ``sqrt(|.|^2 + eps)`` so coinciding centroids give a finite gradient.

    ``embeddings`` ``[B, F]`` (the attention-pooled features), ``labels`` ``[B]`` -> scalar.
    """
    centroids, present = level_centroids(embeddings, labels)
    present = present.tolist()
    difference = centroids.unsqueeze(0) - centroids.unsqueeze(1)
    distance = torch.sqrt((difference**2).sum(-1) + _DISTANCE_EPS)  # [4, 4]
    loss = embeddings.sum() * 0.0  # zero joined to the graph when no term applies
    for (a, b), (c, d), multiple in RANK_TERMS:
        if all(present[level] for level in (a, b, c, d)):
            loss = loss + torch.relu(distance[a, b] - distance[c, d] + multiple * margin)
    return loss


def engagement_loss(intensity: torch.Tensor, labels: torch.Tensor, pooled: torch.Tensor | None = None,
                    rank_weight: float = 0.0, margin: float = RANK_MARGIN) -> tuple[torch.Tensor, dict[str, float]]:
    """``MSE(intensity, labels) + rank_weight * rank_loss(pooled, labels)`` -> ``(total, {"mse", "rank"})``.
    The 2019 code trained with MSE alone (rank loss commented out); ``rank_weight`` 0 reproduces that."""
    mse = F.mse_loss(intensity, labels.to(intensity.dtype))
    total, parts = mse, {"mse": float(mse.detach())}
    if rank_weight and pooled is not None:
        rank = rank_loss(pooled, labels, margin)
        total = total + rank_weight * rank
        parts["rank"] = float(rank.detach())
    return total, parts
