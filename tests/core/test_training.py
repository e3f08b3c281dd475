"""core.training: where checkpoints are mirrored outside the working tree, and which one a resume takes."""

from __future__ import annotations

from pathlib import Path

import torch

from keenvision.core.training import checkpoint_step, mirrored_run_dir, resolve_precision, resume_checkpoint, runs_root


def test_runs_root_and_mirrored_run_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KEEN_RUNS", str(tmp_path))
    assert runs_root() == tmp_path
    assert mirrored_run_dir("runs/farsee/camvid") == tmp_path / "farsee" / "camvid"
    assert mirrored_run_dir("experiments/a") == tmp_path / "experiments" / "a"
    assert mirrored_run_dir(Path("/somewhere/else/sicnn/recognition")) == tmp_path / "sicnn" / "recognition"
    monkeypatch.delenv("KEEN_RUNS")
    assert runs_root() == Path.home() / ".cache" / "keenvision" / "runs"


def _checkpoint(path: Path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {}}, path)


def test_resume_takes_the_checkpoint_with_more_steps(monkeypatch, tmp_path):
    monkeypatch.setenv("KEEN_RUNS", str(tmp_path / "kept"))
    run_dir = tmp_path / "tree" / "runs" / "farsee" / "x"
    own, mirror = run_dir / "checkpoints" / "last.ckpt", mirrored_run_dir(run_dir) / "checkpoints" / "last.ckpt"
    assert resume_checkpoint(run_dir) is None
    _checkpoint(mirror, 400)  # a new checkout: only the copy outside the tree survived
    assert resume_checkpoint(run_dir) == mirror and checkpoint_step(mirror) == 400
    _checkpoint(own, 200)
    assert resume_checkpoint(run_dir) == mirror
    _checkpoint(own, 600)
    assert resume_checkpoint(run_dir) == own
    _checkpoint(mirror, 600)
    assert resume_checkpoint(run_dir) == own  # a tie: the working tree's
    own.write_bytes(b"not a checkpoint")
    assert checkpoint_step(own) == -1 and resume_checkpoint(run_dir) == mirror


def test_precision():
    assert resolve_precision({"precision": "auto", "accelerator": "cpu"}) == "32-true"
    assert resolve_precision({"precision": "bf16-mixed", "accelerator": "auto"}) == "bf16-mixed"
