"""keen batch: images/s in this process against Ray (1 and 2 workers) on this machine, and the per-image overhead.

    python benchmarks/batch_bench.py [--celeba 400] [--camvid 40] [--batch-size 16] [--threads 2 1] [--cpus 2]
                                     [--workers 1 2] [--json]

Workload: `keen batch detect` (MTCNN, the authors' weights, CPU) over real photos of the shared data: --celeba
CelebA identity photos (178x218, one face each) and --camvid CamVid frames (480x360 street scenes). Rows:

- ``keen detect`` loop: `detect_files` over the same paths in this process at T torch threads (each of --threads),
  the loop of ``keen detect`` without its printing; the first T is the baseline;
- ``keen batch``, in-process: `run_batch` without Ray, T threads;
- ``keen batch --ray``, W workers (each of --workers): a local Ray cluster of --cpus CPUs started here, W actors of
  one CPU and one torch thread each.

Columns: ``steady img/s`` counts from the first batch's start to the last batch's end (model loading and actor
start-up left out: what a run of millions sees); ``wall img/s`` includes them; ``start-up s`` is that fixed cost
(for Ray: actors starting, importing torch, loading the model; ``ray.init`` is printed apart); ``overhead ms/img``
is worker time per image outside the system's code: ``(workers * steady seconds - compute seconds) / images``,
i.e. block writes, Ray's scheduling and transfers, and idle workers at the end. One run per row (no repeats): on a
shared CPU, rerun and compare rows of the same run only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from keenvision.batch import run_batch
from keenvision.core.bench import format_table
from keenvision.core.data import data_root


def workload(celeba: int, camvid: int) -> list[str]:
    root = data_root()
    photos = sorted((root / "celeba_identities").glob("*/*.jpg"))[:celeba]
    frames = sorted((root / "camvid" / "val" / "images").glob("*.jpg"))[:camvid]
    if len(photos) < celeba or len(frames) < camvid:
        raise SystemExit(f"need {celeba} CelebA photos and {camvid} CamVid frames under {root} (set KEEN_DATA)")
    return [str(path) for path in photos + frames]


def detect_loop(paths: list[str], threads: int) -> dict:
    """The baseline: `keen detect`'s loop (detect_files, batch 8) over ``paths``, model loaded beforehand."""
    from keenvision.mtcnn import MTCNN
    from keenvision.mtcnn.files import detect_files

    torch.set_num_threads(threads)
    detector = MTCNN(device="cpu")
    for _ in detect_files(detector, paths[:8], batch_size=8):  # warm-up: first calls allocate
        pass
    started = time.perf_counter()
    count = sum(1 for _ in detect_files(detector, paths, batch_size=8))
    seconds = time.perf_counter() - started
    return {"mode": f"keen detect loop, {threads} thread(s)", "images": count, "steady_images_per_second":
            count / seconds, "images_per_second": count / seconds, "startup_s": 0.0, "overhead_ms": 0.0}


def batch_row(name: str, run) -> dict:
    return {"mode": name, "images": run.processed, "steady_images_per_second": run.steady_images_per_second,
            "images_per_second": run.images_per_second, "startup_s": run.startup_s,
            "overhead_ms": 1000 * run.overhead_per_image_s, "workers": run.workers,
            "worker_processes": run.worker_processes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celeba", type=int, default=400, help="CelebA photos (default 400)")
    parser.add_argument("--camvid", type=int, default=40, help="CamVid frames (default 40)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per worker call and block (default 16)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                        help="torch threads of the in-process rows, one pair of rows each (default 2 1)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (default 1 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    paths = workload(args.celeba, args.camvid)
    import ray

    rows = []
    with tempfile.TemporaryDirectory(prefix="keen-batch-bench-") as scratch:
        listing = Path(scratch) / "inputs.txt"
        listing.write_text("\n".join(paths) + "\n")
        for threads in args.threads:
            rows.append(detect_loop(paths, threads))
            run = run_batch("detect", [str(listing)], Path(scratch) / f"in-process-{threads}",
                            batch_size=args.batch_size, device="cpu", progress=False)
            rows.append(batch_row(f"keen batch, in-process, {threads} thread(s)", run))
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        ray_init_s = time.perf_counter() - started
        try:
            for workers in args.workers:
                run = run_batch("detect", [str(listing)], Path(scratch) / f"ray-{workers}", ray="local",
                                workers=workers, batch_size=args.batch_size, progress=False)
                rows.append(batch_row(f"keen batch --ray, {workers} worker(s) x 1 thread", run))
        finally:
            ray.shutdown()
    baseline = rows[0]["steady_images_per_second"]
    print(f"keen batch detect: {len(paths)} images ({args.celeba} CelebA 178x218, {args.camvid} CamVid 480x360), "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Ray "
          f"cluster of {args.cpus} CPUs (ray.init {ray_init_s:.1f} s), one run per row\n")
    print(format_table(["mode", "steady img/s", "vs detect loop", "wall img/s", "start-up s", "overhead ms/img"],
                       [[row["mode"], f"{row['steady_images_per_second']:.1f}",
                         f"{row['steady_images_per_second'] / baseline:.2f}x", f"{row['images_per_second']:.1f}",
                         f"{row['startup_s']:.1f}", f"{row['overhead_ms']:.2f}"] for row in rows]))
    if args.json:
        print(json.dumps({"benchmark": "batch", "images": len(paths), "batch_size": args.batch_size,
                          "threads": args.threads, "cpus": args.cpus, "ray_init_s": ray_init_s, "rows": rows}))


if __name__ == "__main__":
    main()
