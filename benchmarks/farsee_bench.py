"""FarSee-Net: speed, size and cost of the shipped network (EfficientNet-Lite0, sub-sampled x0.75), its full-input and
bilinear-head comparisons, the earlier recipes, and ENet-, ESPNet-, DDRNet-23-slim- and BiSeNetV2-sized references,
at CamVid input sizes (384x480 and 720x960), in one run.

    python benchmarks/farsee_bench.py [--sizes 384x480 720x960] [--threads 2] [--device cpu] [--repeats 5]
                                      [--classes 11] [--json] [--save]

Batch 1, random weights (speed does not depend on them), fp32 on CPU / fp16 on CUDA, networks timed in alternating
rounds (median), warm-up discarded (keenvision.farsee.benchmark). GFLOPs counted by FlopCounterMode (a multiply-add
counts 2). The reference networks are our untrained re-implementations, size and speed references only. Ratios:
speed and GFLOPs of every row relative to FarSee-Net with full input, and fps relative to the ENet-sized reference
(the speed bar: at least ENet's fps in the same run). ``--save`` writes the table and the JSON to
benchmarks/results/farsee_<device>.txt; nothing is written otherwise.

On a CPU shared with other work, give --threads no larger than the idle cores (see diffrate_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from keenvision.core.bench import format_table
from keenvision.core.cli import parse_size
from keenvision.farsee.benchmark import benchmark_networks

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["384x480", "720x960"], help="HEIGHTxWIDTH input sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=11, help="output classes (default 11, CamVid)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/farsee_<device>.txt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]  # on a shared machine, say how busy it was
    sizes = [parse_size(text) for text in args.sizes]
    results = []
    for size in sizes:
        results.append(benchmark_networks(size, args.device, num_classes=args.classes, repeats=args.repeats,
                                          warmup=args.warmup))
        print(f"done: {size[0]}x{size[1]}", flush=True)
    first = results[0]
    header = (f"FarSee-Net speed: {first['device']} ({platform.processor() or platform.machine()}), {first['dtype']}, "
              f"batch 1, {first['threads']} threads, {args.classes} classes, median of {args.repeats} alternating "
              f"rounds, random weights; {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} before the "
              f"run and {os.getloadavg()[0]:.1f} after")
    rows = []
    for result in results:
        by_name = {row["network"]: row for row in result["rows"]}
        full = next(row for name, row in by_name.items() if "full input" in name)
        for row in result["rows"]:
            row["speedup_vs_full_input"] = row["fps"] / full["fps"]
            row["gflops_vs_full_input"] = row["gflops"] / full["gflops"]
            rows.append([f"{result['size'][0]}x{result['size'][1]}", row["network"], f"{row['params'] / 1e6:.2f}",
                         f"{row['gflops']:.1f}", f"{row['gflops_vs_full_input']:.2f}", f"{row['latency_ms']:.1f}",
                         f"{row['fps']:.2f}", f"{row['speedup_vs_full_input']:.2f}x",
                         f"{row['fps_vs_enet']:.2f}x"])
    table = format_table(["input HxW", "network", "params (M)", "GFLOPs", "GFLOPs / full", "latency (ms)", "fps",
                          "speed vs full", "fps vs ENet-sized"], rows)
    record = {"benchmark": "farsee", "threads": args.threads, "load_average_before": load_before, "results": results}
    print(f"\n{header}\n\n{table}")
    if args.save:
        device = torch.device(args.device).type
        path = RESULTS / f"farsee_{device}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{header}\n\n{table}\n{json.dumps(record, separators=(',', ':'))}\n")
        print(f"wrote {path}")
    if args.json:
        print(json.dumps(record, separators=(",", ":")))


if __name__ == "__main__":
    main()
