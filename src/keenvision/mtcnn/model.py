"""P-Net, R-Net and O-Net of MTCNN (Zhang et al., 2016), layer for layer as the authors' det1-3.prototxt.

All convolutions have stride 1 and no padding, every conv/FC is followed by a per-channel PReLU, and max-pools
use Caffe's ceil rounding. The released Caffe weights were trained on transposed (column-major MATLAB) images;
`keenvision.mtcnn.caffe` transposes every kernel and reorders the first FC layer once at import, so these modules
take ordinary row-major ``[batch, 3, height, width]`` images normalised as ``(x - 127.5) / 128``.

The paper's figure gives every stage a 5-point landmark head; the released P/R-Net weights have none, so it is
optional there (``landmarks=True`` for models trained with our recipe) and always present on O-Net.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel), nn.PReLU(out_channels)]


def _pool(kernel: int) -> nn.Module:
    return nn.MaxPool2d(kernel, 2, ceil_mode=True)  # Caffe rounds pooled sizes up


class PNet(nn.Module):
    """Proposal network, fully convolutional.

    Input ``[B, 3, H, W]`` (H, W >= 12). Returns ``face_logits [B, 2, h, w]``, ``box_offsets [B, 4, h, w]`` and,
    with ``landmarks=True``, ``landmark_offsets [B, 10, h, w]``; ``h = ceil((H - 2) / 2) - 4``. Each output cell
    sees a 12x12 window, cells are 2 pixels apart.
    """

    input_size = 12

    def __init__(self, landmarks: bool = False):
        super().__init__()
        self.body = nn.Sequential(*_conv(3, 10, 3), _pool(2), *_conv(10, 16, 3), *_conv(16, 32, 3))
        self.face = nn.Conv2d(32, 2, 1)
        self.box = nn.Conv2d(32, 4, 1)
        self.landmarks = nn.Conv2d(32, 10, 1) if landmarks else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.body(images)
        outputs = (self.face(features), self.box(features))
        if self.landmarks is not None:
            outputs += (self.landmarks(features),)
        return outputs


class RNet(nn.Module):
    """Refinement network. Input ``[N, 3, 24, 24]``; returns ``face_logits [N, 2]``, ``box_offsets [N, 4]``
    (and ``landmark_offsets [N, 10]`` with ``landmarks=True``)."""

    input_size = 24

    def __init__(self, landmarks: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            *_conv(3, 28, 3), _pool(3), *_conv(28, 48, 3), _pool(3), *_conv(48, 64, 2),
            nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.PReLU(128),
        )
        self.face = nn.Linear(128, 2)
        self.box = nn.Linear(128, 4)
        self.landmarks = nn.Linear(128, 10) if landmarks else None

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.body(crops)
        outputs = (self.face(features), self.box(features))
        if self.landmarks is not None:
            outputs += (self.landmarks(features),)
        return outputs


class ONet(nn.Module):
    """Output network. Input ``[N, 3, 48, 48]``; returns ``face_logits [N, 2]``, ``box_offsets [N, 4]`` and
    ``landmark_offsets [N, 10]`` ordered x1..x5, y1..y5 (left eye, right eye, nose, left and right mouth corner)
    as fractions of the input box."""

    input_size = 48

    def __init__(self, landmarks: bool = True):
        super().__init__()
        if not landmarks:
            raise ValueError("O-Net always has its landmark head (it is the stage that outputs landmarks)")
        self.body = nn.Sequential(
            *_conv(3, 32, 3), _pool(3), *_conv(32, 64, 3), _pool(3), *_conv(64, 64, 3), _pool(2),
            *_conv(64, 128, 2), nn.Flatten(), nn.Linear(128 * 3 * 3, 256),
            nn.Dropout(0.25),  # det3.prototxt: drop5 sits between fc5 and its PReLU
            nn.PReLU(256),
        )
        self.face = nn.Linear(256, 2)
        self.box = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.body(crops)
        return self.face(features), self.box(features), self.landmarks(features)


STAGES: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}
