"""Timing helper for benchmarks: warm-up, repeats, median, device synchronisation."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_s: float
    min_s: float
    repeats: int

    @property
    def per_second(self) -> float:
        return 1.0 / self.median_s if self.median_s > 0 else float("inf")


def _synchronise(device: str | torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(run: Callable[[], object], repeats: int = 5, warmup: int = 1,
            device: str | torch.device | None = None) -> Timing:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` calls (CUDA work is waited for)."""
    for _ in range(warmup):
        run()
    _synchronise(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _synchronise(device)
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), repeats)


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain-text table with aligned columns (floats to 3 significant decimals)."""
    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    text = [[cell(v) for v in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in text) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
