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

from pathlib import Path

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {
    "FaceIdentityDataset": ".data",
    "degrade": ".data",
    "denormalise": ".data",
    "normalise": ".data",
    "prepare_faces": ".data",
    "evaluate_hallucination": ".evaluate",
    "HallucinatedFace": ".hallucinate",
    "Hallucinator": ".hallucinate",
    "bicubic_upscale": ".hallucinate",
    "margin_loss": ".losses",
    "pixel_loss": ".losses",
    "super_identity_loss": ".losses",
    "ArcFaceHead": ".model",
    "CosFaceHead": ".model",
    "HallucinationNet": ".model",
    "RecognitionNet": ".model",
    "SphereFaceHead": ".model",
    "load_cnn_h": ".model",
}
lazy_exports(__name__, _EXPORTS)


def train_sicnn(config_path: str | Path | None, overrides: dict | None = None) -> Path:
    """See `keenvision.sicnn.train.train_sicnn` (imported lazily: Lightning is slow to import)."""
    from .train import train_sicnn as train

    return train(config_path, overrides)


__all__ = [
    "ArcFaceHead",
    "CosFaceHead",
    "FaceIdentityDataset",
    "HallucinatedFace",
    "HallucinationNet",
    "Hallucinator",
    "RecognitionNet",
    "SphereFaceHead",
    "bicubic_upscale",
    "degrade",
    "denormalise",
    "evaluate_hallucination",
    "load_cnn_h",
    "margin_loss",
    "normalise",
    "pixel_loss",
    "prepare_faces",
    "super_identity_loss",
    "train_sicnn",
]
