"""patch/unpatch on timm ViTs: exactness without compression, schedule invariants, batch invariance."""

from __future__ import annotations

import pytest
import timm
import torch

from keenvision.diffrate import Schedule, is_patched, patch, patch_assignment, published_schedule, unpatch

NON_MONOTONE = Schedule((65, 40, 50, 30), (60, 45, 35, 12))


def _tokens_after_each_block(model, images) -> list[int]:
    """Run `model` and record the token count each block outputs."""
    counts = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: counts.append(out.shape[1])) for block in model.blocks]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return counts


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("variant", ["class_token", "global_pool", "no_class_token"])
def test_keep_all_reproduces_logits_and_unpatch_restores_exactly(make_vit, images, variant, fused):
    overrides = {
        "class_token": {},
        "global_pool": {"global_pool": "avg", "fc_norm": True},
        "no_class_token": {"global_pool": "avg", "class_token": False},
    }[variant]
    model = make_vit(**overrides)
    for block in model.blocks:
        block.attn.fused_attn = fused
    state_keys = list(model.state_dict())
    with torch.no_grad():
        reference = model(images)
        patch(model)
        assert is_patched(model) and isinstance(model, timm.models.vision_transformer.VisionTransformer)
        assert list(model.state_dict()) == state_keys
        torch.testing.assert_close(model(images), reference, atol=1e-5, rtol=0)
        model.schedule = Schedule((64, 50, 40, 30), (60, 45, 30, 20))
        assert not torch.allclose(model(images), reference, atol=1e-3)
        unpatch(model)
        assert type(model) is timm.models.vision_transformer.VisionTransformer and not is_patched(model)
        assert all(not hasattr(block, "_diffrate_state") for block in model.blocks)
        assert torch.equal(model(images), reference)


@pytest.mark.parametrize("variant", [{}, {"global_pool": "avg", "class_token": False}])
def test_token_counts_follow_the_non_increasing_schedule(make_vit, images, variant):
    # a model without class token has 64 tokens, so its schedule starts at 64
    schedule = Schedule((64, *NON_MONOTONE.prune_kept[1:]), NON_MONOTONE.merge_kept)
    model = patch(make_vit(**variant), schedule)
    tokens = 65 if variant == {} else 64
    assert _tokens_after_each_block(model, images) == schedule.kept_tokens_per_block(tokens)
    assert NON_MONOTONE.kept_tokens_per_block(65) == [60, 40, 35, 12]


def test_class_token_stays_first_and_is_never_pruned_or_merged_into(make_vit, images):
    model = patch(make_vit(), NON_MONOTONE, trace_source=True)
    with torch.no_grad():
        model(images)
    sources = model.token_sources  # [B, 12, 65]
    assert sources.shape == (3, 12, 65)
    # output token 0 holds exactly input token 0 (the class token) and nothing else holds it
    assert torch.equal(sources[:, 0], torch.nn.functional.one_hot(torch.zeros(3, dtype=torch.long), 65).float())
    assert sources[:, 1:, 0].sum() == 0
    # every input patch is in at most one output token (pruned patches are in none)
    assert sources.sum(dim=1).max() == 1
    assignment = patch_assignment(sources)  # [B, 64]: output token per patch, -1 if pruned
    assert assignment.shape == (3, 64) and (assignment != 0).all() and (assignment == -1).any()
    # pure merging (no pruning) keeps every patch in some token
    model.schedule = Schedule((65,) * 4, (50, 40, 30, 20))
    with torch.no_grad():
        model(images)
    assert torch.equal(model.token_sources.sum(dim=1), torch.ones(3, 65))


def test_size_weighted_mode_sizes_count_patches_and_pool_weights_them(make_vit, images):
    model = patch(make_vit(global_pool="avg"), Schedule((65,) * 4, (50, 40, 30, 20)), merge_mode="size_weighted")
    features = {}
    model.fc_norm.register_forward_hook(lambda _m, inputs, _o: features.update(pooled=inputs[0]))
    with torch.no_grad():
        tokens = model.forward_features(images)
        model.forward_head(tokens)
    sizes = model.token_sizes  # [B, 20]
    assert torch.allclose(sizes[:, 1:].sum(dim=1), torch.full((3,), 64.0))
    expected = (tokens[:, 1:] * sizes[:, 1:, None]).sum(1) / sizes[:, 1:].sum(1, keepdim=True)
    torch.testing.assert_close(features["pooled"], expected)


@pytest.mark.parametrize("merge_mode", ["mean", "size_weighted"])
def test_batch_of_one_equals_batch_of_many(make_vit, images, merge_mode):
    model = patch(make_vit(), NON_MONOTONE, merge_mode=merge_mode)
    with torch.no_grad():
        batched = model(images)
        single = torch.cat([model(image[None]) for image in images])
    torch.testing.assert_close(single, batched, atol=1e-5, rtol=1e-5)


def test_fused_and_explicit_attention_agree_under_compression(make_vit, images):
    model = patch(make_vit(), NON_MONOTONE)
    with torch.no_grad():
        fused = model(images)
        for block in model.blocks:
            block.attn.fused_attn = False
        explicit = model(images)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_registry_deit_runs_the_published_schedule():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        reference = model(image)
        patch(model)
        torch.testing.assert_close(model(image), reference, atol=1e-5, rtol=0)
    schedule = published_schedule("ViT-S-DeiT", "2.9")
    model.schedule = schedule
    assert _tokens_after_each_block(model, image) == schedule.kept_tokens_per_block(197)


def test_unsupported_models_and_bad_schedules_raise_value_error(make_vit):
    with pytest.raises(ValueError, match="VisionTransformer"):
        patch(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="VisionTransformer"):
        patch(timm.create_model("resnet18", pretrained=False, device="meta"))
    model = make_vit()
    with pytest.raises(ValueError, match="12 blocks"):
        patch(model, published_schedule("ViT-S-DeiT", "2.9"))
    assert not is_patched(model)  # a failed patch leaves the model untouched
    with pytest.raises(ValueError, match="merge_mode"):
        patch(model, merge_mode="median")
    patch(model)
    with pytest.raises(ValueError, match="exceeds"):
        model.schedule = Schedule((66,) * 4, (65,) * 4)
    assert model.schedule == Schedule.keep_all(model)
