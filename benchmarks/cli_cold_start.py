"""Cold start of the `keen` command line: wall time of fresh processes, against `import torch` alone.

    python benchmarks/cli_cold_start.py [--repeats 5] [--json]

Rows: `keen --help` and `keen mtcnn --help`, which build the parser and should import no torch; `keen detect
one.jpg`, the first thing a new user runs (imports torch, loads the weights, detects); and `python -c "import
torch"`, the floor every torch command pays. Each row is the median of --repeats fresh processes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from keenvision.core.bench import format_table
from keenvision.core.data import data_root


def wall(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    keen = str(Path(sys.executable).with_name("keen")) if Path(sys.executable).with_name("keen").is_file() \
        else shutil.which("keen")
    photo = data_root() / "mtcnn_official" / "test1.jpg"
    rows = {"python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "keen --help": [keen, "--help"],
            "keen mtcnn --help": [keen, "mtcnn", "--help"],
            "keen detect one.jpg": [keen, "detect", str(photo)]}
    seconds = {name: wall(command, args.repeats) for name, command in rows.items()}
    torch_alone = seconds["python -c 'import torch'"]
    table = format_table(["command", "median seconds", "vs import torch"],
                         [[name, f"{value:.2f}", f"{value / torch_alone:.2f}x"] for name, value in seconds.items()])
    print(f"CLI cold start, {args.repeats} fresh processes each\n\n{table}")
    if args.json:
        print(json.dumps({"benchmark": "cli_cold_start", "repeats": args.repeats, "seconds": seconds}))


if __name__ == "__main__":
    main()
