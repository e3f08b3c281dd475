"""The DiffRate MAC formula reproduces the published numbers and agrees with a real FLOP counter."""

from __future__ import annotations

import pytest
import timm

from keenvision.diffrate import Schedule, measured_gflops, patch, published_schedule, schedule_gflops

# (timm model, public schedule key or None for no compression, published GFLOPs). The public numbers assume a
# 1000-class head (timm's vit_huge_patch14_224 has none by default).
PUBLISHED = [
    ("deit_small_patch16_224", None, 4.599),
    ("deit_small_patch16_224", ("ViT-S-DeiT", "2.9"), 2.905),
    ("deit_base_patch16_224", ("ViT-B-DeiT", "11.5"), 11.517),
    ("vit_large_patch16_224", ("ViT-L-MAE", "42.3"), 42.290),
    ("vit_huge_patch14_224", ("ViT-H-MAE", "103.4"), 103.337),
]


@pytest.mark.parametrize(("model_name", "schedule_key", "published"), PUBLISHED)
def test_formula_reproduces_published_gflops(model_name, schedule_key, published):
    # meta device: no weights allocated, so ViT-H is free to inspect.
    model = timm.create_model(model_name, pretrained=False, num_classes=1000, device="meta")
    schedule = published_schedule(*schedule_key) if schedule_key else None
    assert round(schedule_gflops(model, schedule), 3) == published


def test_formula_accepts_a_model_name_and_rejects_a_mismatched_schedule():
    assert round(schedule_gflops("deit_small_patch16_224"), 3) == 4.599
    with pytest.raises(ValueError, match="24 blocks"):
        schedule_gflops("deit_small_patch16_224", published_schedule("ViT-L-MAE", "42.3"))


def test_formula_matches_flop_counter_on_compressed_model(make_vit):
    model = make_vit(embed_dim=128, depth=6, num_heads=4)
    schedule = Schedule((65, 60, 50, 40, 30, 20), (65, 50, 45, 30, 25, 10))
    formula = schedule_gflops(model, schedule)
    counted = measured_gflops(model, schedule)
    assert counted == pytest.approx(formula, rel=0.02)
    assert schedule_gflops(model, schedule) < 0.7 * schedule_gflops(model)
    # the patched model's own schedule is restored after counting with another one
    patch(model, Schedule.keep_all(model))
    assert measured_gflops(model, schedule) == pytest.approx(counted)
    assert model.schedule == Schedule.keep_all(model)


def test_measured_flops_of_an_attention_pool_head(make_vit):
    """SigLIP's head (global_pool "map", a learned latent query) once failed inside FlopCounterMode ("Expected
    gradient function to be set"): parameters that require grad reached its module tracker under no_grad."""
    model = make_vit(global_pool="map", class_token=False, embed_dim=64, depth=4, num_heads=2)
    assert model.attn_pool is not None and all(p.requires_grad for p in model.parameters())
    schedule = Schedule((64, 60, 50, 40), (64, 50, 40, 30))
    counted = measured_gflops(model, schedule)
    assert counted == pytest.approx(schedule_gflops(model, schedule), rel=0.1)  # the head is outside the formula
    assert counted < measured_gflops(model)
    assert all(p.requires_grad for p in model.parameters())  # restored after the count
