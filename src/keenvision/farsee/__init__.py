"""FarSee-Net (Zhang & Zhang, ICRA 2020): real-time semantic segmentation with a cascaded factorised ASPP (CF-ASPP)
and feature-space super-resolution, run on a sub-sampled input.

Public API:
    FarSeeNet, CFASPP, build_farsee, load_farsee   -- the model, its decoder alone, construction and loading
    CamVidDataset, CityscapesDataset, TrainAugmentation, class_frequencies
                                                   -- data, augmentation and class statistics
    IMAGENET_MEAN, IMAGENET_STD                    -- the normalisation the models expect (RGB, 0..1 scale)
    weighted_cross_entropy, ohem_cross_entropy, enet_class_weights -- the losses
    train_farsee                                   -- the training recipe (configs/farsee/*.yaml)
    Segmenter, Segmentation, overlay, class_palette -- inference on images, folders and videos; colours
    evaluate_segmentation                          -- mIoU, per-class IoU, pixel accuracy (torchmetrics)
    export_onnx                                    -- ONNX export (the `onnx` extra)
"""

from pathlib import Path

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {
    "IMAGENET_MEAN": ".data",
    "IMAGENET_STD": ".data",
    "CamVidDataset": ".data",
    "CityscapesDataset": ".data",
    "TrainAugmentation": ".data",
    "class_frequencies": ".data",
    "evaluate_segmentation": ".evaluate",
    "export_onnx": ".export",
    "enet_class_weights": ".losses",
    "ohem_cross_entropy": ".losses",
    "weighted_cross_entropy": ".losses",
    "CFASPP": ".model",
    "FarSeeNet": ".model",
    "build_farsee": ".model",
    "load_farsee": ".model",
    "Segmentation": ".segment",
    "Segmenter": ".segment",
    "class_palette": ".segment",
    "overlay": ".segment",
}
lazy_exports(__name__, _EXPORTS)


def train_farsee(config_path: str | Path | None, overrides: dict | None = None) -> Path:
    """See `keenvision.farsee.train.train_farsee` (imported lazily: Lightning is slow to import)."""
    from .train import train_farsee as train

    return train(config_path, overrides)


__all__ = [
    "CFASPP",
    "CamVidDataset",
    "CityscapesDataset",
    "FarSeeNet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Segmentation",
    "Segmenter",
    "TrainAugmentation",
    "build_farsee",
    "class_frequencies",
    "class_palette",
    "enet_class_weights",
    "evaluate_segmentation",
    "export_onnx",
    "load_farsee",
    "ohem_cross_entropy",
    "overlay",
    "train_farsee",
    "weighted_cross_entropy",
]
