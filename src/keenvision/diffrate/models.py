"""Models DiffRate compresses: timm ViTs by name (random weights unless ``pretrained=True``, which downloads from
the hub and is therefore never a default), our safetensors exports, and the shipped CIFAR-10 ViT."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import yaml
from safetensors import safe_open
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer

from ..core.registry import shipped_files
from ..core.weights import WeightsError, load_into, load_weights, packaged_weights
from .train import CIFAR10_MEAN, CIFAR10_STD

SHIPPED = shipped_files("diffrate")  # {"cifar10-vit": ...}, from weights/registry.json
FAMILIES = (VisionTransformer, Eva)  # the timm classes diffrate.patch supports


def check_family(model: torch.nn.Module, name: str) -> None:
    """One-line ValueError unless ``model`` is of a family DiffRate compresses."""
    if not isinstance(model, FAMILIES):
        raise ValueError(f"{name} is a {type(model).__name__}; DiffRate compresses timm VisionTransformer and Eva "
                         "(EVA-02, vit_*_rope_*) models")


def vit_from_export(path: str | Path) -> VisionTransformer:
    """A ViT from a safetensors file written by `keenvision.diffrate.train` (architecture in its metadata)."""
    path = Path(path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if "architecture" not in metadata:
        raise WeightsError(f"{path} has no 'architecture' metadata (not written by keenvision.diffrate.train)")
    architecture = yaml.safe_load(metadata["architecture"])
    model = VisionTransformer(**architecture)
    load_into(model, load_weights(path), str(path))
    if architecture.get("num_classes") == 10 and architecture.get("img_size") == 32:
        # CIFAR-10 statistics, whole 32x32 image (no crop): what the training recipe used
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
                                "input_size": (3, 32, 32), "crop_pct": 1.0}
    return model.eval()


def load_model(name: str, pretrained: bool = False) -> torch.nn.Module:
    """``"cifar10-vit"`` (shipped), a ``.safetensors`` export, or any timm ViT name (e.g.
    ``deit_small_patch16_224``). Unknown names raise ValueError with one line."""
    if name in SHIPPED:
        return vit_from_export(packaged_weights(SHIPPED[name]))
    if name.endswith(".safetensors"):
        return vit_from_export(name)
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: give a timm model name, a .safetensors export or one of "
                         f"{sorted(SHIPPED)}")
    model = timm.create_model(name, pretrained=pretrained)
    check_family(model, name)
    return model.eval()
