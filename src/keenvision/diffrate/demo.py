"""The DiffRate section of ``keen demo``: the shipped CIFAR-10 ViT before and after its searched schedule.

FLOPs come from the paper's formula, throughput is measured now (original and compressed in the same run),
accuracy is measured now on CIFAR-10 test images when the shared data is present (``KEEN_DATA``) and otherwise
quoted from the measurement stored with the shipped schedule (the whole 10,000-image test set).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..core.data import data_root
from ..core.report import Section
from .benchmark import throughput
from .evaluate import evaluate_top1
from .method.baseline import uniform_schedule
from .method.flops import schedule_gflops
from .method.schedule import SHIPPED_SCHEDULES_FILE, Schedule, shipped_schedule
from .models import load_model
from .plot import plot_kept_tokens

DEMO_MODEL = "cifar10-vit"
DEMO_SCHEDULE = "0.11"  # key in shipped_schedules.json: the search (+ refine) at -40% FLOPs


def _effective_counts(schedule: Schedule) -> str:
    return " ".join(str(min(p, m)) for p, m in zip(schedule.prune_kept, schedule.merge_kept))


def demo_section(out_dir: Path, device: str | None = "cpu", images_per_class: int = 100) -> Section:
    model = load_model(DEMO_MODEL)
    searched = shipped_schedule(DEMO_MODEL, DEMO_SCHEDULE)
    entry = json.loads(resources.files(__package__).joinpath(SHIPPED_SCHEDULES_FILE).read_text())[DEMO_MODEL][
        DEMO_SCHEDULE]
    original_gflops = schedule_gflops(model)
    uniform = uniform_schedule(model, schedule_gflops(model, searched))
    schedules = {"DiffRate (searched)": searched, "uniform merge (ToMe-like)": uniform}

    cifar = data_root() / "cifar10"
    accuracy: dict[str, tuple[float, float]] = {}
    if (cifar / "test.zip").is_file() or (cifar / "test").is_dir():
        for name, schedule in schedules.items():
            result = evaluate_top1(model, cifar, "test", schedule, batch_size=250, limit_per_class=images_per_class,
                                   device=device or "cpu")
            accuracy[name] = (result["top1_original"], result["top1_compressed"])
        accuracy_note = f"top-1 measured now on the first {images_per_class * 10} CIFAR-10 test images"
    else:
        accuracy_note = "CIFAR-10 not found (KEEN_DATA): top-1 below is the stored measurement"

    tokens = searched.prune_kept[0]
    now = {name: f"{pair[1]:.2%}" for name, pair in accuracy.items()}
    rows = [["original", f"{original_gflops:.4f}", _effective_counts(Schedule.keep_all(len(model.blocks), tokens)),
             "", "1.00x", f"{next(iter(accuracy.values()))[0]:.2%}" if accuracy else "",
             f"{entry['top1_original']:.2%}"]]
    section = Section("DiffRate token pruning and merging")
    for (name, schedule), (kind, stored) in zip(schedules.items(), (("searched", entry.get("top1_searched")),
                                                                     ("uniform", entry.get("top1_uniform")))):
        speed = throughput(model, schedule, batch=64, device=device or "cpu", repeats=3, warmup=1)
        gflops = schedule_gflops(model, schedule)
        rows.append([name, f"{gflops:.4f}", _effective_counts(schedule),
                     f"{speed['images_per_s_compressed']:.0f} vs {speed['images_per_s_original']:.0f}",
                     f"{speed['speedup']:.2f}x", now.get(name, ""), f"{stored:.2%}" if stored is not None else ""])
        plot_name = f"diffrate_{kind}_kept_tokens.png"
        plot_kept_tokens(schedule, tokens, out_dir / plot_name, title=f"{name}, {gflops:.3f} GMACs")
        section.images.append((plot_name, f"{name}: tokens kept after each block's prune and merge steps"))
    section.paragraphs.append(
        f"Chen et al. (ICCV 2023). The shipped CIFAR-10 ViT (timm VisionTransformer, 4x4 patches, {tokens} tokens, "
        f"{original_gflops:.3f} GMACs) compressed by the schedule DiffRate searched for -40% FLOPs (polished by "
        f"`keen diffrate refine` on training images), next to a "
        f"uniform ToMe-like merge schedule of the same cost; no fine-tuning. Throughput: batch 64, fp32, "
        f"{device or 'cpu'}, original and compressed in the same run. {accuracy_note}; the last column is the "
        f"whole 10,000-image test set, measured when the schedule was shipped.")
    section.table = (["schedule", "GMACs", "tokens after each block", "img/s (compressed vs original)", "speed-up",
                      "top-1 (now)", "top-1 (10k test)"], rows)
    return section
