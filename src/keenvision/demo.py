"""``keen demo``: every declared system's demo section on embedded defaults, offline, in ``demo/report.html``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_demo(out_dir: str | Path = "demo", device: str | None = "cpu") -> Path:
    from .core.report import write_report
    from .core.system import systems

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for system in systems():
        if system.demo is not None:
            print(f"keen demo: {system.name} ...", file=sys.stderr, flush=True)
            sections.append(system.resolve("demo")(out_dir, device=device))
    return write_report(sections, out_dir)


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    from .core.cli import add_device_option, add_out_option

    demo = commands.add_parser("demo", help="run every system on embedded samples and write an HTML report")
    add_out_option(demo, "report folder (default ./demo)", default="demo")
    add_device_option(demo, "cpu")
    demo.set_defaults(handler=lambda args: print(f"wrote {run_demo(args.out, args.device)}") or 0)
