"""Names -> the models and schedules DiffRate works on, each checked against the other.

Models: timm ViTs by name (random weights unless ``pretrained=True``, which downloads from the hub and is therefore
never a default), our safetensors exports (`keenvision.diffrate.train`), and the shipped CIFAR-10 ViT
(``cifar10-vit``). Schedules: a schedule JSON (ours or one public entry), ``compression_rate.json#MODEL/GFLOPS``,
``published:MODEL/GFLOPS`` for the public schedules in ``published_schedules.json``, or ``shipped:MODEL/GFLOPS``
for the project's own searches for its shipped models (``shipped_schedules.json``, e.g. ``shipped:cifar10-vit/0.11``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import yaml
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer

from ..core.device import resolve_device
from ..core.registry import shipped_files
from ..core.weights import load_into, open_weights
from .data import CIFAR10_MEAN, CIFAR10_STD
from .method.flops import ViTCostConfig, vit_cost_config
from .method.schedule import Schedule, published_schedule, shipped_schedule

SHIPPED = shipped_files("diffrate")  # {"cifar10-vit": ...}, from weights/registry.json
FAMILIES = (VisionTransformer, Eva)  # the timm classes diffrate.patch supports
PUBLISHED_PREFIX = "published:"
SHIPPED_PREFIX = "shipped:"


def check_family(model: torch.nn.Module, name: str) -> None:
    """One-line ValueError unless ``model`` is of a family DiffRate compresses."""
    if not isinstance(model, FAMILIES):
        raise ValueError(f"{name} is a {type(model).__name__}; DiffRate compresses timm VisionTransformer and Eva "
                         "(EVA-02, vit_*_rope_*) models")


def vit_from_export(name_or_path: str | Path) -> VisionTransformer:
    """A ViT from ``cifar10-vit`` or a safetensors file written by `keenvision.diffrate.train` (architecture in its
    metadata), through the one weights resolver."""
    weights = open_weights(name_or_path, "diffrate", "DiffRate ViT", "`keen diffrate train --config "
                           "configs/diffrate/cifar10_vit.yaml`", required=("architecture",))
    architecture = yaml.safe_load(weights.metadata["architecture"])
    model = VisionTransformer(**architecture)
    load_into(model, weights.state(), str(weights.path))
    if architecture.get("num_classes") == 10 and architecture.get("img_size") == 32:
        # CIFAR-10 statistics, whole 32x32 image (no crop): what the training recipe used
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
                                "input_size": (3, 32, 32), "crop_pct": 1.0}
    return model.eval()


def _timm_vit(name: str, pretrained: bool = False, device: str | None = None) -> torch.nn.Module:
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: give a timm model name, a .safetensors export or one of "
                         f"{sorted(SHIPPED)}")
    model = timm.create_model(name, pretrained=pretrained, device=device)
    check_family(model, name)
    return model


def load_model(name: str, pretrained: bool = False) -> torch.nn.Module:
    """``"cifar10-vit"`` (shipped), a ``.safetensors`` export, or any timm ViT name (e.g.
    ``deit_small_patch16_224``), in eval mode. Unknown names raise ValueError with one line."""
    if name in SHIPPED or name.endswith(".safetensors"):
        return vit_from_export(name)
    return _timm_vit(name, pretrained).eval()


def load(name_or_path: str | Path, device: str | torch.device | None = None) -> torch.nn.Module:
    """The system contract's loader: `load_model` (no download) on ``device`` (default: CUDA when available)."""
    return load_model(str(name_or_path)).to(resolve_device(device))


def model_cost_config(name: str) -> ViTCostConfig:
    """The cost config of a model name without allocating weights where possible (timm names: meta device)."""
    if name in SHIPPED or name.endswith(".safetensors"):
        return vit_cost_config(load_model(name))
    return vit_cost_config(_timm_vit(name, device="meta"))


def load_schedule(text: str, model_or_config: Any) -> Schedule:
    """Load ``text`` (a file, ``FILE#MODEL/GFLOPS``, ``published:`` or ``shipped:MODEL/GFLOPS``) for the model."""
    for prefix, packaged in ((PUBLISHED_PREFIX, published_schedule), (SHIPPED_PREFIX, shipped_schedule)):
        if text.startswith(prefix):
            model_key, slash, gflops_key = text[len(prefix):].partition("/")
            if not slash or not model_key or not gflops_key:
                raise ValueError(f"{text!r} must look like {prefix}MODEL/GFLOPS, e.g. published:ViT-S-DeiT/2.9")
            schedule = packaged(model_key, gflops_key)
            break
    else:
        schedule = Schedule.load(text)
    config = vit_cost_config(model_or_config)
    try:
        return schedule.validate(config.depth, config.tokens, config.num_prefix_tokens)
    except ValueError as error:
        raise ValueError(f"{text}: {error}") from None
