"""L_SR, L_SI and the margin loss against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from keenvision.sicnn import CosFaceHead, SphereFaceHead, margin_loss, pixel_loss, super_identity_loss


def test_pixel_loss_reductions():
    torch.manual_seed(0)
    sr, hr = torch.rand(3, 3, 112, 96), torch.rand(3, 3, 112, 96)
    assert pixel_loss(sr, hr).item() == pytest.approx(F.mse_loss(sr, hr).item(), rel=1e-6)
    # the paper's 1/B sum_i ||SR_i - HR_i||^2 is C*H*W times the mean; Caffe's EuclideanLoss is half of it
    per_image = sum(((sr[i] - hr[i]) ** 2).sum().item() for i in range(3)) / 3
    assert pixel_loss(sr, hr, "image_sum").item() == pytest.approx(per_image, rel=1e-5)
    assert pixel_loss(sr, hr, "image_sum").item() == pytest.approx(3 * 112 * 96 * pixel_loss(sr, hr).item(), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        pixel_loss(sr, hr, "sum")


def test_super_identity_loss_by_hand():
    features_sr = torch.tensor([[3.0, 4.0], [2.0, 2.0]])
    features_hr = torch.tensor([[1.0, 0.0], [5.0, 5.0]])
    # sample 1: (0.6, 0.8) vs (1, 0) -> 0.4^2 + 0.8^2 = 0.8; sample 2: parallel -> 0; mean over the batch 0.4
    assert super_identity_loss(features_sr, features_hr).item() == pytest.approx(0.4, abs=1e-6)
    # SirLPS's mean over all B*D elements would give 0.2 here: D times smaller (the reduction its comment flags)
    unit = F.normalize(features_sr, dim=1) - F.normalize(features_hr, dim=1)
    assert super_identity_loss(features_sr, features_hr).item() == pytest.approx(2 * unit.pow(2).mean().item())


def test_super_identity_loss_zero_for_parallel_features_and_equals_two_minus_two_cos():
    torch.manual_seed(1)
    features = torch.randn(5, 512)
    scaled = features * torch.rand(5, 1).add(0.5) * 10
    assert super_identity_loss(scaled, features).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(5, 512)
    expected = (2 - 2 * F.cosine_similarity(features, other, dim=1)).mean()
    assert super_identity_loss(features, other).item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0 <= super_identity_loss(features, -features).item() == pytest.approx(4.0, abs=1e-5)
    # differentiable, and the gradient vanishes at the minimum
    sr = scaled.clone().requires_grad_(True)
    super_identity_loss(sr, features).backward()
    assert sr.grad.abs().max() < 1e-6


def test_margin_loss_is_cross_entropy_of_the_margin_logits():
    torch.manual_seed(2)
    embeddings, labels = torch.randn(6, 16), torch.randint(0, 4, (6,))
    for head in (SphereFaceHead(16, 4, lambda_base=0.0, lambda_min=0.0).eval(), CosFaceHead(16, 4, scale=16.0)):
        loss = margin_loss(head, embeddings, labels)
        assert loss.item() == pytest.approx(F.cross_entropy(head(embeddings, labels), labels).item(), rel=1e-6)
        # the margin makes the task harder than plain softmax on the same logits
        assert loss > F.cross_entropy(head(embeddings), labels)
        assert math.isfinite(loss.item())
