"""``keen demo``: run every system on embedded defaults, offline, and write ``demo/report.html``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core.report import write_report


def run_demo(out_dir: str | Path = "demo", device: str | None = "cpu") -> Path:
    from .diffrate.demo import demo_section as diffrate_section
    from .engagement.demo import demo_section as engagement_section
    from .farsee.demo import demo_section as farsee_section
    from .mtcnn.demo import demo_section as mtcnn_section
    from .sicnn.demo import demo_section as sicnn_section

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for name, build in (("mtcnn", mtcnn_section), ("sicnn", sicnn_section), ("engagement", engagement_section),
                        ("farsee", farsee_section), ("diffrate", diffrate_section)):
        print(f"keen demo: {name} ...", file=sys.stderr, flush=True)
        sections.append(build(out_dir, device=device))
    return write_report(sections, out_dir)


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="run every system on embedded samples and write an HTML report")
    demo.add_argument("--out", type=Path, default=Path("demo"), help="report folder (default ./demo)")
    demo.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    demo.set_defaults(handler=lambda args: print(f"wrote {run_demo(args.out, args.device)}") or 0)
