"""Turn command-line names into models, cost configs and schedules, checking them against each other.

Models: a timm ViT name (random weights; ``pretrained=True`` downloads hub weights, so it is opt-in), a
``.safetensors`` export of ``keenvision.diffrate.train``, or a shipped name such as ``cifar10-vit``.
Schedules: a schedule JSON (ours or one public entry), ``compression_rate.json#MODEL/GFLOPS``, or
``published:MODEL/GFLOPS`` for the public schedules shipped in ``published_schedules.json``, ``shipped:MODEL/GFLOPS``
for the project's own searches for its shipped models (``shipped_schedules.json``, e.g. ``shipped:cifar10-vit/0.11``).
"""

from __future__ import annotations

from typing import Any

from .flops import ViTCostConfig, vit_cost_config
from .models import SHIPPED, load_model
from .schedule import Schedule, published_schedule, shipped_schedule

PUBLISHED_PREFIX = "published:"
SHIPPED_PREFIX = "shipped:"


def model_cost_config(name: str) -> ViTCostConfig:
    """The cost config of a model name without allocating weights where possible (timm names: meta device)."""
    if name in SHIPPED or name.endswith(".safetensors"):
        return vit_cost_config(load_model(name))
    import timm

    from .models import check_family

    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: give a timm model name, a .safetensors export or one of "
                         f"{sorted(SHIPPED)}")
    model = timm.create_model(name, pretrained=False, device="meta")
    check_family(model, name)
    return vit_cost_config(model)


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
