"""Token operations: ordering, merging, sizes, proportional attention."""

from __future__ import annotations

import torch

from keenvision.diffrate.method.merge import (
    class_attention_importance,
    gather_tokens,
    importance_order,
    match_to_destinations,
    merge_tokens,
    proportional_attention_bias,
    similarity_weighted_sizes,
    size_weighted_merge,
)


def test_importance_order_keeps_prefix_first_and_sorts_descending():
    attention = torch.zeros(1, 2, 5, 5)
    attention[0, :, 0] = torch.tensor([0.9, 0.1, 0.4, 0.2, 0.3])
    importance = class_attention_importance(attention)
    assert importance.shape == (1, 4)
    assert importance_order(importance).tolist() == [[0, 2, 4, 3, 1]]


def test_merge_never_uses_the_class_token_as_destination():
    # every source is identical to the class token, which must still not receive them
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [1.0, 0.01]]])
    destination, similarity = match_to_destinations(tokens, kept=3)
    assert (destination >= 1).all()
    assert destination.tolist() == [[2, 2]]
    assert similarity.shape == (1, 2)


def test_official_mean_merge_and_similarity_weighted_sizes():
    tokens = torch.tensor([[[0.0], [2.0], [4.0], [6.0]]])
    destination = torch.tensor([[1, 1]])
    merged = merge_tokens(tokens, destination, kept=2, reduce="mean")
    assert merged.tolist() == [[[0.0], [4.0]]]  # (2 + 4 + 6) / 3: the destination counts once
    size = torch.ones(1, 4)
    sizes = similarity_weighted_sizes(size, destination, torch.tensor([[0.5, -0.3]]), kept=2)
    assert sizes.tolist() == [[1.0, 1.5]]  # a negative similarity adds nothing


def test_size_weighted_merge_is_tome_average():
    tokens = torch.tensor([[[0.0], [2.0], [8.0]]])
    size = torch.tensor([[1.0, 3.0, 1.0]])
    merged, merged_size = size_weighted_merge(tokens, size, torch.tensor([[1]]), kept=2)
    assert merged_size.tolist() == [[1.0, 4.0]]
    assert merged[0, 1, 0].item() == (3 * 2.0 + 8.0) / 4


def test_gather_tokens_and_proportional_bias_shapes():
    tokens = torch.arange(12.0).reshape(1, 4, 3)
    assert gather_tokens(tokens, torch.tensor([[0, 3]])).tolist() == [[[0, 1, 2], [9, 10, 11]]]
    assert gather_tokens(torch.tensor([[5.0, 6.0, 7.0]]), torch.tensor([[2, 0]])).tolist() == [[7.0, 5.0]]
    bias = proportional_attention_bias(torch.tensor([[1.0, 2.0]]))
    assert bias.shape == (1, 1, 1, 2) and torch.allclose(bias.flatten(), torch.tensor([0.0, 0.6931]), atol=1e-4)
    assert torch.isfinite(proportional_attention_bias(torch.tensor([[0.0]]))).all()


def _reference_gather(tokens, index):
    expanded = index.reshape(*index.shape, *([1] * (tokens.dim() - 2))).expand(-1, -1, *tokens.shape[2:])
    return torch.gather(tokens, 1, expanded)


def _reference_merge(tokens, destination, kept, reduce):
    squeeze = tokens.dim() == 2
    tokens = tokens.unsqueeze(-1) if squeeze else tokens
    index = destination.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    merged = tokens[:, :kept].scatter_reduce(1, index, tokens[:, kept:], reduce=reduce, include_self=True)
    return merged.squeeze(-1) if squeeze else merged


def test_fast_gather_and_merge_match_the_scatter_reference():
    # gather_tokens (index_select) and merge_tokens (bmm) take faster routes than gather / scatter_reduce; they must
    # give the same tokens at batch 1 and above, for token rows, per-token scalars and extra trailing dims
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        for shape in ((batch, 20, 8), (batch, 20), (batch, 20, 2, 4)):
            tokens = torch.randn(*shape, generator=generator)
            index = torch.stack([torch.randperm(20, generator=generator)[:11] for _ in range(batch)])
            assert torch.equal(gather_tokens(tokens, index), _reference_gather(tokens, index))
        kept = 12
        destination = torch.randint(1, kept, (batch, 8), generator=generator)
        for shape in ((batch, 20, 8), (batch, 20)):
            tokens = torch.randn(*shape, generator=generator)
            for reduce in ("mean", "sum", "amax"):
                fast = merge_tokens(tokens, destination, kept, reduce=reduce)
                assert torch.allclose(fast, _reference_merge(tokens, destination, kept, reduce), atol=1e-5), reduce
