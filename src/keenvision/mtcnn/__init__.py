"""MTCNN face detection and 5-point alignment (Zhang et al., IEEE SPL 2016)."""

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {
    "TEMPLATES": ".align",
    "align": ".align",
    "similarity_transform": ".align",
    "MTCNN": ".detector",
    "Face": ".detector",
    "pyramid_scales": ".detector",
    "ONet": ".model",
    "PNet": ".model",
    "RNet": ".model",
}
lazy_exports(__name__, _EXPORTS)

__all__ = ["MTCNN", "Face", "PNet", "RNet", "ONet", "align", "similarity_transform", "TEMPLATES",
           "pyramid_scales"]
