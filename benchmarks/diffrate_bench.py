"""DiffRate: FLOPs and CPU throughput of published schedules vs the original model, in one run.

    python benchmarks/diffrate_bench.py [--batch 1 8 64] [--threads 2] [--device cpu] [--half] [--repeats 5]
                                        [--families] [--json]

Rows, at each batch size: DeiT-S with the published "2.9" schedule, DeiT-B with "11.5" (both from the public
compression_rate.json), and the ToMe-like uniform-merge baseline at the FLOPs of DeiT-S "2.9"; with --families
also the Eva family (EVA-02-S with its SwiGLU MLP and RoPE, timm's RoPE ViT-S), each with the uniform schedule at
the DeiT-S "2.9" FLOPs fraction (0.63 of the model's), as `keen diffrate uniform` writes it. Random weights (speed
does not depend on them), fp32 unless --half, original and compressed timed in alternating rounds (median),
warm-up discarded.
Columns: formula GFLOPs (MACs, the paper's), FLOPs ratio, images/s original and compressed, speedup, and speedup
divided by the FLOPs ratio (how much of the FLOPs saving turns into speed).

On a CPU shared with other work, give --threads no larger than the idle cores: when an OpenMP thread has to wait
for a busy core, every one of the merge step's many small ops pays a scheduler delay, which penalises the compressed
model far more than the few large matmuls of the original (measured here with a training job on one of two cores:
DeiT-S "2.9" at batch 32 ran 0.95x with 2 threads and 1.53x with 1 thread).
"""

from __future__ import annotations

import argparse
import json

import torch

from keenvision.core.bench import format_table
from keenvision.diffrate import published_schedule
from keenvision.diffrate.benchmark import resolve_dtype, throughput
from keenvision.diffrate.method.baseline import uniform_schedule
from keenvision.diffrate.method.flops import schedule_gflops
from keenvision.diffrate.models import load_model


def _deit_s_fraction() -> float:
    model = "deit_small_patch16_224"
    return schedule_gflops(model, published_schedule("ViT-S-DeiT", "2.9")) / schedule_gflops(model)


CASES = (
    ("deit_small_patch16_224", "published ViT-S-DeiT/2.9", lambda model: published_schedule("ViT-S-DeiT", "2.9")),
    ("deit_small_patch16_224", "uniform merge @ 2.9 schedule's GFLOPs",
     lambda model: uniform_schedule(model, schedule_gflops(model, published_schedule("ViT-S-DeiT", "2.9")))),
    ("deit_base_patch16_224", "published ViT-B-DeiT/11.5", lambda model: published_schedule("ViT-B-DeiT", "11.5")),
)
def _uniform_at_deit_s_fraction(model):
    return uniform_schedule(model, _deit_s_fraction() * schedule_gflops(model))


FAMILY_CASES = tuple((name, "uniform @ 0.63 of its GFLOPs", _uniform_at_deit_s_fraction)
                     for name in ("eva02_small_patch14_224", "vit_small_patch16_rope_224"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes (default 1 8 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="fp16 on CUDA, bf16 on CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--families", action="store_true", help="add the Eva family rows (EVA-02-S, RoPE ViT-S)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = resolve_dtype(args.half, args.device)
    rows, records = [], []
    for model_name, label, make_schedule in CASES + (FAMILY_CASES if args.families else ()):
        torch.manual_seed(0)
        model = load_model(model_name)
        schedule = make_schedule(model)
        for batch in args.batch:
            result = throughput(model, schedule, batch=batch, device=args.device, dtype=dtype,
                                repeats=args.repeats, warmup=args.warmup)
            efficiency = result["speedup"] / result["flops_ratio"]
            records.append({"model": model_name, "schedule": label, **result,
                            "speedup_over_flops_ratio": efficiency})
            rows.append([model_name, label, batch, f"{result['gflops_original']:.3f}",
                         f"{result['gflops_compressed']:.3f}", f"{result['flops_ratio']:.2f}x",
                         f"{result['images_per_s_original']:.1f}", f"{result['images_per_s_compressed']:.1f}",
                         f"{result['speedup']:.2f}x", f"{100 * efficiency:.0f}%"])
            print(f"done: {model_name} {label} batch {batch}", flush=True)
    device = records[0]["device"]
    print(f"\nDiffRate throughput: {device}, {records[0]['dtype']}, {args.threads} threads, "
          f"median of {args.repeats} alternating rounds, random weights\n")
    print(format_table(["model", "schedule", "batch", "GFLOPs orig", "GFLOPs comp", "FLOPs ratio", "img/s orig",
                        "img/s comp", "speedup", "speedup/ratio"], rows))
    if args.json:
        print(json.dumps({"benchmark": "diffrate", "rows": records}, separators=(",", ":")))


if __name__ == "__main__":
    main()
