"""Picture of a schedule: tokens kept after every block's prune and merge steps."""

from __future__ import annotations

import io
from pathlib import Path

from ..core.io import write_atomic
from .method.schedule import Schedule


def plot_kept_tokens(schedule: Schedule, tokens: int, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of the effective kept tokens per block (after prune, after merge); return its path.

    Args:
        schedule: the schedule to draw.
        tokens: tokens entering the first block (patches + prefix tokens).
        path: output PNG; written to a temporary file in the same folder, then renamed (never half-written).
        title: figure title (default: none).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    incoming, after_prune, after_merge = [], [], []
    current = tokens
    for prune_count, merge_count in zip(schedule.prune_kept, schedule.merge_kept):
        incoming.append(current)
        after_prune.append(min(current, prune_count))
        current = min(current, prune_count, merge_count)
        after_merge.append(current)
    blocks = list(range(schedule.depth))
    figure = Figure(figsize=(max(5.0, 0.45 * schedule.depth + 2), 3.6), dpi=120)
    axes = figure.add_subplot()
    width = 0.4
    axes.bar([b - width / 2 for b in blocks], after_prune, width, label="after prune", color="#4c72b0")
    axes.bar([b + width / 2 for b in blocks], after_merge, width, label="after merge", color="#dd8452")
    axes.step(blocks, incoming, where="mid", color="0.3", linestyle="--", linewidth=1, label="entering block")
    axes.set_xlabel("block")
    axes.set_ylabel("tokens (prefix included)")
    axes.set_xticks(blocks)
    axes.set_ylim(0, tokens * 1.05)
    axes.legend(loc="upper right", fontsize=8)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    encoded = io.BytesIO()
    figure.savefig(encoded, format="png")
    write_atomic(path, encoded.getvalue())
    return path
