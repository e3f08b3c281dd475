"""SICNN face hallucination (Zhang et al., "Super-Identity Convolutional Neural Network for Face Hallucination",
ECCV 2018): 12x14 -> 96x112 faces with a super-identity loss and domain-integrated training.

Public API:
    HallucinationNet, RecognitionNet                -- CNN-H and CNN-R
    SphereFaceHead, CosFaceHead, ArcFaceHead        -- margin heads for CNN-R (A-Softmax is the paper's)
    pixel_loss, super_identity_loss, margin_loss    -- L_SR, L_SI, L_FR
    degrade, normalise, denormalise                 -- the 8x8 average-pooling LR and the [-1, 1] value range
    prepare_faces, FaceIdentityDataset              -- MTCNN-aligned 96x112 identity folders, split by identity
    load_cnn_h                                      -- shipped ("sicnn-celeba") or exported CNN-H
    train_sicnn                                     -- the training recipe (configs/sicnn/*.yaml)
    Hallucinator, HallucinatedFace, bicubic_upscale -- find, align and super-resolve small faces in photos
    evaluate_hallucination                          -- PSNR/SSIM and identity metrics from an independent recogniser
"""

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {  # submodule: the public names it defines
    ".data": ("FaceIdentityDataset", "degrade", "denormalise", "normalise", "prepare_faces"),
    ".evaluate": ("evaluate_hallucination",),
    ".hallucinate": ("HallucinatedFace", "Hallucinator", "bicubic_upscale"),
    ".losses": ("margin_loss", "pixel_loss", "super_identity_loss"),
    ".model": ("ArcFaceHead", "CosFaceHead", "HallucinationNet", "RecognitionNet", "SphereFaceHead", "load_cnn_h"),
    ".train": ("train_sicnn",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
