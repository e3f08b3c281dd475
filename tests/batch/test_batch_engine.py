"""`keen batch` in this process (no Ray): the rows say what `keen detect|segment|hallucinate --json` say about the
same files, a killed run resumes with every input exactly once, bad usage is one line before any work."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keenvision.batch import read_results
from keenvision.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread", "pyarrow_module")


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _rows_by_path(out) -> dict:
    return {row["path"]: row for row in read_results(out).to_pylist()}


def test_in_process_rows_equal_keen_detect_json(image_sources, image_paths, assert_rows_match_detect, tmp_path,
                                                capsys):
    out = tmp_path / "out"
    status = main(["batch", "detect", *image_sources, "--out", str(out), "--batch-size", "32", "--json"])
    captured = capsys.readouterr()
    summary = _json_lines(captured.out)[-1]
    assert status == 1  # error rows are reported in the exit status, as keen detect does
    assert summary["inputs"] == summary["processed"] == len(image_paths) and summary["skipped"] == 0
    assert summary["errors"] == 5  # 4 bad files and 1 missing path
    assert "Traceback" not in captured.err
    assert sum("error row:" in line for line in captured.err.splitlines()) == 5
    assert_rows_match_detect(_rows_by_path(out))
    # a rerun finds every input done: nothing processed, nothing added
    assert main(["batch", "detect", *image_sources, "--out", str(out), "--json"]) == 0
    again = _json_lines(capsys.readouterr().out)[-1]
    assert (again["skipped"], again["processed"]) == (len(image_paths), 0)
    assert read_results(out).num_rows == len(image_paths)


def test_images_are_written_beside_the_rows_when_asked(data_dir, tmp_path, capsys):
    photos = [str(data_dir / "mtcnn_official" / name) for name in ("test1.jpg", "test2.jpg")]
    out = tmp_path / "out"
    assert main(["batch", "detect", *photos, "--out", str(out), "--save-images"]) == 0
    capsys.readouterr()
    rows = read_results(out).to_pylist()
    assert [row["path"] for row in rows] == photos
    from keenvision.core.io import read_image

    for row in rows:
        assert row["faces"] and os.path.dirname(row["image"]) == str(out / "images")
        assert read_image(row["image"]).pixels.shape[:2] == (row["height"], row["width"])


def _run_until_blocks(command: list[str], results, blocks: int, timeout: float = 180) -> int:
    """Start ``command``, SIGKILL it (and its children) once ``results`` holds ``blocks`` files; returns how many
    blocks there were when it died."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                               env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if results.is_dir() and len(list(results.glob("*.parquet"))) >= blocks:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    return len(list(results.glob("*.parquet")))


def test_a_killed_run_resumes_with_every_input_exactly_once(image_sources, image_paths, assert_rows_match_detect,
                                                            tmp_path, capsys):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "keenvision.cli", "batch", "detect", *image_sources, "--out", str(out),
               "--batch-size", "8"]
    blocks = _run_until_blocks(command, out / "results", blocks=3)
    assert 3 <= blocks < len(image_paths) / 8  # killed mid-run
    before = read_results(out).num_rows
    assert main(["batch", "detect", *image_sources, "--out", str(out), "--batch-size", "8", "--json"]) == 1
    summary = _json_lines(capsys.readouterr().out)[-1]
    assert (summary["skipped"], summary["processed"]) == (before, len(image_paths) - before)
    rows = read_results(out)
    assert sorted(rows.column("path").to_pylist()) == sorted(image_paths)  # every input, once
    assert_rows_match_detect({row["path"]: row for row in rows.to_pylist()})


def test_segment_rows_equal_keen_segment_json(data_dir, bad_folder, tmp_path, capsys):
    from keenvision.farsee.segment import read_labels

    frames = [str(path) for path in sorted((data_dir / "camvid" / "val" / "images").glob("*.jpg"))[:3]]
    inputs = [*frames, str(bad_folder / "corrupt.jpg")]
    assert main(["batch", "segment", *inputs, "--out", str(tmp_path / "batch"), "--device", "cpu"]) == 1
    assert main(["segment", *inputs, "--out", str(tmp_path / "segment"), "--device", "cpu", "--json"]) == 1
    records = {record["path"]: record for record in _json_lines(capsys.readouterr().out)}
    rows = _rows_by_path(tmp_path / "batch")
    assert set(rows) == set(records)
    for path, row in rows.items():
        record = records[path]
        if "error" in record:
            assert (row["status"], row["error"]) == ("error", record["error"])
            continue
        assert (row["width"], row["height"]) == (record["width"], record["height"])
        assert {share["class"]: share["share"] for share in row["class_shares"]} == record["class_fractions"]
        assert [share["class"] for share in row["class_shares"]] == list(record["class_fractions"])  # largest first
        assert np.array_equal(read_labels(row["labels"]), read_labels(record["labels"]))
        assert row["image"] is None  # no overlay without --save-images


def test_hallucinate_rows_equal_keen_hallucinate_json(data_dir, bad_folder, tmp_path, capsys):
    from PIL import Image

    photos = [str(path) for path in sorted((data_dir / "celeba_identities").glob("*/*.jpg"))[:3]]
    inputs = [*photos, str(data_dir / "camvid" / "val" / "images" / "0016E5_07959.jpg"),
              str(bad_folder / "truncated.jpg")]
    assert main(["batch", "hallucinate", *inputs, "--out", str(tmp_path / "batch"), "--device", "cpu",
                 "--all-faces"]) == 1
    main(["hallucinate", *inputs, "--out", str(tmp_path / "cmd"), "--device", "cpu", "--all-faces", "--json"])
    records = {record["path"]: record for record in _json_lines(capsys.readouterr().out)}
    rows = _rows_by_path(tmp_path / "batch")
    assert set(rows) == set(records)
    with_faces = 0
    for path, row in rows.items():
        record = records[path]
        if record.get("error", "").endswith("no face found"):  # keen hallucinate's error, a row with no faces here
            assert (row["status"], row["faces"]) == ("ok", [])
            continue
        if "error" in record:
            assert (row["status"], row["error"]) == ("error", record["error"])
            continue
        with_faces += 1
        keys = ("box", "score", "landmarks", "alignment_scale", "small", "status")
        assert [{key: face[key] for key in keys} for face in row["faces"]] == [
            {key: face[key] for key in keys} for face in record["faces"]]
        for face in row["faces"]:  # --all-faces: every face hallucinated, its 96x112 crop written
            assert Image.open(face["crop"]).size == (96, 112)
            assert face["comparison"] is None  # keen hallucinate's strip ("output") only with --save-images
    assert with_faces == 3


def test_usage_errors_are_one_line_before_any_work(image_sources, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def one_line(argv: list[str]) -> str:
        started = time.monotonic()
        assert main(argv) == 2
        assert time.monotonic() - started < 15
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err
        return err[0]

    assert "not a folder" in one_line(["batch", "detect", *image_sources, "--out", str(blocker)])
    assert "cannot write there" in one_line(["batch", "detect", *image_sources, "--out", str(blocker / "out")])
    if os.geteuid() != 0:  # root writes anywhere: only a non-root user can be refused by permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "cannot write there" in one_line(["batch", "detect", *image_sources, "--out", str(locked / "o")])
    out = str(tmp_path / "out")
    assert "need --ray" in one_line(["batch", "detect", *image_sources, "--out", out, "--workers", "2"])
    assert "no such file or folder" in one_line(["batch", "detect", str(tmp_path / "nope"), "--out", out])
    assert "--batch-size must be >= 1" in one_line(["batch", "detect", *image_sources, "--out", out,
                                                    "--batch-size", "0"])
    # an unreachable cluster: a closed port on this machine
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if importlib.util.find_spec("ray") is not None:
        message = one_line(["batch", "detect", *image_sources, "--out", out, "--ray", f"127.0.0.1:{port}"])
        assert f"--ray 127.0.0.1:{port}: cannot reach a Ray cluster there" in message
        assert "expected local, auto" in one_line(["batch", "detect", *image_sources, "--out", out, "--ray",
                                                   "nowhere"])
        # weights that do not load: found here, before any worker starts (and dies, and is retried)
        (tmp_path / "junk.safetensors").write_bytes(b"junk")
        assert "not a readable safetensors file" in one_line(
            ["batch", "detect", *image_sources, "--out", str(tmp_path / "out2"), "--ray", "local", "--weights",
             str(tmp_path / "junk.safetensors")])
    # the extra missing: Ray, then pyarrow
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert "pip install 'keenvision[scale]'" in one_line(["batch", "detect", *image_sources, "--out", out, "--ray",
                                                          "local"])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert "pip install 'keenvision[scale]'" in one_line(["batch", "detect", *image_sources, "--out", out])


def test_help_imports_neither_ray_nor_pyarrow_nor_torch():
    code = ("import sys; from keenvision.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'ray', 'pyarrow', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    shown = subprocess.run([sys.executable, "-m", "keenvision.cli", "batch", "detect", "--help"], capture_output=True,
                           text=True)
    assert shown.returncode == 0 and "--gpus-per-worker" in shown.stdout


def test_an_address_that_answers_but_is_not_ray_is_one_line_within_the_timeout(ray_module):
    import socket
    import threading

    from keenvision.batch.engine import connect_ray
    from keenvision.core.errors import UsageError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()  # accepts, never answers
    address = f"127.0.0.1:{server.getsockname()[1]}"
    started = time.monotonic()
    try:
        with pytest.raises(UsageError) as caught:
            connect_ray(address, timeout=4)
    finally:
        server.close()
    assert time.monotonic() - started < 8
    message = str(caught.value)
    assert message.startswith(f"--ray {address}: ") and "\n" not in message
