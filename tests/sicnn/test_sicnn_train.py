"""The SICNN recipe on real prepared faces: every phase trains (tiny widths, batch 4), the domain-integrated step keeps
CNN-R's parameters out of CNN-H's update, checkpoints resume, exports load."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from keenvision.sicnn import degrade, load_cnn_h
from keenvision.sicnn.model import load_cnn_r, read_metadata
from keenvision.sicnn.train import SICNNModule, export_checkpoint, load_config, train_sicnn

TINY = {
    "cnn_h": {"stem_channels": 8, "growth": 4, "dense_layers": [2, 2, 2, 1], "upsample_channels": 8},
    "cnn_r": {"channels": [8, 16, 16, 32], "blocks": [1, 1, 1, 1], "stem_channels": 8, "embedding_dim": 64},
    "batch_size": 4, "train_faces": 4, "flip": False,  # the same 4 faces every step: the loss must fall
    "optimizer": "adam", "lr": 2e-3, "r_optimizer": "adam", "r_lr": 1e-3,
    "val_every": 1000, "checkpoint_every": 1000, "log_every": 1, "num_threads": 1, "accelerator": "cpu",
}
FIXED_LAMBDA = {"kind": "sphereface", "options": {"lambda_base": 12.0, "lambda_min": 12.0}}  # the sample's SICNN


@pytest.fixture(scope="module")
def faces(tmp_path_factory, data_dir, detector):
    """6 CelebA identities and 4 ORL photos of one subject, prepared: 4 train, 2 val, 1 test identities."""
    src = tmp_path_factory.mktemp("sicnn_train_src")
    for identity in ("00001", "00002", "00003", "00004", "00005", "00006"):
        shutil.copytree(data_dir / "celeba_identities" / identity, src / identity)
    (src / "s1").mkdir()
    for index in (1, 2, 3, 4):
        shutil.copy(data_dir / "orl_faces" / "s1" / f"{index}.pgm", src / "s1")
    from keenvision.sicnn import prepare_faces

    out = tmp_path_factory.mktemp("sicnn_train_faces")
    prepare_faces(src, out, detector=detector, fractions={"train": 0.5, "val": 0.3, "test": 0.2})
    return out


def _metrics(run_dir, version: int = 0) -> list[dict]:
    with open(run_dir / "logs" / f"version_{version}" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def _series(rows: list[dict], key: str) -> list[float]:
    return [float(row[key]) for row in rows if row.get(key)]


def _train(faces, run_dir, phase, **overrides):
    torch.set_num_threads(1)
    config = {**TINY, "phase": phase, "data_root": str(faces), "run_dir": str(run_dir), **overrides}
    return train_sicnn(None, config)


@pytest.fixture(scope="module")
def pretrained(faces, tmp_path_factory):
    """The two pre-training phases: CNN-R on HR faces, CNN-H with the pixel loss."""
    runs = tmp_path_factory.mktemp("sicnn_runs")
    cnn_r = _train(faces, runs / "recognition", "recognition", max_steps=15, head=FIXED_LAMBDA, val_every=15,
                   grad_clip_norm=5.0)
    cnn_h = _train(faces, runs / "pixel", "pixel", max_steps=15, val_every=15)
    return {"runs": runs, "cnn_r": cnn_r, "cnn_h": cnn_h}


def test_config_checks():
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(None, {"learning_rate": 1.0})
    with pytest.raises(ValueError, match=r"cnn_h\.width"):
        load_config(None, {"cnn_h": {"width": 3}})
    with pytest.raises(ValueError, match="init_cnn_r"):
        load_config(None, {"phase": "fixed_si"})
    with pytest.raises(ValueError, match="phase"):
        load_config(None, {"phase": "gan"})


def test_a_non_finite_loss_stops_training_before_the_update():
    module = SICNNModule(load_config(None, {**TINY, "phase": "recognition"}), num_classes=4)
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(FloatingPointError, match="recognition loss is nan at step 0: training diverged"):
        module._update(None, None, torch.tensor(float("nan")))
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_recognition_phase_lowers_the_margin_loss(pretrained):
    rows = _metrics(pretrained["runs"] / "recognition")
    losses = _series(rows, "train/loss_fr")
    assert len(losses) == 15 and losses[-1] < 0.7 * losses[0]
    assert _series(rows, "train/lambda")[0] == 12.0
    assert 0 <= _series(rows, "val/verification_auc")[-1] <= 1  # verification on the 2 unseen val identities
    metadata = read_metadata(pretrained["cnn_r"])
    assert metadata["network"] == "cnn_r" and metadata["global_step"] == "15"
    assert json.loads(metadata["head"])["num_classes"] == 4


def test_pixel_phase_lowers_the_pixel_loss(pretrained):
    rows = _metrics(pretrained["runs"] / "pixel")
    losses = _series(rows, "train/loss_sr")
    assert losses[-1] < 0.7 * losses[0]
    assert "train/loss_si" not in rows[0]
    assert _series(rows, "val/psnr") and _series(rows, "val/psnr_bicubic")


def test_fixed_si_phase_lowers_pixel_plus_alpha_si(pretrained, faces, tmp_path):
    # the architectures come from the exports, whatever the config says
    _train(faces, tmp_path / "fixed_si", "fixed_si", max_steps=12, init_cnn_h=str(pretrained["cnn_h"]),
           init_cnn_r=str(pretrained["cnn_r"]), alpha=8.0, cnn_h={"stem_channels": 64}, cnn_r={"embedding_dim": 32})
    rows = _metrics(tmp_path / "fixed_si")
    total, si = _series(rows, "train/loss_h"), _series(rows, "train/loss_si")
    assert total[-1] < total[0]
    assert all(0 <= value <= 4 for value in si)
    # CNN-R stayed what the recognition phase exported (fixed): only CNN-H is written
    assert not (tmp_path / "fixed_si" / "cnn_r.safetensors").exists()
    assert load_cnn_h(str(tmp_path / "fixed_si" / "cnn_h.safetensors")).config == TINY["cnn_h"]


class _GradientProbe(L.Callback):
    """After each training batch: which parameters hold gradients, and CNN-R's weights."""

    def __init__(self):
        self.records = []

    def on_train_batch_end(self, trainer, module, *_):
        self.records.append({
            "cnn_r_grads": [p.grad for p in module.cnn_r.parameters()],
            "head_grads": [p.grad for p in module.head.parameters()],
            "cnn_h_grads": [p.grad for p in module.cnn_h.parameters()],
            "cnn_r_weights": [p.detach().clone() for p in module.cnn_r.parameters()],
        })


def test_domain_integrated_step_updates_cnn_r_then_cnn_h_with_cnn_r_frozen(pretrained, faces):
    torch.set_num_threads(1)
    config = load_config(None, {**TINY, "phase": "domain_integrated", "data_root": str(faces),
                                "init_cnn_h": str(pretrained["cnn_h"]), "init_cnn_r": str(pretrained["cnn_r"]),
                                "head": FIXED_LAMBDA})
    from keenvision.sicnn.train import FaceIdentityDataset, initialise

    dataset = FaceIdentityDataset(faces, "train")
    module = SICNNModule(config, dataset.num_classes, dataset.identities)
    initialise(module, config)
    before = [p.detach().clone() for p in module.cnn_r.parameters()]
    hr, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))

    # the CNN-H objective alone: the identity term reaches CNN-H through CNN-R's activations, not CNN-R's weights
    module.config = {**config, "pixel_weight": 0.0}
    loss, parts = module.hallucination_loss(module.cnn_h(degrade(hr)), hr)
    assert parts["loss_si"] > 0
    loss.backward()
    assert all(p.grad is None for p in module.cnn_r.parameters())
    assert all(p.requires_grad for p in module.cnn_r.parameters())  # unfrozen again afterwards
    assert sum(p.grad.abs().sum() for p in module.cnn_h.parameters()) > 0
    module.cnn_h.zero_grad(set_to_none=True)
    module.config = config

    # two real batches of the recipe
    probe = _GradientProbe()
    trainer = L.Trainer(max_steps=4, accelerator="cpu", callbacks=[probe], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, torch.utils.data.DataLoader(dataset, batch_size=4, drop_last=True))
    assert trainer.global_step == 4 and len(probe.records) == 2  # two updates per batch: CNN-R, then CNN-H
    for record in probe.records:
        assert all(g is None for g in record["cnn_r_grads"] + record["head_grads"])
        assert all(g is not None for g in record["cnn_h_grads"])
    assert any(not torch.equal(a, b) for a, b in zip(before, probe.records[0]["cnn_r_weights"]))  # CNN-R learned


def test_domain_integrated_phase_trains_and_exports_both_networks(pretrained, faces, tmp_path):
    run_dir = tmp_path / "di"
    cnn_h_path = _train(faces, run_dir, "domain_integrated", max_steps=24, head=FIXED_LAMBDA, val_every=24,
                        init_cnn_h=str(pretrained["cnn_h"]), init_cnn_r=str(pretrained["cnn_r"]))
    rows = _metrics(run_dir)
    total = _series(rows, "train/loss_h")
    assert len(total) == 12 and total[-1] < total[0]
    assert _series(rows, "train/r_lambda") == [12.0] * 12
    assert _series(rows, "val/si_loss")
    # exports: CNN-H loads and reproduces the trained network; CNN-R keeps its head over the 4 train identities
    model = load_cnn_h(str(cnn_h_path))
    assert read_metadata(cnn_h_path)["phase"] == "domain_integrated"
    cnn_r, head = load_cnn_r(run_dir / "cnn_r.safetensors", with_head=True)
    assert head.weight.shape == (4, 64) and head.lambda_min == 12.0
    low = degrade(torch.rand(2, 3, 112, 96) * 2 - 1)
    exported = export_checkpoint(run_dir / "checkpoints" / "last.ckpt", tmp_path / "from_ckpt")
    with torch.no_grad():
        assert torch.allclose(load_cnn_h(str(exported["cnn_h"]))(low), model(low), atol=1e-3)
    assert set(exported) == {"cnn_h", "cnn_r"}


def test_checkpoint_and_resume_continue_the_step_count(faces, tmp_path):
    run_dir = tmp_path / "pixel"
    _train(faces, run_dir, "pixel", max_steps=4, checkpoint_every=2)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    path = _train(faces, run_dir, "pixel", max_steps=6, checkpoint_every=2, resume=True)
    assert read_metadata(path)["global_step"] == "6"
    resumed = _metrics(run_dir, version=1)
    assert len(_series(resumed, "train/loss_sr")) == 2  # steps 5 and 6 only, not a restart
    # a fresh run (no resume) in the same folder starts over
    _train(faces, run_dir, "pixel", max_steps=2)
    assert read_metadata(run_dir / "cnn_h.safetensors")["global_step"] == "2"


def test_loss_gradient_norms_measure_both_terms_on_cnn_h_only(pretrained, faces):
    from keenvision.sicnn.train import loss_gradient_norms

    cnn_h, cnn_r = load_cnn_h(pretrained["cnn_h"]).float(), load_cnn_r(pretrained["cnn_r"]).float()
    cnn_r.train()
    result = loss_gradient_norms(cnn_h, cnn_r, faces, batches=2, batch_size=2)
    assert len(result["batches"]) == 2
    for row in result["batches"]:
        assert row["grad_sr"] > 0 and row["grad_si"] > 0 and 0 <= row["loss_si"] <= 4
    ratios = sorted(row["grad_sr"] / row["grad_si"] for row in result["batches"])
    assert result["median_grad_ratio"] == pytest.approx(ratios[1])
    assert all(p.grad is None for p in cnn_r.parameters()) and cnn_r.training  # frozen only while measuring
    assert all(p.requires_grad for p in cnn_r.parameters())


def test_pair_verification_matches_brute_force_and_scales_to_the_val_split():
    from keenvision.sicnn.evaluate import pair_verification

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(12).repeat_interleave(3)
    embeddings = torch.nn.functional.normalize(torch.randn(12, 8, generator=generator)[labels]
                                               + 0.8 * torch.randn(36, 8, generator=generator), dim=1)
    result = pair_verification(embeddings, labels)
    similarity = embeddings @ embeddings.T
    upper = torch.triu(torch.ones(36, 36, dtype=torch.bool), diagonal=1)
    same, scores = (labels[:, None] == labels[None, :])[upper], similarity[upper]
    brute = max(0.5 * ((scores[same] >= t).float().mean() + (scores[~same] < t).float().mean()).item() for t in scores)
    assert result["verification_accuracy"] == pytest.approx(brute, abs=1e-6)
    assert 0.5 < result["verification_accuracy"] <= 1 and 0.5 < result["verification_auc"] <= 1
    # 600 faces = 180k pairs: a pairs x thresholds matrix needed 32 GB here; this must stay small and fast
    many = torch.nn.functional.normalize(torch.randn(600, 16, generator=generator), dim=1)
    assert 0.5 <= pair_verification(many, torch.arange(120).repeat_interleave(5))["verification_accuracy"] < 0.6


def test_warm_start_takes_the_shipped_cnn_r_by_name_and_checks_its_identities(faces, tmp_path):
    # the shipped CNN-R's head knows its 2,560 training identities: another prepared set is a one-line error
    with pytest.raises(ValueError, match="2560 identities, the training split 4"):
        _train(faces, tmp_path / "warm", "recognition", max_steps=1, init_cnn_r="sicnn-cnn-r-celeba3200",
               head={"kind": "cosface", "options": {"scale": 30.0, "margin": 0.35}})


def test_recognition_verification_applies_the_chosen_threshold(pretrained, faces):
    from keenvision.sicnn.evaluate import recognition_verification
    from keenvision.sicnn.model import load_cnn_r

    # chosen and reported on the same split, the accuracy at the chosen threshold is that split's best accuracy
    result = recognition_verification(load_cnn_r(pretrained["cnn_r"]), faces, choose_split="val", report_split="val")
    assert result["val"]["identities"] == 2 and result["val"]["faces"] >= 4
    assert result["accuracy_at_chosen_threshold"] == pytest.approx(result["val"]["verification_accuracy"], abs=1e-6)
    assert -1 <= result["threshold"] <= 1


def test_recognition_verification_of_hallucinated_faces(pretrained, faces):
    """With a CNN-H, the report split's pairs are also scored with one side hallucinated; a CNN-H that outputs grey
    faces carries no identity: chance accuracy, while the HR pairs keep theirs."""
    from keenvision.sicnn.evaluate import recognition_verification
    from keenvision.sicnn.model import load_cnn_h, load_cnn_r

    class Grey(torch.nn.Module):
        def forward(self, low_resolution):
            return torch.zeros(low_resolution.shape[0], 3, 112, 96)

    cnn_r = load_cnn_r(pretrained["cnn_r"])
    grey = recognition_verification(cnn_r, faces, "val", "val", cnn_h=Grey())
    assert grey["hallucinated"]["accuracy_at_chosen_threshold"] == pytest.approx(0.5)
    trained = recognition_verification(cnn_r, faces, "val", "val", cnn_h=load_cnn_h(pretrained["cnn_h"]))
    assert trained["accuracy_at_chosen_threshold"] == grey["accuracy_at_chosen_threshold"]
    assert 0 <= trained["hallucinated"]["verification_auc"] <= 1


@pytest.mark.parametrize("name", ["recognition", "recognition_3200", "pixel", "pixel_residual", "fixed_si",
                                  "domain_integrated", "fixed_si_residual", "domain_integrated_residual"])
def test_shipped_recipes_load(name):
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "sicnn" / f"{name}.yaml")
    assert config["phase"] in ("recognition", "pixel", "fixed_si", "domain_integrated")
    assert config["cnn_h"]["bicubic_residual"] is (name == "pixel_residual")
    if name.endswith("_residual") and name != "pixel_residual":
        # the SI arms on the residual CNN-H: their base recipe but the residual pixel phase's export, own run dir
        base = load_config(Path(__file__).resolve().parents[2] / "configs" / "sicnn" / f"{config['phase']}.yaml")
        changed = {key for key in config if config[key] != base[key]}
        assert changed == {"run_dir", "init_cnn_h", "alpha"}
        assert config["init_cnn_h"] == "runs/sicnn/pixel_residual/cnn_h.safetensors"
