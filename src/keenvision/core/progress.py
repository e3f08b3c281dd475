"""Progress bars for long work (training, evaluation, videos and folders): tqdm on stderr, so stdout keeps only
results (one JSON object last under ``--json``, where commands turn bars off altogether).

``KEEN_PROGRESS``: unset shows bars only when stderr is a terminal (a log file of a background run stays clean);
``1`` always shows them, ``0`` never.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from contextlib import contextmanager


def progress_bar(iterable: Iterable | None = None, *, desc: str, unit: str = "it", total: float | None = None,
                 enabled: bool = True, **options):
    """A `tqdm.tqdm` on stderr over ``iterable`` (or updated by hand); ``enabled=False`` (e.g. under ``--json``)
    makes it silent whatever ``KEEN_PROGRESS`` says. ``options`` go to tqdm (``initial``, ``leave``, ...)."""
    from tqdm import tqdm

    mode = os.environ.get("KEEN_PROGRESS", "").strip()
    disable = True if not enabled or mode == "0" else False if mode == "1" else None  # None: terminals only
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, disable=disable, dynamic_ncols=True,
                **options)


@contextmanager
def progress_callback(*, desc: str, unit: str = "it", enabled: bool = True):
    """A `progress_bar` driven by a ``(done, total)`` callback, for APIs that report progress by calling back
    (e.g. `keenvision.sicnn.prepare_faces`); the bar is closed on leaving."""
    bar = progress_bar(desc=desc, unit=unit, enabled=enabled)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
