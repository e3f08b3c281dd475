"""The rank loss against a hand computation, its gradient, its zero for well-separated levels, batches missing
levels; the MSE part."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from keenvision.engagement.losses import engagement_loss, labels_to_levels, level_centroids, rank_loss

LABELS = torch.tensor([0.0, 0.0, 0.33, 0.66, 0.66, 1.0])


def hinge(value: float) -> float:
    return max(0.0, value)


def test_labels_map_to_the_four_levels():
    assert labels_to_levels(torch.tensor([0.0, 0.33, 0.66, 1.0, 0.34])).tolist() == [0, 1, 2, 3, 1]


def test_rank_loss_matches_a_hand_computation():
    # 1-d embeddings: level centroids c1 = (0 + 2) / 2 = 1, c2 = 1.5, c3 = (1 + 3) / 2 = 2, c4 = 2.4
    embeddings = torch.tensor([[0.0], [2.0], [1.5], [1.0], [3.0], [2.4]], requires_grad=True)
    c1, c2, c3, c4 = 1.0, 1.5, 2.0, 2.4
    d12, d13, d14, d23, d24, d34 = c2 - c1, c3 - c1, c4 - c1, c3 - c2, c4 - c2, c4 - c3
    m = 0.75
    expected = (hinge(d12 - d13 + m) + hinge(d12 - d14 + 2 * m) + hinge(d23 - d24 + m) + hinge(d23 - d14 + 2 * m)
                + hinge(d34 - d24 + m) + hinge(d34 - d14 + 2 * m))
    loss = rank_loss(embeddings, LABELS, margin=m)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    loss.backward()
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0


def test_centroids_are_means_over_present_levels():
    embeddings = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    centroids, present = level_centroids(embeddings, torch.tensor([0.0, 0.0, 1.0]))
    assert present.tolist() == [True, False, False, True]
    assert torch.allclose(centroids[0], torch.tensor([2.0, 1.0])) and torch.allclose(centroids[3], embeddings[2])
    assert torch.equal(centroids[1], torch.zeros(2))


def test_rank_loss_is_zero_when_levels_are_well_separated():
    # centroids at 0, 10, 20, 30 on a line: every far pair is >= 10 farther apart than its near pair (> 2 m)
    embeddings = torch.tensor([[0.0, 1.0], [0.0, -1.0], [10.0, 0.0], [20.0, 0.0], [20.0, 0.0], [30.0, 0.0]],
                              requires_grad=True)
    loss = rank_loss(embeddings, LABELS)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.count_nonzero(embeddings.grad) == 0


def test_missing_levels_use_only_terms_whose_levels_are_present():
    # levels 0.33, 0.66, 1 only: the two terms without level 0 remain, [d23 - d24 + m] and [d34 - d24 + m]
    embeddings = torch.tensor([[1.0], [1.2], [1.4]], requires_grad=True)
    loss = rank_loss(embeddings, torch.tensor([0.33, 0.66, 1.0]))
    expected = hinge(0.2 - 0.4 + 0.75) + hinge(0.2 - 0.4 + 0.75)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()


def test_no_nan_when_no_term_applies_or_centroids_coincide():
    only_two = torch.randn(4, 8, requires_grad=True)
    loss = rank_loss(only_two, torch.tensor([0.0, 1.0, 1.0, 0.0]))  # every term needs three levels
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(only_two.grad, torch.zeros_like(only_two))
    # all embeddings equal (e.g. dead ReLU features at init): every distance 0, the loss 6 margins' worth
    same = torch.zeros(6, 8, requires_grad=True)
    loss = rank_loss(same, LABELS)
    assert math.isclose(float(loss.detach()), 3 * 0.75 + 3 * 1.5, rel_tol=1e-4)
    loss.backward()
    assert torch.isfinite(same.grad).all()


def test_engagement_loss_is_mse_plus_weighted_rank():
    intensity = torch.tensor([0.1, 0.2, 0.4, 0.5, 0.7, 0.9])
    pooled = torch.randn(6, 4)
    total, parts = engagement_loss(intensity, LABELS)
    assert torch.isclose(total, F.mse_loss(intensity, LABELS)) and set(parts) == {"mse"}
    total, parts = engagement_loss(intensity, LABELS, pooled, rank_weight=0.5)
    assert torch.isclose(total, F.mse_loss(intensity, LABELS) + 0.5 * rank_loss(pooled, LABELS))
    assert set(parts) == {"mse", "rank"}
