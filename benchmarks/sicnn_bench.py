"""SICNN: the quality table (bicubic vs each CNN-H given: PSNR, SSIM, identity similarity, verification accuracy) on
the test split of a prepared face folder, and CNN-H's throughput vs bicubic, in one run.

    python benchmarks/sicnn_bench.py [--data runs/sicnn/faces] [--split test] [--weights NAME=PATH ...]
                                     [--limit N] [--threads 1] [--device cpu] [--json] [--save]

The ablation is one call, one ``--weights NAME=PATH`` per CNN-H: ``--weights pixel=runs/sicnn/pixel/cnn_h.safetensors
--weights fixed_si=runs/sicnn/fixed_si/cnn_h.safetensors --weights domain_integrated=runs/sicnn/domain_integrated/``
``cnn_h.safetensors`` (the run folders of configs/sicnn/*.yaml).
The protocol is `keenvision.sicnn.evaluate` (docs/sicnn.md): HR -> 8x8 average pooling -> x8; PSNR/SSIM on RGB in
[0, 1]; identity by dlib's ResNet descriptor (the ``eval`` extra; null without it), verification at dlib's L2 < 0.6
and at the best (oracle) threshold, the same pairs for every row; ``HR`` is the recogniser on the real photos.
Throughput: faces/s of CNN-H (the first --weights, else the default architecture with random weights: speed does
not depend on them) and of bicubic at batch 1 and 64, fp32, median of --repeats calls. ``--save`` writes the
tables and the JSON to benchmarks/results/sicnn_<device>.txt; nothing is written otherwise.

On a CPU shared with other work, give --threads no larger than the idle cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

import torch

from keenvision.cli import UsageError
from keenvision.core.bench import format_table
from keenvision.sicnn.cli import parse_weights
from keenvision.sicnn.evaluate import evaluate_hallucination, measure_throughput
from keenvision.sicnn.model import HallucinationNet, load_cnn_h

RESULTS = Path(__file__).resolve().parent / "results"


def cell(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value * scale:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/sicnn/faces"),
                        help="a `keen sicnn prepare` folder (default runs/sicnn/faces)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--weights", action="append", metavar="NAME=PATH", help="CNN-H exports to compare "
                        "(repeatable; none: bicubic only)")
    parser.add_argument("--limit", type=int, help="first N faces of the split only")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], help="throughput batch sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/sicnn_<device>.txt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / args.split).is_dir():
        sys.exit(f"sicnn_bench: {args.data / args.split} not found; prepare faces first, e.g. `keen sicnn prepare "
                 f"--src $KEEN_DATA/celeba_identities --out {args.data}`")
    try:
        named = parse_weights(args.weights) if args.weights else {}
    except UsageError as error:
        sys.exit(f"sicnn_bench: {error}")
    load_before = os.getloadavg()[0]  # on a shared machine, say how busy it was
    models = {name: load_cnn_h(path, args.device) for name, path in named.items()}
    quality = evaluate_hallucination(args.data, args.split, models, device=args.device, limit=args.limit)
    rows = [[name if name != "hr" else "HR photos (recogniser ceiling)", cell(quality[name]["psnr"]),
             cell(quality[name]["ssim"], digits=4), cell(quality[name]["identity_similarity"], digits=3),
             cell(quality[name]["identity_distance"], digits=3),
             cell(quality[name]["verification_accuracy"], 100, 1),
             cell(quality[name]["verification_accuracy_best"], 100, 1)]
            for name in ["bicubic", *models, "hr"]]
    quality_table = format_table(["method", "PSNR (dB)", "SSIM", "identity cos", "identity L2",
                                  "verif. acc. % (L2<0.6)", "best-threshold acc. %"], rows)
    pairs = quality["pairs"]
    quality_header = (f"SICNN x8 (12x14 -> 96x112) on {args.data} [{args.split}]: {quality['images']} faces of "
                      f"{quality['identities']} identities, {pairs['positive']} positive / {pairs['negative']} "
                      f"negative pairs, recogniser {quality['recogniser'] or 'none (eval extra missing)'}")

    if models:
        timed_name, timed = next(iter(models.items()))
        source = f"{timed_name} ({named[timed_name]})"
    else:
        torch.manual_seed(0)
        timed, source = HallucinationNet(), "default architecture, random weights"
    speed = measure_throughput(timed, args.batch_sizes, args.device, repeats=args.repeats)
    parameters = sum(p.numel() for p in timed.parameters())
    speed_table = format_table(["method", "batch", "latency (ms)", "faces/s"],
                               [[row["method"], row["batch_size"], f"{row['latency_ms']:.2f}",
                                 f"{row['images_per_second']:.1f}"] for row in speed])
    speed_header = (f"Throughput: CNN-H = {source}, {parameters / 1e6:.2f} M parameters; {args.device} "
                    f"({platform.processor() or platform.machine()}), fp32, {args.threads} threads, median of "
                    f"{args.repeats} calls; {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} before "
                    f"the run and {os.getloadavg()[0]:.1f} after")
    record = {"benchmark": "sicnn", "threads": args.threads, "load_average_before": load_before,
              "weights": named, "quality": quality, "throughput": {"parameters": parameters, "weights": source,
                                                                   "rows": speed}}
    text = f"{quality_header}\n\n{quality_table}\n\n{speed_header}\n\n{speed_table}"
    print(f"\n{text}")
    if args.save:
        path = RESULTS / f"sicnn_{torch.device(args.device).type}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{text}\n{json.dumps(record, separators=(',', ':'))}\n")
        print(f"wrote {path}")
    if args.json:
        print(json.dumps(record, separators=(",", ":")))


if __name__ == "__main__":
    main()
