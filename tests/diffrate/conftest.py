"""Small random-weight ViTs for the DiffRate tests (no network, no downloads)."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer


def tiny_vit(**overrides) -> VisionTransformer:
    """A 4-block, 64-wide ViT on 32x32 images: 64 patches + class token = 65 tokens."""
    torch.manual_seed(0)
    config = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2, num_classes=10)
    config.update(overrides)
    model = VisionTransformer(**config).eval()
    # timm zero-initialises some parameters (class token, head bias); randomise everything so that token
    # importance and merges are not degenerate.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


@pytest.fixture
def make_vit():
    """The :func:`tiny_vit` factory, for tests that need several variants."""
    return tiny_vit


@pytest.fixture
def images() -> torch.Tensor:
    """[3, 3, 32, 32] random images."""
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
