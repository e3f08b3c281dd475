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
_EXPORTS = {  # submodule: the public names it defines
    ".method.flops": ("ViTCostConfig", "measured_gflops", "schedule_gflops", "schedule_macs", "vit_cost_config"),
    ".method.merge": ("patch_assignment",),
    ".method.patch": ("is_patched", "patch", "unpatch"),
    ".search.rate": ("DifferentiableRate", "compression_loss", "differentiable_gflops", "masked_softmax",
                     "schedule_from_rates", "ste_ceil", "ste_min"),
    ".method.schedule": ("Schedule", "published_schedule", "published_schedules", "shipped_schedule"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(name for names in _EXPORTS.values() for name in names)
