"""Token operations of one DiffRate block: importance, sorting, pruning, merging, proportional attention.

Pure functions on batched tensors; shapes use B = batch, H = heads, N = tokens (prefix tokens first), P = prefix
tokens (class token, plus register/distillation tokens where a model has them), C = channels.

DiffRate (Chen et al., ICCV 2023; notes "What one compressed block does") sorts the patch tokens of
each image by class attention, prunes the tail, then merges the next-least-important tokens into their most
similar kept token. Prefix tokens never move, are never pruned and are never merge destinations.
"""

from __future__ import annotations

import torch

# Merge weighting choices. "mean" is the public DiffRate code: scatter_reduce(mean) including the destination
# itself (every token weighs 1), with the destination's size growing by similarity * size(source). The published
# schedules were searched with it, so it is the default. "size_weighted" is ToMe's: a size-weighted average and
# plain size sums, so that a token always stands for exactly `size` patches.
MERGE_MODES = ("mean", "size_weighted")


def class_attention_importance(attention: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Importance of each patch token: class-token attention averaged over heads (notes step 1).

    Args:
        attention: [B, H, Q, N] attention probabilities whose query 0 is the class token (Q = N or Q = 1).
        num_prefix_tokens: P; key columns [0, P) are prefix tokens and get no importance.

    Returns:
        [B, N - P] importance of the patch tokens.
    """
    return attention[:, :, 0, num_prefix_tokens:].mean(dim=1)


def received_attention_importance(attention: torch.Tensor, num_prefix_tokens: int = 0) -> torch.Tensor:
    """Importance for models without a class token: attention a token receives, averaged over heads and queries.

    Args:
        attention: [B, H, N, N] attention probabilities.
        num_prefix_tokens: P; key columns [0, P) are prefix tokens and get no importance.

    Returns:
        [B, N - P] importance of the patch tokens.
    """
    return attention[:, :, :, num_prefix_tokens:].mean(dim=(1, 2))


def importance_order(importance: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Token order: prefix tokens in place, then patch tokens by descending importance.

    Args:
        importance: [B, N - P] patch-token importance.
        num_prefix_tokens: P.

    Returns:
        [B, N] long indices into the token axis; ``order[:, :P] == arange(P)``.
    """
    batch = importance.shape[0]
    # stable sort: ties (e.g. identical tokens) are ordered the same at any batch size.
    patch_order = torch.sort(importance, dim=1, descending=True, stable=True).indices + num_prefix_tokens
    prefix_order = torch.arange(num_prefix_tokens, device=importance.device).expand(batch, num_prefix_tokens)
    return torch.cat([prefix_order, patch_order], dim=1)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select/reorder tokens per image.

    Args:
        tokens: [B, N, *rest] (rest may be empty, e.g. sizes [B, N]).
        index: [B, K] long indices into the token axis.

    Returns:
        [B, K, *rest].
    """
    batch, count = index.shape
    if tokens.dim() == 2 and batch > 1:  # per-token scalars: gather is the fastest here
        return torch.gather(tokens, 1, index)
    # Whole token rows: one index_select on the flattened batch copies rows, 5-12x faster on the CPU than gather
    # with an index expanded over the channels (measured at batch 1, 8 and 64, DeiT-S widths).
    if batch == 1:
        return tokens[0].index_select(0, index[0]).unsqueeze(0)
    rows = (index + torch.arange(batch, device=index.device).unsqueeze(1) * tokens.shape[1]).reshape(-1)
    return tokens.flatten(0, 1).index_select(0, rows).reshape(batch, count, *tokens.shape[2:])


def match_to_destinations(
    metric: torch.Tensor, kept: int, num_prefix_tokens: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign every source token [kept, K) to its most cosine-similar destination in [P, kept).

    Args:
        metric: [B, K, C] features to compare (DiffRate uses the hidden state after the attention residual,
            detached; the caller detaches).
        kept: tokens left after merging; positions [0, kept) are destinations, [kept, K) are sources.
        num_prefix_tokens: P; prefix tokens are never destinations (class token column set to -inf).

    Returns:
        destination: [B, K - kept] long index in [P, kept) of each source's destination.
        similarity: [B, K - kept] cosine similarity to that destination.
    """
    if kept <= num_prefix_tokens:
        raise ValueError(f"merging to {kept} tokens leaves no patch destination (prefix tokens: {num_prefix_tokens})")
    with torch.no_grad():
        # Cosine similarity without normalising the [B, K, C] metric: raw products, then the norms folded into the
        # small [B, K - kept, kept - P] result (the argmax over destinations ignores the source's norm). Slicing
        # the destinations at P replaces masking the prefix columns. Half the CPU time of the normalised form at
        # batch 1.
        inverse_norm = metric.norm(dim=-1).clamp_min(1e-12).reciprocal()  # [B, K]
        raw = metric[:, kept:] @ metric[:, num_prefix_tokens:kept].transpose(1, 2)
        best, destination = (raw * inverse_norm[:, None, num_prefix_tokens:kept]).max(dim=-1)
        best_similarity = best * inverse_norm[:, kept:]
    return destination + num_prefix_tokens, best_similarity


def _flat_destination(destination: torch.Tensor, kept: int) -> torch.Tensor:
    """[B, S] destination indices -> [B * S] row indices into the [B * kept] flattened destinations."""
    if destination.shape[0] == 1:
        return destination[0]
    offsets = torch.arange(destination.shape[0], device=destination.device).unsqueeze(1) * kept
    return (destination + offsets).reshape(-1)


def _add_into_destinations(tokens: torch.Tensor, destination: torch.Tensor, kept: int) -> tuple[torch.Tensor, ...]:
    """Destinations [0, kept) plus the sum of their sources, flattened to [B * kept, *rest]; and the flat index."""
    batch = tokens.shape[0]
    flat = _flat_destination(destination, kept)
    sources = tokens[:, kept:].reshape(-1, *tokens.shape[2:])
    # out-of-place index_add: the input stays intact for autograd (search) and for the caller
    return tokens[:, :kept].reshape(batch * kept, *tokens.shape[2:]).index_add(0, flat, sources), flat


def merge_tokens(tokens: torch.Tensor, destination: torch.Tensor, kept: int, reduce: str = "mean") -> torch.Tensor:
    """Fold sources [kept, K) into destinations [0, kept) (destination itself included).

    Args:
        tokens: [B, K, C] (or [B, K] for per-token scalars).
        destination: [B, K - kept] from :func:`match_to_destinations`.
        kept: tokens left after merging.
        reduce: "mean" (unweighted mean of destination and its sources, the public DiffRate merge), "sum", or
            "amax" (used to merge one-hot source maps).

    Returns:
        [B, kept, C] (or [B, kept]).
    """
    batch = tokens.shape[0]
    if reduce in ("mean", "sum"):
        # One index_add into the flattened destinations: the fewest launches on the CPU (a batched 0/1-assignment
        # matmul and scatter_reduce were both slower at batch 1 to 64); the same values up to float rounding.
        merged, flat = _add_into_destinations(tokens, destination, kept)
        if reduce == "mean":
            count = torch.bincount(flat, minlength=batch * kept).to(merged.dtype)
            merged = merged * (1 + count).reciprocal().reshape(-1, *([1] * (tokens.dim() - 2)))
        return merged.reshape(batch, kept, *tokens.shape[2:])
    squeeze = tokens.dim() == 2
    if squeeze:
        tokens = tokens.unsqueeze(-1)
    index = destination.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    merged = tokens[:, :kept].scatter_reduce(1, index, tokens[:, kept:], reduce=reduce, include_self=True)
    return merged.squeeze(-1) if squeeze else merged


def size_weighted_merge(
    tokens: torch.Tensor, size: torch.Tensor, destination: torch.Tensor, kept: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's merge: size-weighted average of destination and sources; sizes add up.

    Args:
        tokens: [B, K, C].
        size: [B, K] patches each token stands for.
        destination: [B, K - kept].
        kept: tokens left after merging.

    Returns:
        merged tokens [B, kept, C] and their sizes [B, kept].
    """
    weighted_sum = merge_tokens(tokens * size.unsqueeze(-1), destination, kept, reduce="sum")
    merged_size = merge_tokens(size, destination, kept, reduce="sum")
    return weighted_sum / merged_size.unsqueeze(-1), merged_size


def similarity_weighted_sizes(
    size: torch.Tensor, destination: torch.Tensor, similarity: torch.Tensor, kept: int
) -> torch.Tensor:
    """Sizes after the public DiffRate merge: a destination grows by ``similarity * size(source)``.

    The public code notes this helps off-the-shelf accuracy. A negative similarity would shrink a size, possibly to
    <= 0, where log(size) in proportional attention is -inf or NaN; we clamp the similarity at 0 (a dissimilar
    source adds no weight), which leaves every size >= 1.

    Args:
        size: [B, K]; destination, similarity: [B, K - kept]; kept: tokens left.

    Returns:
        [B, kept] sizes.
    """
    source_weight = (size[:, kept:] * similarity.clamp_min(0).to(size.dtype)).reshape(-1)
    merged = size[:, :kept].reshape(-1).index_add(0, _flat_destination(destination, kept), source_weight)
    return merged.reshape(size.shape[0], kept)


def proportional_attention_bias(size: torch.Tensor) -> torch.Tensor:
    """Additive attention-logit bias log(size) (ToMe's proportional attention; notes step 4).

    Args:
        size: [B, N] positive token sizes.

    Returns:
        [B, 1, 1, N] bias broadcasting over heads and queries.
    """
    # sizes are >= 1 by construction; the clamp only keeps a corrupted size from turning logits into NaN.
    return size.clamp_min(torch.finfo(size.dtype).tiny).log()[:, None, None, :]


def initial_sources(batch: int, tokens: int, device: torch.device | str | None = None) -> torch.Tensor:
    """One-hot source map for tracing merges: [B, N, N], token i made of input token i."""
    return torch.eye(tokens, device=device).expand(batch, tokens, tokens)


def patch_assignment(sources: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """For visualisation: which output token each input patch ended up in.

    Args:
        sources: [B, N_out, N_in] 0/1 source map (``model.token_sources`` after ``patch(..., trace_source=True)``).
        num_prefix_tokens: P; the first P input tokens are not patches.

    Returns:
        [B, N_in - P] long index of the output token holding each patch, -1 where the patch was pruned.
        Reshape to the patch grid (e.g. 14 x 14) to colour merged regions.
    """
    patch_sources = sources[:, :, num_prefix_tokens:]
    holder = patch_sources.argmax(dim=1)
    return torch.where(patch_sources.sum(dim=1) > 0, holder, torch.full_like(holder, -1))
