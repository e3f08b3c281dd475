"""P-Net, R-Net and O-Net of MTCNN (Zhang et al., 2016), layer for layer as the authors' det1-3.prototxt.

All convolutions have stride 1 and no padding, every conv/FC is followed by a per-channel PReLU, and max-pools
use Caffe's ceil rounding. The released Caffe weights were trained on transposed (column-major MATLAB) images;
`keenvision.mtcnn.caffe` transposes every kernel and reorders the first FC layer once at import, so these modules
take ordinary row-major ``[batch, 3, height, width]`` images normalised as ``(x - 127.5) / 128``.

The paper's figure gives every stage a 5-point landmark head; the released P/R-Net weights have none, so it is
optional there (``landmarks=True`` for models trained with our recipe) and always present on O-Net.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn


def _conv(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel), nn.PReLU(out_channels)]


def _pool(kernel: int) -> nn.Module:
    return nn.MaxPool2d(kernel, 2, ceil_mode=True)  # Caffe rounds pooled sizes up


class _FaceHeads(nn.Module):
    """The face / box (/ landmarks) heads over ``body``'s features, shared by P-Net and R-Net (O-Net always has
    landmarks)."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.body(images)
        outputs = (self.face(features), self.box(features))
        if self.landmarks is not None:
            outputs += (self.landmarks(features),)
        return outputs


class PNet(_FaceHeads):
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

    @torch.inference_mode()
    def cells(self, images: torch.Tensor, heads: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference form of `forward` for detection: face probability ``[B, h, w]`` and box offsets
        ``[B, h, w, 4]`` from channels-last images; the same numbers in fewer passes over memory, which is what
        bounds P-Net on CPU (its 10- and 16-channel maps are large and cheap to compute).

        Maps stay ``[B, H, W, C]`` (channels-last, what oneDNN's convolutions want). Each PReLU is one in-place
        pass, ``x + (a - 1) * min(x, 0)``, where the module writes a new tensor (the first one writes straight into
        the -inf-padded buffer the pool needs at odd sizes); the 2x2 ceil-mode pool is the maximum of four strided
        views; the two heads are one 1x1 convolution whose first channel is the logit difference (a softmax over
        two classes is its sigmoid; ``heads``: `cell_heads`, computed once for many calls)."""
        conv1, prelu1, _, conv2, prelu2, conv3, prelu3 = self.body
        x = _conv_nhwc(images.permute(0, 2, 3, 1), conv1.weight, conv1.bias)
        batch, height, width, channels = x.shape
        if height % 2 or width % 2:
            padded_shape = (batch, height + height % 2, width + width % 2, channels)
            pooled_input = scratch("padded", padded_shape, x.dtype, x.device)
            pooled_input[:, height:], pooled_input[:, :, width:] = float("-inf"), float("-inf")
            torch.addcmul(x, _negative_part(x), prelu1.weight - 1, out=pooled_input[:, :height, :width])
        else:
            pooled_input = _prelu_nhwc_(x, prelu1.weight)
        x = torch.maximum(torch.maximum(pooled_input[:, 0::2, 0::2], pooled_input[:, 0::2, 1::2]),
                          torch.maximum(pooled_input[:, 1::2, 0::2], pooled_input[:, 1::2, 1::2]))
        x = _prelu_nhwc_(_conv_nhwc(x, conv2.weight, conv2.bias), prelu2.weight)
        x = _prelu_nhwc_(_conv_nhwc(x, conv3.weight, conv3.bias), prelu3.weight)
        outputs = _conv_nhwc(x, *(heads if heads is not None else self.cell_heads()))
        return torch.sigmoid(outputs[..., 0]), outputs[..., 1:]

    @torch.inference_mode()
    def cell_heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The face and box heads folded into one 1x1 convolution for `cells`, weight ``[5, 32, 1, 1]`` and bias
        ``[5]``: channel 0 gives the logit difference (face minus background), channels 1-4 the box offsets."""
        weight = torch.cat([self.face.weight[1:] - self.face.weight[:1], self.box.weight])
        return weight.contiguous(memory_format=torch.channels_last), torch.cat([self.face.bias[1:] - self.face.bias[:1],
                                                                                 self.box.bias])


def _conv_nhwc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A stride-1 unpadded convolution of a ``[B, H, W, C]`` tensor (a channels-last image viewed as NHWC), result
    viewed the same way. Mid-sized inputs go to oneDNN directly: PyTorch sends a batch of one under 20,480 values
    to its reference convolution, several times slower there, and runs 1x1 convolutions as a matrix product that
    is slow with five outputs."""
    images = x.permute(0, 3, 1, 2)
    if images.device.type == "cpu" and images.dtype == torch.float32 and x.numel() >= _ONEDNN_MIN_NUMEL:
        out = torch.ops.aten.mkldnn_convolution(images, weight, bias, (0, 0), (1, 1), (1, 1), 1)
    else:
        out = F.conv2d(images, weight, bias)
    return out.permute(0, 2, 3, 1)


# below this many input values oneDNN's fixed cost per call outweighs the gain (3x3 and 1x1, one and two threads)
_ONEDNN_MIN_NUMEL = 4096 if torch.backends.mkldnn.is_available() else 1 << 62


def _prelu_nhwc_(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PReLU in place on ``[B, H, W, C]``: ``x + (a - 1) * min(x, 0)``."""
    return x.addcmul_(_negative_part(x), weight - 1)


def _negative_part(x: torch.Tensor) -> torch.Tensor:
    """``min(x, 0)`` into a `scratch` buffer."""
    return torch.clamp_max(x, 0, out=scratch("negative", x.shape, x.dtype, x.device))


_SCRATCH = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """A per-thread buffer of ``shape`` (contents undefined), grown as needed and kept between calls: on CPU a
    fresh multi-megabyte tensor is new memory from the OS, and its page faults cost more than a pass over it
    (P-Net's PReLU temporaries, the detector's float copies and pyramid levels: 146 -> 126 ms on a 1920x1080
    frame). Each name holds one buffer as large as the largest it was asked for."""
    numel = math.prod(shape)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.numel() < numel or buffer.dtype != dtype or buffer.device != torch.device(device):
        buffer = buffers[name] = torch.empty(numel, dtype=dtype, device=device)
    return buffer[:numel].view(shape)


class RNet(_FaceHeads):
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
