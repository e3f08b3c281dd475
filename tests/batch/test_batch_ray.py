"""`keen batch --ray` on a real Ray cluster started here (2 CPUs): the rows equal `keen detect --json` on the same
200+ real images with bad files among them, and a worker killed mid-run neither loses nor duplicates a row."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from keenvision.batch import read_results
from keenvision.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pyarrow_module")]

WORKER_TITLE = b"MapBatches(BatchWorker)"  # Ray names an actor's process after its class: ray::MapWorker(...)


def _summary(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _worker_pids() -> list[int]:
    """Processes of this machine running a `BatchWorker` actor (Ray sets their title to the actor's name)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if WORKER_TITLE in handle.read():
                        pids.append(int(entry))
            except OSError:  # the process ended while we looked
                continue
    return pids


def _raw_paths(out) -> list[str]:
    """Every row's path in every block on disk, duplicates included (read_results would hide them)."""
    import pyarrow.parquet as pq

    return [path for block in sorted((out / "results").glob("*.parquet"))
            for path in pq.read_table(block, columns=["path"]).column("path").to_pylist()]


def test_ray_rows_equal_keen_detect_json(ray_cluster, image_sources, image_paths, assert_rows_match_detect, tmp_path,
                                         capsys):
    out = tmp_path / "out"
    status = main(["batch", "detect", *image_sources, "--out", str(out), "--ray", "local", "--workers", "2",
                   "--batch-size", "16", "--json"])
    captured = capsys.readouterr()
    summary = _summary(captured.out)
    assert status == 1  # the bad files' error rows
    assert (summary["mode"], summary["workers"], summary["worker_processes"]) == ("ray", 2, 2)
    assert (summary["processed"], summary["errors"]) == (len(image_paths), 5)
    assert "Traceback" not in captured.err
    assert sorted(_raw_paths(out)) == sorted(image_paths)  # on disk too: one row per input
    assert_rows_match_detect({row["path"]: row for row in read_results(out).to_pylist()})


def test_a_killed_worker_loses_and_duplicates_no_row(ray_cluster, image_sources, image_paths,
                                                     assert_rows_match_detect, tmp_path, capsys):
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_one_worker_mid_run() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pids = _worker_pids()
            if pids and len(list((out / "results").glob("*.parquet"))) >= 2:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_one_worker_mid_run, daemon=True)
    watcher.start()
    status = main(["batch", "detect", *image_sources, "--out", str(out), "--ray", "local", "--workers", "2",
                   "--batch-size", "8", "--json"])
    watcher.join(timeout=5)
    captured = capsys.readouterr()
    assert killed, "no worker was killed: the run ended before the watcher saw two blocks"
    blocks_total = -(-len(image_paths) // 8)
    summary = _summary(captured.out)  # Ray restarted the worker and retried its batches: the run finished
    assert status == 1 and summary["processed"] == len(image_paths)
    assert summary["blocks_written"] == blocks_total
    # a rerun finds every input done; on disk and as read, each input has exactly one row
    assert main(["batch", "detect", *image_sources, "--out", str(out), "--json"]) == 0
    rerun = _summary(capsys.readouterr().out)
    assert (rerun["skipped"], rerun["processed"]) == (len(image_paths), 0)
    assert sorted(_raw_paths(out)) == sorted(image_paths)
    assert_rows_match_detect({row["path"]: row for row in read_results(out).to_pylist()})
