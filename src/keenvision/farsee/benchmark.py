"""Speed, size and cost of FarSee-Net variants next to a BiSeNetV2-sized reference network, in one run.

Protocol: batch 1 of random normalised-looking pixels, random weights (speed does not depend on them), no
autograd, warm-up calls discarded, CUDA synchronised around every timed call (:func:`keenvision.core.bench.measure`);
the networks are timed in alternating rounds so that background load on a shared machine affects all of them alike,
and the median round is reported. fp32 on CPU, fp16 on CUDA (the paper's and BiSeNetV2's speeds are GPU numbers).
GFLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs; GMACs are
half of it), on meta tensors so that counting a 2048x1024 input costs nothing.

:class:`BiSeNetV2Reference` is our compact re-implementation of BiSeNetV2 (Yu et al., IJCV 2021): detail branch,
semantic branch (stem, gather-and-expand layers, context embedding), bilateral guided aggregation and the
segmentation head, without the training-only auxiliary heads. It is a size and speed reference only: untrained,
never evaluated, and not guaranteed to match the authors' layer-for-layer (about 3.3M parameters at 19 classes,
close to the 3.4M of the public CoinCheung/BiSeNet model).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.bench import measure


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


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def counted_gflops(model: nn.Module, size: tuple[int, int]) -> float:
    """FLOPs of one forward at ``size`` (height, width), batch 1, in units of 1e9 (a multiply-add counts as 2).

    Counted on a meta-device copy (shapes only, no arithmetic); falls back to a real CPU forward if some operation
    has no meta kernel."""
    images_shape = (1, 3, *size)
    try:
        meta_model = copy.deepcopy(model).to("meta").eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            meta_model(torch.empty(images_shape, device="meta"))
    except (NotImplementedError, RuntimeError):
        cpu_model = copy.deepcopy(model).float().cpu().eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            cpu_model(torch.zeros(images_shape))
    return counter.get_total_flops() / 1e9


def default_networks(num_classes: int = 19) -> dict[str, Callable[[], nn.Module]]:
    """Constructors of the benchmarked networks by row label (random weights, nothing downloaded)."""
    from .model import FarSeeNet

    return {
        "FarSee-Net, sub-sampled input (x0.5)": lambda: FarSeeNet(num_classes, head="sr", input_scale=0.5),
        "FarSee-Net, full input (x1.0)": lambda: FarSeeNet(num_classes, head="sr", input_scale=1.0),
        "FarSee-Net, bilinear head (x0.5)": lambda: FarSeeNet(num_classes, head="bilinear", input_scale=0.5),
        # the small-backbone recipe (configs/farsee/camvid_mobilenet*.yaml) and its head ablation
        "FarSee-Net MobileNetV3-L 0.75, full-res SR head (x0.5)": lambda: FarSeeNet(
            num_classes, backbone="mobilenetv3_large_075", width=128, input_scale=0.5, full_resolution=True),
        "FarSee-Net MobileNetV3-L 0.75, bilinear head (x0.5)": lambda: FarSeeNet(
            num_classes, backbone="mobilenetv3_large_075", head="bilinear", width=128, input_scale=0.5),
        "BiSeNetV2-sized reference (untrained)": lambda: BiSeNetV2Reference(num_classes),
    }


def resolve_device(device: str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


def benchmark_networks(
    size: tuple[int, int] = (1024, 2048),
    device: str | None = "cpu",
    networks: dict[str, Callable[[], nn.Module]] | None = None,
    num_classes: int = 19,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, Any]:
    """Latency and fps at batch 1 for every network at input ``size`` (height, width), with params and GFLOPs.

    Returns ``{"size": [h, w], "device", "dtype", "threads", "repeats", "rows": [{"network", "params",
    "gflops", "gmacs", "latency_ms", "fps"}, ...]}``. fp16 on CUDA, fp32 on CPU.
    """
    height, width = size
    if height < 32 or width < 32:
        raise ValueError(f"input size must be at least 32x32, got {height}x{width}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = resolve_device(device)
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    networks = networks if networks is not None else default_networks(num_classes)
    models, rows = {}, {}
    for label, make in networks.items():
        torch.manual_seed(0)
        model = make().eval()
        rows[label] = {"network": label, "params": parameter_count(model), "gflops": counted_gflops(model, size)}
        rows[label]["gmacs"] = rows[label]["gflops"] / 2
        models[label] = model.to(device=device, dtype=dtype)
    images = torch.randn((1, 3, height, width), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    times: dict[str, list[float]] = {label: [] for label in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(images)
        for _ in range(repeats):  # alternating rounds: background load hits every network alike
            for label, model in models.items():
                times[label].append(measure(lambda model=model: model(images), repeats=1, warmup=0,
                                            device=device).median_s)
    for label, row in rows.items():
        seconds = statistics.median(times[label])
        row["latency_ms"] = 1000 * seconds
        row["fps"] = 1 / seconds
    device_name = str(device)
    if torch.device(device).type == "cuda":
        device_name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {"size": [height, width], "device": device_name, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup, "num_classes": num_classes,
            "rows": list(rows.values())}
