"""Throughput of a ViT with and without a DiffRate schedule, measured in the same run.

Protocol (notes invariant 8): fixed batch of random images, no autograd, warm-up calls discarded, CUDA
synchronised around every timed call (:func:`keenvision.core.bench.measure`). The original and the compressed
model are timed in alternating rounds so that background load on a shared machine affects both alike; the median
of the rounds is reported.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from ..core.bench import measure
from .method.flops import schedule_gflops
from .method.patch import is_patched, patch, unpatch
from .method.schedule import Schedule


def resolve_dtype(half: bool, device: str | torch.device) -> torch.dtype:
    """fp16 on CUDA, bf16 on CPU (no fast fp16 CPU kernels) when `half`, else fp32."""
    if not half:
        return torch.float32
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def throughput(
    model: torch.nn.Module,
    schedule: Schedule,
    batch: int = 64,
    input_size: tuple[int, int, int] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    warmup: int = 2,
    merge_mode: str = "mean",
) -> dict[str, Any]:
    """Images per second of `model` and of `model` patched with `schedule`, and their ratio.

    Args:
        model: an unpatched timm VisionTransformer; it is moved to `device` and `dtype` in place.
        schedule: the compression schedule.
        batch: images per forward call.
        input_size: (channels, height, width); default from the model's patch embedding.
        device: "cpu", "cuda", ...
        dtype: parameter and input precision.
        repeats: timed rounds (each round times both models once).
        warmup: discarded rounds before timing.
        merge_mode: merge weighting of the compressed model.

    Returns:
        ``images_per_s_original``, ``images_per_s_compressed``, ``speedup``, the formula GFLOPs of both, the
        FLOPs ratio, and the settings (batch, device, dtype, repeats, warmup, threads).
    """
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, repeats >= 1, warmup >= 0; got {batch}, {repeats}, {warmup}")
    if is_patched(model):
        raise ValueError("throughput() needs the unpatched model (it patches and unpatches it itself)")
    patch(model, schedule, merge_mode=merge_mode)  # validates the schedule before any work
    unpatch(model)
    model.to(device=device, dtype=dtype).eval()
    if input_size is None:
        height, width = model.patch_embed.img_size
        input_size = (model.patch_embed.proj.in_channels, height, width)
    images = torch.randn((batch, *input_size), generator=torch.Generator().manual_seed(0)).to(device, dtype)

    def run() -> None:
        model(images)

    original, compressed = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            run()
            patch(model, schedule, merge_mode=merge_mode)
            run()
            unpatch(model)
        for _ in range(repeats):
            original.append(measure(run, repeats=1, warmup=0, device=device).median_s)
            patch(model, schedule, merge_mode=merge_mode)
            try:
                compressed.append(measure(run, repeats=1, warmup=0, device=device).median_s)
            finally:
                unpatch(model)
    original_s, compressed_s = statistics.median(original), statistics.median(compressed)
    gflops_original, gflops_compressed = schedule_gflops(model), schedule_gflops(model, schedule)
    device_name = str(device)
    if torch.device(device).type == "cuda":
        device_name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "images_per_s_original": batch / original_s,
        "images_per_s_compressed": batch / compressed_s,
        "speedup": original_s / compressed_s,
        "gflops_original": gflops_original,
        "gflops_compressed": gflops_compressed,
        "flops_ratio": gflops_original / gflops_compressed,
        "batch": batch,
        "input_size": list(input_size),
        "device": device_name,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "warmup": warmup,
    }
