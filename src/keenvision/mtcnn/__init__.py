"""MTCNN face detection and 5-point alignment (Zhang et al., IEEE SPL 2016)."""

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {  # submodule: the public names it defines
    ".alignment": ("TEMPLATES", "align", "similarity_transform"),
    ".detector": ("MTCNN", "Face", "pyramid_scales"),
    ".model": ("ONet", "PNet", "RNet"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(name for names in _EXPORTS.values() for name in names)
