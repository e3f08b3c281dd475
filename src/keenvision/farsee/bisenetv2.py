"""A BiSeNetV2-sized reference network for `benchmark`: our compact re-implementation of BiSeNetV2 (Yu et al., IJCV
2021): detail branch, semantic branch (stem, gather-and-expand layers, context embedding), bilateral guided
aggregation and the segmentation head, without the training-only auxiliary heads. It is a size and speed reference
only: untrained, never evaluated, and not guaranteed to match the authors' layer-for-layer (about 3.3M parameters at
19 classes, close to the 3.4M of the public CoinCheung/BiSeNet model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                  relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _StemBlock(nn.Module):
    """Semantic-branch stem: [B, 3, H, W] -> [B, 16, H/4, W/4] (a strided conv, then conv and max-pool paths)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv_bn_relu(3, 16, stride=2)
        self.left = nn.Sequential(_conv_bn_relu(16, 8, kernel=1), _conv_bn_relu(8, 16, stride=2))
        self.right = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = _conv_bn_relu(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class _GatherExpand(nn.Module):
    """Gather-and-expand layer (expansion 6): 3x3 conv, depthwise expansion (strided twice when ``stride`` is 2),
    1x1 projection, residual (a depthwise-separable shortcut when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6) -> None:
        super().__init__()
        middle = in_channels * expansion
        layers = [_conv_bn_relu(in_channels, in_channels),
                  _conv_bn_relu(in_channels, middle, stride=stride, groups=in_channels, relu=False)]
        if stride == 2:
            layers.append(_conv_bn_relu(middle, middle, groups=middle, relu=False))
        layers.append(_conv_bn_relu(middle, out_channels, kernel=1, relu=False))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(_conv_bn_relu(in_channels, in_channels, stride=stride, groups=in_channels,
                                                        relu=False),
                                          _conv_bn_relu(in_channels, out_channels, kernel=1, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class _ContextEmbedding(nn.Module):
    """Global average pooling, 1x1 conv, broadcast add, 3x3 conv (semantic branch, last stage)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.gap_conv = _conv_bn_relu(channels, channels, kernel=1)
        self.last = _conv_bn_relu(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.gap_conv(self.norm(x.mean(dim=(2, 3), keepdim=True)))
        return self.last(x + context)


class _BilateralGuidedAggregation(nn.Module):
    """Detail (1/8) and semantic (1/32) features guide each other through sigmoid gates; output at 1/8."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.detail_keep = nn.Sequential(_conv_bn_relu(channels, channels, groups=channels, relu=False),
                                         nn.Conv2d(channels, channels, 1, bias=False))
        self.detail_down = nn.Sequential(_conv_bn_relu(channels, channels, stride=2, relu=False),
                                         nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=False))
        self.semantic_up = _conv_bn_relu(channels, channels, relu=False)
        self.semantic_keep = nn.Sequential(_conv_bn_relu(channels, channels, groups=channels, relu=False),
                                           nn.Conv2d(channels, channels, 1, bias=False))
        self.fuse = _conv_bn_relu(channels, channels)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        semantic_up = F.interpolate(self.semantic_up(semantic), size=detail.shape[2:], mode="bilinear",
                                    align_corners=False)
        high = self.detail_keep(detail) * torch.sigmoid(semantic_up)
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        low = F.interpolate(low, size=detail.shape[2:], mode="bilinear", align_corners=False)
        return self.fuse(high + low)


class BiSeNetV2Reference(nn.Module):
    """A BiSeNetV2-sized network for speed comparisons (untrained; see the module docstring).

    ``forward(images [B, 3, H, W]) -> logits [B, num_classes, H, W]``; H and W should be multiples of 32.
    """

    def __init__(self, num_classes: int = 19, head_channels: int = 1024) -> None:
        super().__init__()
        self.detail = nn.Sequential(  # wide and shallow: spatial detail at 1/8
            _conv_bn_relu(3, 64, stride=2), _conv_bn_relu(64, 64),
            _conv_bn_relu(64, 64, stride=2), _conv_bn_relu(64, 64), _conv_bn_relu(64, 64),
            _conv_bn_relu(64, 128, stride=2), _conv_bn_relu(128, 128), _conv_bn_relu(128, 128))
        self.semantic = nn.Sequential(  # narrow and deep: context at 1/32
            _StemBlock(),
            _GatherExpand(16, 32, stride=2), _GatherExpand(32, 32),
            _GatherExpand(32, 64, stride=2), _GatherExpand(64, 64),
            _GatherExpand(64, 128, stride=2), _GatherExpand(128, 128), _GatherExpand(128, 128),
            _GatherExpand(128, 128),
            _ContextEmbedding(128))
        self.aggregate = _BilateralGuidedAggregation(128)
        self.head = nn.Sequential(_conv_bn_relu(128, head_channels), nn.Dropout(0.1),
                                  nn.Conv2d(head_channels, num_classes, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.aggregate(self.detail(images), self.semantic(images))
        return F.interpolate(self.head(features), size=images.shape[2:], mode="bilinear", align_corners=False)
