"""DiffRate (Chen et al., ICCV 2023): differentiable-rate token pruning and merging for timm ViTs.

Public API:
    Schedule, published_schedule(s), shipped_schedule  -- per-block kept-token counts and their JSON formats
    patch, unpatch, is_patched                           -- run a schedule with real token removal
    patch_assignment                                     -- which output token each patch went to (visualisation)
    schedule_gflops, schedule_macs, measured_gflops      -- the paper's cost formula (MACs) and a counted check
    DifferentiableRate, masked_softmax, differentiable_gflops, compression_loss, schedule_from_rates
                                                         -- the differentiable pieces of the rate search
"""

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {
    "ViTCostConfig": ".flops",
    "measured_gflops": ".flops",
    "schedule_gflops": ".flops",
    "schedule_macs": ".flops",
    "vit_cost_config": ".flops",
    "patch_assignment": ".merge",
    "is_patched": ".patch",
    "patch": ".patch",
    "unpatch": ".patch",
    "DifferentiableRate": ".rate",
    "compression_loss": ".rate",
    "differentiable_gflops": ".rate",
    "masked_softmax": ".rate",
    "schedule_from_rates": ".rate",
    "ste_ceil": ".rate",
    "ste_min": ".rate",
    "Schedule": ".schedule",
    "published_schedule": ".schedule",
    "published_schedules": ".schedule",
    "shipped_schedule": ".schedule",
}
lazy_exports(__name__, _EXPORTS)

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
