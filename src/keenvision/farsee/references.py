"""Size and speed references for `benchmark`: our compact re-implementations of three published real-time
segmentation networks, written from the papers' layer descriptions. Like `bisenetv2`, they are size, speed and FLOP
references only: random weights, never trained or evaluated here, not guaranteed to match the authors layer for layer.

* `ENetReference`: ENet (Paszke et al. 2016, arXiv:1606.02147, Table 1): the initial block (a strided 3x3 conv with 13
  filters next to a 2x2 max-pool), bottleneck stage 1 (downsampling to 64 channels, 4 regular), stages 2 and 3 at 128
  channels (regular, dilated 2/4/8/16 and asymmetric 5x1+1x5 bottlenecks; stage 2 opens with a downsampling one),
  the upsampling stages 4 (64) and 5 (16) with max-unpooling on the main branch, and the final full convolution.
  Bottlenecks reduce 4x; downsampling ones use a strided 2x2 projection; no conv biases; spatial dropout 0.01 in stage
  1 and 0.1 after. Ours: PReLU in the encoder, ReLU in the decoder (as public re-implementations do), BatchNorm right
  after the asymmetric pair, a 3x3 stride-2 full convolution.
* `ESPNetReference`: the paper's "ESPNet" (Mehta et al. ECCV 2018, arXiv:1803.06815): the ESPNet-C encoder (strided
  conv, ESP downsamplers, ``p`` and ``q`` ESP modules at 1/4 and 1/8 with hierarchical feature fusion, the image
  reinforced at 1/2 and 1/4) and the light decoder (1x1 projections, 2x2 transposed-conv upsampling, one ESP module
  and a 3x3 conv fusing the 1/2-scale features). ``p=2, q=8`` by default: that is the configuration of the published
  0.364 M parameters (the authors' released weights come as q = 3, 5 and 8; q=3 gives about 0.2 M).
* `DDRNet23SlimReference`: DDRNet-23-slim (Hong et al. 2021, arXiv:2101.06085; ydhongHIT/DDRNet): base width 32, a
  1/4 stem, residual stages to 1/8, then a high-resolution branch (64 channels, 1/8) and a low-resolution one (128 at
  1/16, 256 at 1/32) with two bilateral fusions (strided 3x3 convs down, 1x1 convs and bilinear upsampling up), a
  bottleneck stage on each branch (128 at 1/8, 512 at 1/64), the DAPPM (average pools 5/2, 9/4, 17/8 and global,
  hierarchically fused) on the low branch, summed with the high branch and the 64-wide segmentation head at 1/8.
  Ours: plain BatchNorm, no training-only auxiliary head.

Each takes ``images [B, 3, H, W]`` and returns ``logits [B, num_classes, H, W]`` for any H and W: ENet and ESPNet pad
the input to a multiple of 8 (their total stride) and crop the output; DDRNet's strided convs round up consistently on
both branches, so it upsamples to the exact sizes instead. Published sizes (19 Cityscapes classes): ENet 0.37 M
parameters, ESPNet 0.364 M, DDRNet-23-slim 5.7 M and 36.3 G multiply-adds ("GFLOPs" in the paper) at 1024x2048;
ours come within a few percent (see ``tests/farsee/test_farsee_references.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(in_channels: int, out_channels: int, kernel: int | tuple[int, int] = 3, stride: int = 1,
             dilation: int = 1, act: str | None = "relu") -> nn.Sequential:
    """Conv (no bias, "same" padding for odd kernels), BatchNorm, then ReLU, PReLU (per channel) or nothing."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = tuple((k - 1) // 2 * dilation for k in kernel)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, bias=False),
                               nn.BatchNorm2d(out_channels)]
    if act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act == "prelu":
        layers.append(nn.PReLU(out_channels))
    return nn.Sequential(*layers)


def _pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad [B, C, H, W] at the bottom and right to the next multiple of ``multiple`` in H and W."""
    height, width = images.shape[2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    return F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images


# ----------------------------------------------------------------------------------------------------------- ENet


class _ENetBottleneck(nn.Module):
    """Regular ENet bottleneck at constant shape: 1x1 reduce (4x), a 3x3 (dilated) or 5x1+1x5 conv, 1x1 expand,
    spatial dropout, added to the input. [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, channels: int, dilation: int = 1, asymmetric: bool = False, dropout: float = 0.1,
                 act: str = "prelu") -> None:
        super().__init__()
        inner = channels // 4
        if asymmetric:
            middle = nn.Sequential(nn.Conv2d(inner, inner, (5, 1), padding=(2, 0), bias=False),
                                   _conv_bn(inner, inner, (1, 5), act=act))
        else:
            middle = _conv_bn(inner, inner, 3, dilation=dilation, act=act)
        self.branch = nn.Sequential(_conv_bn(channels, inner, 1, act=act), middle,
                                    _conv_bn(inner, channels, 1, act=None), nn.Dropout2d(dropout))
        self.act = nn.PReLU(channels) if act == "prelu" else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.branch(x))


class _ENetDown(nn.Module):
    """Downsampling bottleneck: a strided 2x2 projection branch, and a max-pool main branch zero-padded to the new
    width; returns the pooling indices for the matching `_ENetUp`. [B, C, H, W] -> [B, C', H/2, W/2]."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        inner = out_channels // 4
        self.extra_channels = out_channels - in_channels
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.branch = nn.Sequential(_conv_bn(in_channels, inner, 2, stride=2, act="prelu"),
                                    _conv_bn(inner, inner, 3, act="prelu"),
                                    _conv_bn(inner, out_channels, 1, act=None), nn.Dropout2d(dropout))
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = self.pool(x)
        main = F.pad(main, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(main + self.branch(x)), indices


class _ENetUp(nn.Module):
    """Upsampling bottleneck: 1x1 conv and max-unpooling (the encoder's indices) on the main branch; 1x1 reduce,
    3x3 stride-2 transposed conv, 1x1 expand on the other. [B, C, H, W] -> [B, C', 2H, 2W]."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        inner = in_channels // 4
        self.main = _conv_bn(in_channels, out_channels, 1, act=None)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.branch = nn.Sequential(
            _conv_bn(in_channels, inner, 1),
            nn.ConvTranspose2d(inner, inner, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
            _conv_bn(inner, out_channels, 1, act=None), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        main = self.unpool(self.main(x), indices)
        return F.relu(main + self.branch(x))


class ENetReference(nn.Module):
    """An ENet-sized network (untrained; see the module docstring). Encoder to 1/8 at 128 channels, decoder back up.

    ``forward(images [B, 3, H, W]) -> logits [B, num_classes, H, W]`` (padded internally to a multiple of 8).
    """

    stride = 8

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        self.initial_conv = nn.Conv2d(3, 13, 3, stride=2, padding=1, bias=False)
        self.initial_pool = nn.MaxPool2d(2, 2)
        self.initial_norm = nn.Sequential(nn.BatchNorm2d(16), nn.PReLU(16))
        self.down1 = _ENetDown(16, 64, dropout=0.01)
        self.stage1 = nn.Sequential(*[_ENetBottleneck(64, dropout=0.01) for _ in range(4)])
        self.down2 = _ENetDown(64, 128, dropout=0.1)

        def middle_stage() -> nn.Sequential:  # bottlenecks x.1 to x.8 of stages 2 and 3
            return nn.Sequential(
                _ENetBottleneck(128), _ENetBottleneck(128, dilation=2), _ENetBottleneck(128, asymmetric=True),
                _ENetBottleneck(128, dilation=4), _ENetBottleneck(128), _ENetBottleneck(128, dilation=8),
                _ENetBottleneck(128, asymmetric=True), _ENetBottleneck(128, dilation=16))

        self.stage2, self.stage3 = middle_stage(), middle_stage()
        self.up4 = _ENetUp(128, 64)
        self.stage4 = nn.Sequential(_ENetBottleneck(64, act="relu"), _ENetBottleneck(64, act="relu"))
        self.up5 = _ENetUp(64, 16)
        self.stage5 = _ENetBottleneck(16, act="relu")
        self.full_conv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1, output_padding=1, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[2:]
        x = _pad_to_multiple(images, self.stride)
        x = self.initial_norm(torch.cat([self.initial_conv(x), self.initial_pool(x)], dim=1))  # [B, 16, H/2, W/2]
        x, indices1 = self.down1(x)  # [B, 64, H/4, W/4]
        x, indices2 = self.down2(self.stage1(x))  # [B, 128, H/8, W/8]
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, indices2))  # [B, 64, H/4, W/4]
        x = self.stage5(self.up5(x, indices1))  # [B, 16, H/2, W/2]
        return self.full_conv(x)[:, :, :height, :width]


# --------------------------------------------------------------------------------------------------------- ESPNet


class _ESPModule(nn.Module):
    """Efficient spatial pyramid: a 1x1 (or strided 3x3) reduction to ``out/5`` channels, five parallel 3x3 convs
    dilated 1, 2, 4, 8, 16, their outputs summed hierarchically (de-gridding) and concatenated, then BatchNorm and
    PReLU; with ``residual`` the input is added before them. [B, C, H, W] -> [B, C', H/stride, W/stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__()
        width = out_channels // 5
        first = out_channels - 4 * width  # the d=1 branch takes the remainder
        self.residual = residual and stride == 1 and in_channels == out_channels
        kernel = 3 if stride == 2 else 1
        self.reduce = nn.Conv2d(in_channels, width, kernel, stride, kernel // 2, bias=False)
        self.branches = nn.ModuleList(nn.Conv2d(width, first if d == 1 else width, 3, padding=d, dilation=d,
                                                bias=False) for d in (1, 2, 4, 8, 16))
        self.out = nn.Sequential(nn.BatchNorm2d(out_channels), nn.PReLU(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        outputs = [branch(reduced) for branch in self.branches]
        for i in range(2, 5):  # hierarchical feature fusion over the dilated branches
            outputs[i] = outputs[i] + outputs[i - 1]
        merged = torch.cat(outputs, dim=1)
        return self.out(x + merged if self.residual else merged)


class ESPNetReference(nn.Module):
    """An ESPNet-sized network (ESPNet-C encoder plus the paper's light decoder; untrained, see the module docstring).

    ``forward(images [B, 3, H, W]) -> logits [B, num_classes, H, W]`` (padded internally to a multiple of 8).
    """

    stride = 8

    def __init__(self, num_classes: int = 19, p: int = 2, q: int = 8) -> None:
        super().__init__()
        c = num_classes
        self.level1 = _conv_bn(3, 16, 3, stride=2, act="prelu")  # [B, 16, H/2, W/2]
        self.image_down = nn.AvgPool2d(3, stride=2, padding=1)  # input reinforcement: the image at 1/2 and 1/4
        self.norm1 = nn.Sequential(nn.BatchNorm2d(16 + 3), nn.PReLU(16 + 3))
        self.level2_down = _ESPModule(16 + 3, 64, stride=2)  # [B, 64, H/4, W/4]
        self.level2 = nn.Sequential(*[_ESPModule(64, 64) for _ in range(p)])
        self.norm2 = nn.Sequential(nn.BatchNorm2d(128 + 3), nn.PReLU(128 + 3))
        self.level3_down = _ESPModule(128 + 3, 128, stride=2)  # [B, 128, H/8, W/8]
        self.level3 = nn.Sequential(*[_ESPModule(128, 128) for _ in range(q)])
        self.norm3 = nn.Sequential(nn.BatchNorm2d(256), nn.PReLU(256))
        self.encoder_classifier = nn.Conv2d(256, c, 1, bias=False)  # ESPNet-C's output, [B, C, H/8, W/8]
        # decoder: project, upsample with 2x2 transposed convs, fuse with the finer levels
        self.project3 = nn.BatchNorm2d(c)
        self.up3 = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)
        self.project2 = nn.Conv2d(128 + 3, c, 1, bias=False)
        self.fuse2 = nn.Sequential(nn.BatchNorm2d(2 * c), nn.PReLU(2 * c), _ESPModule(2 * c, c, residual=False))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False), nn.BatchNorm2d(c), nn.PReLU(c))
        self.fuse1 = _conv_bn(16 + 3 + c, c, 3, act="prelu")
        self.classifier = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[2:]
        x = _pad_to_multiple(images, self.stride)
        image2 = self.image_down(x)
        image4 = self.image_down(image2)
        level1 = self.norm1(torch.cat([self.level1(x), image2], dim=1))  # [B, 19, H/2, W/2]
        down2 = self.level2_down(level1)
        level2 = self.norm2(torch.cat([self.level2(down2), down2, image4], dim=1))  # [B, 131, H/4, W/4]
        down3 = self.level3_down(level2)
        level3 = self.norm3(torch.cat([down3, self.level3(down3)], dim=1))  # [B, 256, H/8, W/8]
        logits3 = self.up3(self.project3(self.encoder_classifier(level3)))  # [B, C, H/4, W/4]
        logits2 = self.up2(self.fuse2(torch.cat([self.project2(level2), logits3], dim=1)))  # [B, C, H/2, W/2]
        logits1 = self.fuse1(torch.cat([logits2, level1], dim=1))
        return self.classifier(logits1)[:, :, :height, :width]


# -------------------------------------------------------------------------------------------------- DDRNet-23-slim


class _BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs); ``last`` leaves out the final ReLU, as DDRNet does at each stage's end so
    the fusions add pre-activation features. [B, C, H, W] -> [B, C', H/stride, W/stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, last: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(in_channels, out_channels, 3, stride),
                                  _conv_bn(out_channels, out_channels, 3, act=None))
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _conv_bn(in_channels, out_channels, 1, stride, act=None)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x) + self.shortcut(x)
        return out if self.last else F.relu(out)


class _Bottleneck(nn.Module):
    """Bottleneck with expansion 2 (1x1, 3x3 with the stride, 1x1 to ``2 * channels``), no final ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(in_channels, channels, 1), _conv_bn(channels, channels, 3, stride),
                                  _conv_bn(channels, 2 * channels, 1, act=None))
        self.shortcut = _conv_bn(in_channels, 2 * channels, 1, stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def _stage(in_channels: int, out_channels: int, blocks: int = 2, stride: int = 1) -> nn.Sequential:
    layers = [_BasicBlock(in_channels, out_channels, stride, last=blocks == 1)]
    layers += [_BasicBlock(out_channels, out_channels, last=i == blocks - 1) for i in range(1, blocks)]
    return nn.Sequential(*layers)


def _bn_relu_conv(in_channels: int, out_channels: int, kernel: int = 1) -> nn.Sequential:
    """Pre-activation conv (BatchNorm, ReLU, conv), as in DDRNet's DAPPM and head."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False))


class _DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: the input 1x1-projected as is and after average pools (5/2, 9/4, 17/8,
    global), each pooled scale upsampled, added to the previous scale's output and refined by a 3x3 conv; the five
    concatenated, compressed by a 1x1 and added to a 1x1 shortcut. [B, C, h, w] -> [B, C', h, w]."""

    def __init__(self, in_channels: int, branch_channels: int, out_channels: int) -> None:
        super().__init__()
        pools = [nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8), nn.AdaptiveAvgPool2d(1)]
        self.scale0 = _bn_relu_conv(in_channels, branch_channels)
        self.scales = nn.ModuleList(nn.Sequential(pool, _bn_relu_conv(in_channels, branch_channels)) for pool in pools)
        self.process = nn.ModuleList(_bn_relu_conv(branch_channels, branch_channels, 3) for _ in pools)
        self.compression = _bn_relu_conv(5 * branch_channels, out_channels)
        self.shortcut = _bn_relu_conv(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.scale0(x)]
        for scale, process in zip(self.scales, self.process):
            pooled = F.interpolate(scale(x), size=x.shape[2:], mode="bilinear", align_corners=False)
            outputs.append(process(pooled + outputs[-1]))
        return self.compression(torch.cat(outputs, dim=1)) + self.shortcut(x)


class DDRNet23SlimReference(nn.Module):
    """A DDRNet-23-slim-sized network (untrained; see the module docstring): two branches at 1/8 and 1/16-1/64 with
    bilateral fusions, the DAPPM on the low-resolution branch, the segmentation head at 1/8.

    ``forward(images [B, 3, H, W]) -> logits [B, num_classes, H, W]`` for any H, W.
    """

    def __init__(self, num_classes: int = 19, width: int = 32, spp_channels: int = 128,
                 head_channels: int = 64) -> None:
        super().__init__()
        w, high = width, 2 * width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                  nn.Conv2d(w, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True))  # 1/4
        self.layer1 = _stage(w, w)  # [B, 32, H/4, W/4]
        self.layer2 = _stage(w, 2 * w, stride=2)  # [B, 64, H/8, W/8]
        self.layer3 = _stage(2 * w, 4 * w, stride=2)  # low branch: [B, 128, H/16, W/16]
        self.layer3_high = _stage(2 * w, high)  # high branch: [B, 64, H/8, W/8]
        self.down3 = _conv_bn(high, 4 * w, 3, 2, act=None)
        self.compress3 = _conv_bn(4 * w, high, 1, act=None)
        self.layer4 = _stage(4 * w, 8 * w, stride=2)  # [B, 256, H/32, W/32]
        self.layer4_high = _stage(high, high)
        self.down4 = nn.Sequential(_conv_bn(high, 4 * w, 3, 2), _conv_bn(4 * w, 8 * w, 3, 2, act=None))
        self.compress4 = _conv_bn(8 * w, high, 1, act=None)
        self.layer5_high = _Bottleneck(high, high)  # [B, 128, H/8, W/8]
        self.layer5 = _Bottleneck(8 * w, 8 * w, stride=2)  # [B, 512, H/64, W/64]
        self.spp = _DAPPM(16 * w, spp_channels, 4 * w)  # [B, 128, H/64, W/64]
        self.head = nn.Sequential(_bn_relu_conv(4 * w, head_channels, 3), nn.BatchNorm2d(head_channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(head_channels, num_classes, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        def up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)

        x = self.layer1(self.stem(images))
        x = self.layer2(F.relu(x))
        low = self.layer3(F.relu(x))
        high = self.layer3_high(F.relu(x))
        low, high = low + self.down3(F.relu(high)), high + up(self.compress3(F.relu(low)), high)  # fusion 1
        low, high = self.layer4(F.relu(low)), self.layer4_high(F.relu(high))
        low, high = low + self.down4(F.relu(high)), high + up(self.compress4(F.relu(low)), high)  # fusion 2
        high = self.layer5_high(F.relu(high))
        low = up(self.spp(self.layer5(F.relu(low))), high)
        return up(self.head(low + high), images)


REFERENCE_NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "enet": ENetReference,
    "espnet": ESPNetReference,
    "ddrnet23-slim": DDRNet23SlimReference,
}
"""Constructors by name, each taking ``num_classes``."""
