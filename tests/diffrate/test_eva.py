"""DiffRate on timm's Eva family (EVA-02, RoPE ViTs), random weights: keep-all exactness, the rotary embedding
following the tokens that are kept and merged, the FLOPs formula against the counted FLOPs, the command line."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from keenvision.cli import main
from keenvision.diffrate import Schedule, measured_gflops, patch, schedule_gflops, unpatch
from keenvision.diffrate.method.baseline import uniform_schedule

# small versions of each variant: 4 blocks on 64x64 images (16 patches of 16 pixels, or 4x4 of 14 for EVA-02)
VARIANTS = {
    "eva02_tiny_patch14_224": dict(img_size=56),                          # SwiGLU MLP, abs + RoPE, avg pool
    "vit_small_patch16_rope_224": dict(img_size=64),                      # AttentionRope, class-token pool
    "vit_small_patch16_rope_mixed_224": dict(img_size=64),                # a rotary embedding per block
    "vit_base_patch16_rope_reg1_gap_256": dict(img_size=64, embed_dim=192, num_heads=3),  # register, no class
}


def tiny_eva(name: str, **overrides):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, depth=4, **{**VARIANTS[name], **overrides})
    with torch.no_grad():  # randomise the zero-initialised parameters, so importance and merges are not degenerate
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.eval()


def images_for(model, count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(1))


def tokens_of(model) -> int:
    return model.patch_embed.num_patches + model.num_prefix_tokens


@pytest.mark.parametrize("name", list(VARIANTS))
def test_keep_all_is_exact_and_unpatch_restores(name):
    model = tiny_eva(name)
    images = images_for(model)
    with torch.no_grad():
        reference = model(images)
        patch(model)
        kept_all = model(images)
        unpatch(model)
        restored = model(images)
    torch.testing.assert_close(kept_all, reference, rtol=0, atol=1e-6)
    assert torch.equal(restored, reference) and type(model).__name__ == "Eva"


def _masked_reference(model, images, keep: torch.Tensor, after_block: int) -> torch.Tensor:
    """The unpatched model with the tokens outside ``keep`` [B, N] hidden as keys from block ``after_block + 1``
    on: for the kept tokens this is what removing the others computes, with every token at its own position."""
    x = model.patch_embed(images)
    x, rope = model._pos_embed(x)
    x = model.norm_pre(x)
    mask = torch.zeros(keep.shape, dtype=x.dtype).masked_fill(~keep, float("-inf"))[:, None, None, :]
    for index, block in enumerate(model.blocks):
        block_rope = rope[index] if getattr(model, "rope_mixed", False) else rope
        x = block(x, rope=block_rope, attn_mask=mask if index > after_block else None)
    return model.forward_head(model.norm(x))


@pytest.mark.parametrize("name", ["vit_small_patch16_rope_224", "vit_small_patch16_rope_mixed_224"])
def test_pruned_tokens_keep_their_rotary_positions(name):
    model = tiny_eva(name)
    images = images_for(model)
    tokens = tokens_of(model)
    kept = tokens - 7
    schedule = Schedule((tokens, kept, kept, kept), (tokens, kept, kept, kept))  # block 1 prunes 7, nothing merges
    with torch.no_grad():
        patch(model, schedule, trace_source=True)
        compressed = model(images)
        keep = model.token_sources.sum(dim=1) > 0  # [B, N]: input tokens still present
        positions = model.token_positions
        unpatch(model)
        reference = _masked_reference(model, images, keep, after_block=1)
    assert keep.sum(dim=1).tolist() == [kept] * len(images)
    # the positions are those of the kept patches, in the model's importance order
    assert sorted(positions[0].tolist()) == (keep[0, 1:].nonzero().flatten()).tolist()
    torch.testing.assert_close(compressed, reference, rtol=1e-4, atol=1e-5)
    # and the check can fail: what a patch that forgets the positions would do, the first rows of the grid's
    # rotary embedding for the tokens left, gives other logits
    grid = model.rope.get_embed()
    with torch.no_grad():
        patch(model, schedule)
        for index in (2, 3):
            rows = grid[index] if grid.dim() == 4 else grid
            model.blocks[index].diffrate_rope = lambda rows=rows: rows[..., : kept - 1, :]
        wrong = model(images)
    assert (wrong - reference).abs().max() > 1e-3


def test_merged_tokens_stand_at_their_destination():
    model = tiny_eva("vit_small_patch16_rope_224")
    tokens = tokens_of(model)
    schedule = Schedule((tokens, tokens - 2, tokens - 2, tokens - 4), (tokens, tokens - 6, tokens - 8, tokens - 9))
    with torch.no_grad():
        patch(model, schedule, trace_source=True)
        output = model(images_for(model))
    sources, positions = model.token_sources, model.token_positions
    assert output.shape == (2, 10) and positions.shape == (2, tokens - 9 - 1)
    for image in range(2):
        for slot, position in enumerate(positions[image].tolist()):
            assert sources[image, slot + 1, position + 1] == 1  # each token holds the patch it stands at


@pytest.mark.parametrize("name", list(VARIANTS))
def test_formula_matches_the_counted_flops(name):
    model = tiny_eva(name)
    tokens, depth = tokens_of(model), len(model.blocks)
    schedule = uniform_schedule(model, 0.6 * schedule_gflops(model))
    assert schedule.kept_tokens_per_block(tokens)[-1] < tokens
    for chosen in (None, schedule):
        formula, counted = schedule_gflops(model, chosen), measured_gflops(model, chosen)
        assert counted == pytest.approx(formula, rel=0.02), (name, chosen)
    assert len(schedule.prune_kept) == depth


def test_swiglu_mlp_is_counted_as_it_is():
    from keenvision.diffrate.method.flops import vit_cost_config

    model = tiny_eva("eva02_tiny_patch14_224", mlp_ratio=2.0)  # not the 8/3 that makes SwiGLU equal 8 C^2
    config = vit_cost_config(model)
    mlp = model.blocks[0].mlp
    assert config.mlp_macs_per_token == sum(m.weight.numel() for m in (mlp.fc1, mlp.fc2)) != 8 * config.embed_dim**2
    assert measured_gflops(model) == pytest.approx(schedule_gflops(model), rel=0.02)


def test_patch_dropout_and_other_blocks_are_refused():
    model = tiny_eva("vit_small_patch16_rope_224", patch_drop_rate=0.1)
    with pytest.raises(ValueError, match="patch dropout"):
        patch(model)
    assert type(model).__name__ == "Eva"


def test_command_line_uniform_flops_and_bench(capsys, tmp_path):
    name = "vit_small_patch16_rope_224"
    out = tmp_path / "uniform.json"
    assert main(["diffrate", "uniform", "--model", name, "--target-gflops", "3.0", "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["gflops"] <= 3.0
    assert main(["diffrate", "flops", "--model", name, "--schedule", str(out), "--json"]) == 0
    flops = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert flops["measured_gflops"] == pytest.approx(flops["gflops"], rel=0.02)
