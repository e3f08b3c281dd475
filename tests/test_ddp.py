"""Lightning DDP for real: each trainer runs a few steps in 2 CPU processes (gloo) through `keen <system> train
--accelerator cpu --devices 2`, and its export loads. Engagement fits seconds-long models in one process and has no
DDP. Each run is a subprocess, because Lightning's DDP launcher starts the other rank by re-running the command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from keenvision.core.training import checkpoint_step

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_ddp(system: str, recipe: dict, run_dir: Path, base: str, data_dir: Path) -> Path:
    config = run_dir.parent / f"{run_dir.name}.yaml"
    config.write_text(yaml.safe_dump({"base": str(CONFIGS / base), **recipe}))
    environment = {**os.environ, "KEEN_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
    keen = Path(sys.executable).with_name("keen")
    command = [str(keen) if keen.is_file() else shutil.which("keen"), system, "train", "--config", str(config),
               "--run-dir", str(run_dir), "--accelerator", "cpu", "--devices", "2", "--num-threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr  # Lightning's DDP banner: both ranks ran
    return Path(result.stdout.strip().splitlines()[-1].split(": ", 1)[1])


def _step(export: Path) -> int:
    with safe_open(str(export), "pt") as handle:
        return int(handle.metadata()["global_step"])


def test_farsee_under_ddp(data_dir, tmp_path):
    if not (data_dir / "camvid").is_dir():
        pytest.skip("camvid not found")
    recipe = {"train_images": 4, "val_images": 2, "crop_size": [160, 224], "batch_size": 2, "val_batch_size": 2,
              "max_steps": 3, "checkpoint_every": 3, "val_every": 3, "log_every": 1, "model": {"width": 16}}
    export = run_ddp("farsee", recipe, tmp_path / "farsee", "farsee/camvid_mobilenet.yaml", data_dir)
    from keenvision.farsee import load_farsee

    assert load_farsee(export).config["width"] == 16 and _step(export) == 3
    assert checkpoint_step(tmp_path / "farsee" / "checkpoints" / "last.ckpt") == 3


def test_diffrate_vit_under_ddp(data_dir, tmp_path):
    if not (data_dir / "cifar10").is_dir():
        pytest.skip("cifar10 not found")
    recipe = {"cache_dir": str(tmp_path / "cache"), "images_per_class": 4, "batch_size": 4, "max_steps": 3,
              "checkpoint_every": 3, "val_every": 3, "warmup_steps": 1,
              "model": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}}
    export = run_ddp("diffrate", recipe, tmp_path / "vit", "diffrate/cifar10_vit.yaml", data_dir)
    from keenvision.diffrate.models import load_model

    assert load_model(str(export)).embed_dim == 32 and _step(export) == 3


def test_mtcnn_pnet_under_ddp(data_dir, tmp_path):
    if not (data_dir / "faces_dlib_examples").is_dir():
        pytest.skip("dlib examples not found")
    recipe = {"max_steps": 4, "checkpoint_every": 2, "batch_size": 16, "strategy": "ddp"}
    export = run_ddp("mtcnn", recipe, tmp_path / "pnet", "mtcnn/smoke.yaml", data_dir)
    from keenvision.core.weights import load_into, load_weights
    from keenvision.mtcnn import PNet

    load_into(PNet(landmarks=True), load_weights(export, prefix="pnet."), str(export))  # raises if it does not fit
    assert _step(export) == 4


def test_sicnn_pixel_phase_under_ddp(data_dir, tmp_path, detector):
    if not (data_dir / "celeba_identities").is_dir():
        pytest.skip("celeba_identities not found")
    from keenvision.sicnn import load_cnn_h, prepare_faces

    source = tmp_path / "photos"
    for identity in ("00001", "00002", "00003", "00004"):
        shutil.copytree(data_dir / "celeba_identities" / identity, source / identity)
    prepare_faces(source, tmp_path / "faces", detector=detector, fractions={"train": 0.5, "val": 0.5, "test": 0.0})
    recipe = {"data_root": str(tmp_path / "faces"), "batch_size": 2, "max_steps": 3, "checkpoint_every": 3,
              "val_every": 3, "log_every": 1,
              "cnn_h": {"stem_channels": 8, "growth": 4, "dense_layers": [2, 2, 2, 1], "upsample_channels": 8}}
    export = run_ddp("sicnn", recipe, tmp_path / "pixel", "sicnn/pixel_residual.yaml", data_dir)
    assert load_cnn_h(str(export)) is not None and _step(export) == 3
