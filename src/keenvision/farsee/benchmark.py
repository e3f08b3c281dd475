"""Speed, size and cost of FarSee-Net variants next to ENet-, ESPNet-, DDRNet-23-slim- and BiSeNetV2-sized reference
networks, in one run.

Protocol: batch 1 of random normalised-looking pixels, random weights (speed does not depend on them), no
autograd, warm-up calls discarded, CUDA synchronised around every timed call (:func:`keenvision.core.bench.measure`);
the networks are timed in alternating rounds so that background load on a shared machine affects all of them alike,
and the median round is reported. fp32 on CPU, fp16 on CUDA (the paper's and BiSeNetV2's speeds are GPU numbers).
GFLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs; GMACs are
half of it), on meta tensors so that counting a 2048x1024 input costs nothing.

The reference networks are `references` (ENet, ESPNet, DDRNet-23-slim) and `bisenetv2.BiSeNetV2Reference`, untrained:
size and speed references, not trained models.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.bench import measure
from ..core.device import resolve_device
from .bisenetv2 import BiSeNetV2Reference


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


def default_networks(num_classes: int = 11) -> dict[str, Callable[[], nn.Module]]:
    """Constructors of the benchmarked networks by row label (random weights, nothing downloaded): the shipped
    FarSee-Net's architecture, its sub-sampled/full-input and bilinear-head comparisons, the previous release and
    the earlier from-scratch recipes, and ENet-, ESPNet-, DDRNet-23-slim- and BiSeNetV2-sized references."""
    from .model import FarSeeNet
    from .references import REFERENCE_NETWORKS

    def pretrained(backbone: str, **options) -> Callable[[], nn.Module]:  # the recipes of issue 33, x0.75 input
        settings = {"backbone": backbone, "width": 128, "input_scale": 0.75, "full_resolution": True}
        return lambda: FarSeeNet(num_classes, **{**settings, **options})

    return {
        "FarSee-Net MobileNetV2, sub-sampled input (x0.75; farsee-camvid)": pretrained("mobilenetv2_100"),
        "FarSee-Net MobileNetV2, full input (x1.0)": pretrained("mobilenetv2_100", input_scale=1.0),
        "FarSee-Net MobileNetV2, bilinear head (x0.75)": pretrained("mobilenetv2_100", head="bilinear"),
        "FarSee-Net EfficientNet-Lite0, sub-sampled input (x0.75; the previous release)": pretrained(
            "efficientnet_lite0"),
        "FarSee-Net MobileNetV3-L 0.75, sub-sampled input (x0.5; the from-scratch recipe)": lambda: FarSeeNet(
            num_classes, backbone="mobilenetv3_large_075", width=128, input_scale=0.5, full_resolution=True),
        "FarSee-Net ResNet-18, sub-sampled input (x0.5; the notes' reading)": lambda: FarSeeNet(
            num_classes, head="sr", input_scale=0.5),
        "ENet-sized reference (untrained)": lambda: REFERENCE_NETWORKS["enet"](num_classes),
        "ESPNet-sized reference (untrained)": lambda: REFERENCE_NETWORKS["espnet"](num_classes),
        "DDRNet-23-slim-sized reference (untrained)": lambda: REFERENCE_NETWORKS["ddrnet23-slim"](num_classes),
        "BiSeNetV2-sized reference (untrained)": lambda: BiSeNetV2Reference(num_classes),
    }


def with_ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Adds ``fps_vs_enet`` and ``gflops_vs_enet`` to each row of a `benchmark_networks` result that has an ENet
    row (the speed bar of the FarSee-Net issue: at least ENet's fps in the same run)."""
    enet = next((row for row in result["rows"] if row["network"].startswith("ENet")), None)
    if enet is not None:
        for row in result["rows"]:
            row["fps_vs_enet"] = row["fps"] / enet["fps"]
            row["gflops_vs_enet"] = row["gflops"] / enet["gflops"]
    return result


def benchmark_networks(
    size: tuple[int, int] = (1024, 2048),
    device: str | None = "cpu",
    networks: dict[str, Callable[[], nn.Module]] | None = None,
    num_classes: int = 11,
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
    return with_ratios({"size": [height, width], "device": device_name, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup, "num_classes": num_classes,
            "rows": list(rows.values())})
