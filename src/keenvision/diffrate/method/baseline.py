"""A ToMe-like uniform baseline: merge the same number of tokens in every block, no pruning.

ToMe (Bolya et al., ICLR 2023) merges a constant ``r`` tokens per block. To hit a FLOPs target more finely than an
integer ``r`` allows, the first ``extra`` compressed blocks merge ``r + 1`` (the fractional remainder). Counts are
expressed as a DiffRate :class:`~keenvision.diffrate.schedule.Schedule` (prune counts keep everything), so the
baseline runs through the same patch and the same cost formula as the searched schedules.

Token count after a compressed block: ``max(P + 1, N_in - r_l)``; one patch token always survives (P = prefix
tokens). With ``skip_first_block=True`` (DiffRate's DeiT convention) block 0 is never compressed.
"""

from __future__ import annotations

from typing import Any

from .flops import schedule_gflops, vit_cost_config
from .schedule import Schedule


def uniform_merge_schedule(
    depth: int, tokens: int, r: int, extra: int = 0, num_prefix_tokens: int = 1, skip_first_block: bool = True
) -> Schedule:
    """Merge ``r`` tokens per compressed block, ``r + 1`` in the first ``extra`` of them; never prune.

    Args:
        depth: number of blocks.
        tokens: tokens entering the first block (patches + prefix tokens).
        r: tokens merged per compressed block (>= 0).
        extra: how many of the compressed blocks (counted from the first) merge one more token.
        num_prefix_tokens: class/register tokens, never merged; at least one patch token is always kept.
        skip_first_block: leave block 0 uncompressed (DiffRate's DeiT convention).
    """
    first = 1 if skip_first_block else 0
    compressed = depth - first
    if r < 0 or not 0 <= extra <= max(compressed, 0):
        raise ValueError(f"need r >= 0 and 0 <= extra <= {compressed} compressed blocks, got r={r}, extra={extra}")
    floor = min(tokens, num_prefix_tokens + 1)
    merge_kept, current = [], tokens
    for block in range(depth):
        if block >= first:
            step = r + (1 if block - first < extra else 0)
            current = max(floor, current - step)
        merge_kept.append(current)
    return Schedule((tokens,) * depth, tuple(merge_kept))


def uniform_schedule(model_or_config: Any, target_gflops: float, *, skip_first_block: bool = True) -> Schedule:
    """The uniform-merge schedule whose formula GFLOPs are the largest not above ``target_gflops``.

    Candidates are ordered by ``s = r * compressed_blocks + extra`` (one more merged token at a time), along
    which the cost never increases, so a bisection finds the closest schedule from below.

    Args:
        model_or_config: a timm VisionTransformer, a timm model name, or a ``ViTCostConfig``.
        target_gflops: the budget in GFLOPs (GMACs, as :func:`schedule_gflops`).
        skip_first_block: leave block 0 uncompressed (DiffRate's DeiT convention).

    Raises:
        ValueError: the target is below the cheapest uniform schedule (every compressed block down to one patch
            token) or the model has no block to compress.
    """
    config = vit_cost_config(model_or_config)
    compressed = config.depth - (1 if skip_first_block else 0)
    if compressed < 1:
        raise ValueError(f"a {config.depth}-block model has no block to compress")

    def build(step: int) -> Schedule:
        r, extra = divmod(step, compressed)
        return uniform_merge_schedule(config.depth, config.tokens, r, extra, config.num_prefix_tokens,
                                      skip_first_block)

    def cost(step: int) -> float:
        return schedule_gflops(config, build(step))

    if cost(0) <= target_gflops:
        return build(0)
    last = (config.tokens - config.num_prefix_tokens) * compressed  # every compressed block at the floor
    minimum = cost(last)
    if minimum > target_gflops:
        raise ValueError(f"target {target_gflops:g} GFLOPs is below the {minimum:.3f} GFLOPs reachable by uniform "
                         f"merging (one patch token left)")
    low, high = 0, last  # cost(low) > target >= cost(high)
    while high - low > 1:
        middle = (low + high) // 2
        if cost(middle) <= target_gflops:
            high = middle
        else:
            low = middle
    return build(high)
