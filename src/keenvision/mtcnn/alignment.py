"""Face alignment: a similarity transform that maps the 5 detected points onto a standard template."""

from __future__ import annotations

import cv2
import numpy as np

# Standard 5-point templates (left eye, right eye, nose, left and right mouth corner) in OpenCV pixel-centre
# coordinates: the 96x112 one of SphereFace/CosFace, and its 112x112 version with 8 px of margin on each side.
_TEMPLATE_96x112 = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                             [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float64)
TEMPLATES = {(96, 112): _TEMPLATE_96x112, (112, 112): _TEMPLATE_96x112 + [8.0, 0.0]}


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``source`` [N, 2] to ``target``
    [N, 2] (Umeyama, 1991); returns the 2x3 matrix."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    centred_source, centred_target = source - source_mean, target - target_mean
    covariance = centred_target.T @ centred_source / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    variance = (centred_source ** 2).sum() / len(source)
    scale = (singular * np.diag(sign)).sum() / variance if variance > 0 else 1.0
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (96, 112)) -> np.ndarray:
    """Warp an RGB ``[H, W, 3]`` image so ``landmarks`` [5, 2] (pixel-edge coordinates, as `MTCNN` returns)
    land on the template for ``size`` = (width, height): (96, 112) or (112, 112)."""
    if tuple(size) not in TEMPLATES:
        raise ValueError(f"size must be one of {sorted(TEMPLATES)}, got {size}")
    landmarks = np.asarray(landmarks, np.float64).reshape(5, 2)
    matrix = similarity_transform(landmarks - 0.5, TEMPLATES[tuple(size)])  # edge -> pixel-centre coordinates
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, tuple(size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
