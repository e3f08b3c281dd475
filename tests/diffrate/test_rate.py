"""Search pieces: straight-through counts and masks, masked softmax, differentiable GFLOPs."""

from __future__ import annotations

import torch

from keenvision.diffrate import Schedule, schedule_gflops
from keenvision.diffrate.search.rate import (
    DifferentiableRate,
    compression_loss,
    differentiable_gflops,
    masked_softmax,
    schedule_from_rates,
    ste_min,
)


def _random_rate(num_patches: int = 16, granularity: int = 1, seed: int = 0) -> DifferentiableRate:
    rate = DifferentiableRate(num_patches, granularity)
    with torch.no_grad():
        rate.logits.copy_(torch.randn(rate.logits.shape, generator=torch.Generator().manual_seed(seed)))
    return rate


def test_candidates_are_frozen_and_follow_granularity():
    rate = DifferentiableRate(196, granularity=4)
    assert rate.candidates[:3].tolist() == [196.0, 192.0, 188.0] and rate.candidates[-1] == 4
    assert [name for name, _ in rate.named_parameters()] == ["logits"]


def test_kept_count_is_integer_forward_and_soft_gradient_backward():
    rate = _random_rate()
    kept = rate.kept_tokens()
    assert kept.item() == int(kept.item()) and kept.item() == torch.ceil(rate.expected_kept() - 1).item() + 1
    (straight_through_grad,) = torch.autograd.grad(kept, rate.logits)
    (soft_grad,) = torch.autograd.grad(rate.expected_kept(), rate.logits)
    torch.testing.assert_close(straight_through_grad, soft_grad)


def test_token_mask_is_exact_zero_one_with_survival_probability_gradient():
    rate = _random_rate()
    mask = rate.token_mask()
    kept = int(rate.kept_tokens().item())
    assert mask.shape == (17,)
    assert mask.tolist() == [1.0] * kept + [0.0] * (17 - kept)
    weights = torch.arange(17.0)
    (mask_grad,) = torch.autograd.grad((mask * weights).sum(), rate.logits)
    (probability_grad,) = torch.autograd.grad((rate.survival_probability() * weights).sum(), rate.logits)
    torch.testing.assert_close(mask_grad, probability_grad)


def test_survival_probabilities_sum_to_the_expected_count():
    rate = _random_rate()
    probability = rate.survival_probability()
    assert probability[0] == 1 and (probability[1:] <= probability[:-1] + 1e-6).all()
    # sum_j pi_j = sum_i p_i (c_i + P): the soft count of surviving tokens
    torch.testing.assert_close(probability.sum(), rate.expected_kept())


def test_ste_min_value_and_gradients():
    current = torch.tensor(10.0, requires_grad=True)
    prune, merge = torch.tensor(8.0, requires_grad=True), torch.tensor(12.0, requires_grad=True)
    result = ste_min(current, prune, merge)
    assert result.item() == 8.0
    result.backward()
    assert current.grad is None and prune.grad.item() == 1.0 and merge.grad.item() == 1.0


def test_masked_softmax_ignores_removed_keys_and_keeps_rows_normalised():
    logits = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(masked_softmax(logits, torch.ones(2, 5)), logits.softmax(-1), atol=1e-5, rtol=0)
    keep = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]] * 2)
    attention = masked_softmax(logits, keep)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 3, 5), atol=1e-5, rtol=0)
    assert attention[:, :, :3, 3:].max() < 1e-5  # kept queries ignore removed keys
    # a removed query attends to the kept tokens and itself, not to the other removed token
    assert (attention[:, :, 3, 3] > 1e-3).all() and attention[:, :, 3, 4].max() < 1e-5


def test_differentiable_gflops_matches_formula_and_has_gradient(make_vit):
    model = make_vit()
    prune_rates = [_random_rate(64, seed=block) for block in range(4)]
    merge_rates = [_random_rate(64, seed=10 + block) for block in range(4)]
    gflops = differentiable_gflops(
        model, [rate.kept_tokens() for rate in prune_rates], [rate.kept_tokens() for rate in merge_rates]
    )
    schedule = schedule_from_rates(prune_rates, merge_rates)
    assert isinstance(schedule, Schedule)
    torch.testing.assert_close(gflops.double().item(), schedule_gflops(model, schedule), rtol=1e-6, atol=0)
    compression_loss(gflops, target_gflops=0.0).backward()
    assert all(rate.logits.grad.abs().sum() > 0 for rate in prune_rates + merge_rates)
