"""core.boxes.box_iou: the convention of torchvision.ops.box_iou, on NumPy arrays."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou as torchvision_box_iou

from keenvision.core.boxes import box_iou


def test_box_iou_matches_torchvision_and_handles_empty_boxes():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (40, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], 1)
    ours = box_iou(boxes[:25], boxes[25:])
    theirs = torchvision_box_iou(torch.from_numpy(boxes[:25]), torch.from_numpy(boxes[25:])).numpy()
    assert ours.shape == (25, 15) and np.allclose(ours, theirs)
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10])[0, 0] == 50 / 150
    assert box_iou([3, 3, 3, 3], [3, 3, 3, 3])[0, 0] == 0.0  # an empty union: 0, not NaN
