"""The differentiable pieces of DiffRate's search (Chen et al., ICCV 2023; notes "Differentiable rate").

A :class:`DifferentiableRate` holds logits over frozen candidate kept-counts; its kept count is an integer in the
forward pass and carries the gradient of the soft expectation backwards (straight-through ceil). During search
the sequence keeps its full length and removed tokens are masked: :meth:`DifferentiableRate.token_mask` gives an
exact 0/1 mask whose gradient is that of the survival probabilities, and :func:`masked_softmax` keeps masked
tokens out of attention. The Lightning module that trains the rates lives elsewhere (``train.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..method.flops import vit_cost_config
from ..method.schedule import Schedule


class _StraightThroughCeil(torch.autograd.Function):
    """ceil forward, identity backward."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor) -> torch.Tensor:
        return torch.ceil(value)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def ste_ceil(value: torch.Tensor) -> torch.Tensor:
    """``ceil(value)`` whose gradient is that of ``value`` (straight-through estimator)."""
    return _StraightThroughCeil.apply(value)


def ste_min(current: torch.Tensor, *kept_counts: torch.Tensor) -> torch.Tensor:
    """``min(current, *kept_counts)`` in value; the gradient reaches every kept count, never `current`.

    This is how the public code counts the MLP's tokens ``N' = min(N, k_p, k_m)`` (notes "FLOPs"): both rate
    modules of a block feel the cost of the MLP whichever of them is binding, and the running count does not carry
    gradient from later blocks.
    """
    value = current.detach()
    for count in kept_counts:
        value = torch.minimum(value, count.detach())
    straight_through = sum(kept_counts) - sum(count.detach() for count in kept_counts)
    return value + straight_through


class DifferentiableRate(nn.Module):
    """Learnable kept-token count of one prune or merge step (the paper's differentiable discrete proxy).

    Args:
        num_patches: patch tokens entering the network (196 for 224/16).
        granularity: gap g between candidate counts; candidates are ``arange(num_patches, 0, -g)`` patches.
        num_prefix_tokens: P, added to every count (class token; never removed).

    Attributes:
        candidates: [M] frozen candidate patch counts (a buffer, not a parameter).
        logits: [M] learnable selection logits; zeros (uniform) at start, as in the public code.
    """

    def __init__(self, num_patches: int, granularity: int = 1, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if num_patches < 1 or granularity < 1:
            raise ValueError(f"need num_patches >= 1 and granularity >= 1, got {num_patches}, {granularity}")
        self.num_patches = num_patches
        self.num_prefix_tokens = num_prefix_tokens
        self.register_buffer("candidates", torch.arange(num_patches, 0, -granularity, dtype=torch.float32))
        self.logits = nn.Parameter(torch.zeros(len(self.candidates)))

    def probabilities(self) -> torch.Tensor:
        """[M] softmax over the candidates."""
        return self.logits.softmax(dim=-1)

    def expected_kept(self) -> torch.Tensor:
        """Soft kept count ``P + sum_i c_i p_i`` (scalar, differentiable, not an integer)."""
        return self.candidates @ self.probabilities() + self.num_prefix_tokens

    def kept_tokens(self) -> torch.Tensor:
        """Kept count ``P + STE_ceil(sum_i c_i p_i)``: an integer value with the soft expectation's gradient."""
        return ste_ceil(self.candidates @ self.probabilities()) + self.num_prefix_tokens

    def survival_probability(self, tokens: int | None = None) -> torch.Tensor:
        """``pi_j = P(token j survives) = sum_{i: c_i + P > j} p_i`` for sorted positions j; [tokens].

        Prefix positions have probability 1. ``tokens`` defaults to ``num_patches + P``.
        """
        tokens = self.num_patches + self.num_prefix_tokens if tokens is None else tokens
        positions = torch.arange(tokens, device=self.candidates.device, dtype=self.candidates.dtype)
        survives = (self.candidates[None, :] + self.num_prefix_tokens > positions[:, None]).to(self.logits.dtype)
        return survives @ self.probabilities()

    def token_mask(self, tokens: int | None = None) -> torch.Tensor:
        """Exact 0/1 keep mask over sorted positions [tokens] with the survival probabilities' gradient.

        ``mask = hard - pi.detach() + pi`` (notes "Differentiable rate"): positions below the (integer) kept count
        are 1, the rest 0. Multiply it into the running mask of earlier blocks, which zeroes positions already gone.
        """
        probability = self.survival_probability(tokens)
        kept = int(self.kept_tokens().item())
        positions = torch.arange(probability.shape[0], device=probability.device)
        hard = (positions < kept).to(probability.dtype)
        return hard - probability.detach() + probability


def masked_softmax(logits: torch.Tensor, keep_mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Attention softmax over kept keys only (DynamicViT's softmax with policy, used by DiffRate's search).

    Every query still attends to itself, so a removed token's row stays well defined; exp runs in fp32 for
    stability under mixed precision; the mask's gradient passes through the product.

    Args:
        logits: [B, H, N, N] attention logits.
        keep_mask: [B, N] 0/1 (possibly straight-through) mask of kept tokens.
        eps: keeps the normalisation finite when a row keeps only itself.

    Returns:
        [B, H, N, N] attention probabilities, dtype of `logits`.
    """
    tokens = logits.shape[-1]
    key_mask = keep_mask.reshape(keep_mask.shape[0], 1, 1, tokens).float()
    eye = torch.eye(tokens, device=logits.device, dtype=torch.float32).view(1, 1, tokens, tokens)
    key_mask = key_mask + (1.0 - key_mask) * eye
    shifted = logits.float() - logits.float().amax(dim=-1, keepdim=True).detach()
    weights = shifted.exp() * key_mask
    return ((weights + eps / tokens) / (weights.sum(dim=-1, keepdim=True) + eps)).to(logits.dtype)


def differentiable_gflops(
    model_or_config: Any, prune_kept: Sequence[torch.Tensor], merge_kept: Sequence[torch.Tensor]
) -> torch.Tensor:
    """The MAC formula of :func:`keenvision.diffrate.flops.schedule_macs` on STE kept counts, in G; scalar tensor.

    Args:
        model_or_config: what :func:`vit_cost_config` accepts.
        prune_kept: one scalar tensor per block (e.g. :meth:`DifferentiableRate.kept_tokens`).
        merge_kept: the same for the merge step.
    """
    config = vit_cost_config(model_or_config)
    if len(prune_kept) != config.depth or len(merge_kept) != config.depth:
        raise ValueError(f"need {config.depth} prune and merge counts, got {len(prune_kept)} and {len(merge_kept)}")
    width = float(config.embed_dim)
    reference = prune_kept[0]
    tokens = torch.tensor(float(config.tokens), device=reference.device)
    macs = tokens * width * config.in_chans * config.patch_pixels + width * config.num_classes
    for prune_count, merge_count in zip(prune_kept, merge_kept):
        macs = macs + tokens * config.attention_macs_per_token + 2 * tokens**2 * width
        tokens = ste_min(tokens, prune_count.float(), merge_count.float())
        macs = macs + tokens * config.mlp_macs_per_token
    return macs / 1e9


def compression_loss(gflops: torch.Tensor, target_gflops: float, weight: float = 5.0) -> torch.Tensor:
    """``weight * (gflops - target)^2``, the cost term of the search loss (notes "Differentiable rate": lambda = 5)."""
    return weight * (gflops - target_gflops) ** 2


def schedule_from_rates(
    prune_rates: Sequence[DifferentiableRate], merge_rates: Sequence[DifferentiableRate]
) -> Schedule:
    """The integer :class:`Schedule` the rate modules currently select."""
    return Schedule(
        tuple(int(rate.kept_tokens().item()) for rate in prune_rates),
        tuple(int(rate.kept_tokens().item()) for rate in merge_rates),
    )
