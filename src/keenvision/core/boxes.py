"""Box geometry shared by the systems, in NumPy for the data and evaluation code that holds boxes as arrays."""

from __future__ import annotations

import numpy as np


def box_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of ``[x1, y1, x2, y2]`` boxes ``[N, 4]`` against ``[M, 4]``, with continuous areas
    ``(x2 - x1) * (y2 - y1)`` (pixel-edge coordinates: pixel i spans [i, i + 1)). The convention of
    ``torchvision.ops.box_iou`` (a test holds them equal), for NumPy inputs; a pair whose union is empty has IoU 0."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    others = np.asarray(others, np.float64).reshape(-1, 4)
    top_left = np.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_boxes = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_others = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area_boxes[:, None] + area_others[None, :] - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
