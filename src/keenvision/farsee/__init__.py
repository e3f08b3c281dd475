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

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {  # submodule: the public names it defines
    ".data": ("IMAGENET_MEAN", "IMAGENET_STD", "CamVidDataset", "CityscapesDataset", "TrainAugmentation",
              "class_frequencies"),
    ".evaluate": ("evaluate_segmentation",),
    ".export": ("export_onnx",),
    ".losses": ("enet_class_weights", "ohem_cross_entropy", "weighted_cross_entropy"),
    ".model": ("CFASPP", "FarSeeNet", "build_farsee", "load_farsee"),
    ".segment": ("Segmentation", "Segmenter", "class_palette", "overlay"),
    ".train": ("train_farsee",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
