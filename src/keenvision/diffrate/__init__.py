"""DiffRate (Chen et al., ICCV 2023): differentiable-rate token pruning and merging for timm ViTs.

Public API:
    Schedule, published_schedule(s), shipped_schedule  -- per-block kept-token counts and their JSON formats
    patch, unpatch, is_patched                           -- run a schedule with real token removal
    patch_assignment                                     -- which output token each patch went to (visualisation)
    schedule_gflops, schedule_macs, measured_gflops      -- the paper's cost formula (MACs) and a counted check
    DifferentiableRate, masked_softmax, differentiable_gflops, compression_loss, schedule_from_rates
                                                         -- the differentiable pieces of the rate search
"""

from .flops import ViTCostConfig, measured_gflops, schedule_gflops, schedule_macs, vit_cost_config
from .merge import patch_assignment
from .patch import is_patched, patch, unpatch
from .rate import (
    DifferentiableRate,
    compression_loss,
    differentiable_gflops,
    masked_softmax,
    schedule_from_rates,
    ste_ceil,
    ste_min,
)
from .schedule import Schedule, published_schedule, published_schedules, shipped_schedule

__all__ = [
    "DifferentiableRate",
    "Schedule",
    "ViTCostConfig",
    "compression_loss",
    "differentiable_gflops",
    "is_patched",
    "masked_softmax",
    "measured_gflops",
    "patch",
    "patch_assignment",
    "published_schedule",
    "published_schedules",
    "shipped_schedule",
    "schedule_from_rates",
    "schedule_gflops",
    "schedule_macs",
    "ste_ceil",
    "ste_min",
    "unpatch",
    "vit_cost_config",
]
