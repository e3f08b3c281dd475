"""Finding a schedule: the differentiable rates (`rate`), the masked search of a frozen ViT (`differentiable`) and
the exact-budget pattern search that polishes a schedule (`refine`)."""

from ...core.lazy import lazy_exports

_EXPORTS = {  # submodule: the public names it defines
    ".differentiable": ("DEFAULT_SEARCH_CONFIG", "MaskedRateSearch", "SearchModule", "initial_schedule",
                        "load_search_config", "search"),
    ".refine": ("DistillationObjective", "load_images", "refine_schedule"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
