"""FarSee-Net training recipe: config handling, the poly schedule, a few real steps on real CamVid images with the
loss falling, checkpoint + resume, export -> load_farsee round trip."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from keenvision.core.training import checkpoint_step, mirrored_run_dir
from keenvision.core.weights import WeightsError
from keenvision.farsee import load_farsee
from keenvision.farsee.train import (
    DEFAULT_CONFIG,
    SegmentationModule,
    export_checkpoint,
    load_config,
    make_datasets,
    train_farsee,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "farsee"

# a tiny but real run: the whole 360x480 frame seen at 0.5 (176x240 crop), 2 frames, batch 2, narrow decoder
TINY_RUN = {"train_images": 2, "val_images": 2, "crop_size": [176, 240], "scale_range": [0.5, 0.5], "batch_size": 2,
            "val_batch_size": 2, "max_steps": 20, "checkpoint_every": 10, "val_every": 20, "log_every": 1,
            "num_threads": 1, "lr": 0.05, "model": {"width": 32}}


def _logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    rows = []
    for metrics in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        rows += [(int(r["step"]), float(r[key])) for r in csv.DictReader(metrics.open()) if r.get(key)]
    return rows


@pytest.mark.parametrize("sr_name, bilinear_name", [("camvid.yaml", "camvid_bilinear.yaml"),
                                                    ("camvid_mobilenet.yaml", "camvid_mobilenet_bilinear.yaml")])
def test_shipped_configs_load_and_differ_only_in_the_head(sr_name, bilinear_name):
    sr, bilinear = load_config(CONFIGS / sr_name), load_config(CONFIGS / bilinear_name)
    assert sr["model"]["head"] == "sr" and bilinear["model"]["head"] == "bilinear"
    assert sr["model"]["pretrained"] is False and sr["model"]["input_scale"] == 0.5
    different = {k for k in sr if sr[k] != bilinear[k]}
    assert different == {"model", "run_dir", "export_name"}
    assert {k for k in sr["model"] if sr["model"][k] != bilinear["model"][k]} == {"head"}
    # every key of the recipe is written out in the YAML, so the file documents the whole run
    for name in (sr_name, bilinear_name):
        assert set(yaml.safe_load((CONFIGS / name).read_text())) == set(DEFAULT_CONFIG) - {"resume"}


@pytest.mark.parametrize("name, weights", [("camvid_mobilenetv2", "mobilenetv2"),
                                           ("camvid_lite0", "efficientnet-lite0")])
def test_train_val_recipes_are_their_held_out_drive_recipes_on_all_frames(name, weights):
    """farsee-camvid's recipe (and the previous release's) differs from the one measured on the held-out drive
    only in what it trains on."""
    final, holdout = load_config(CONFIGS / f"{name}.yaml"), load_config(CONFIGS / f"{name}_holdout.yaml")
    assert {k for k in final if final[k] != holdout[k]} == {"run_dir", "export_name", "holdout_drive", "val_split",
                                                            "val_every"}
    assert holdout["holdout_drive"] == "0006R0" and final["holdout_drive"] is None
    assert final["train_split"] == "train+val" and final["model"]["backbone_weights"] == weights


def test_the_registry_names_the_recipe_that_exports_farsee_camvid():
    from keenvision.core.registry import shipped_models

    entry = next(model for model in shipped_models("farsee") if model.name == "farsee-camvid")
    assert load_config(CONFIGS.parent.parent / entry.recipe)["export_name"] == entry.file == "farsee_camvid.safetensors"


def test_bilinear_arm_differs_from_the_pretrained_recipe_only_in_its_head():
    base = load_config(CONFIGS / "camvid_mobilenetv2_holdout.yaml")
    arm = load_config(CONFIGS / "camvid_mobilenetv2_holdout_bilinear.yaml")
    assert {k for k in base if base[k] != arm[k]} == {"model", "run_dir", "export_name"}
    assert {k for k in base["model"] if base["model"][k] != arm["model"][k]} == {"head"}
    assert arm["model"]["head"] == "bilinear" and base["model"]["head"] == "sr"


def test_sr3_arm_builds_on_the_shipped_recipe_and_changes_only_the_classifier_kernel():
    base, arm = load_config(CONFIGS / "camvid_mobilenet.yaml"), load_config(CONFIGS / "camvid_mobilenet_sr3.yaml")
    assert {k for k in base if base[k] != arm[k]} == {"model", "run_dir", "export_name"}
    assert {k for k in base["model"] if base["model"][k] != arm["model"][k]} == {"classifier_kernel"}
    assert arm["model"]["classifier_kernel"] == 3 and base["model"]["classifier_kernel"] == 1


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown config keys \['learning_rate'\]"):
        load_config(None, {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="model.depth"):
        load_config(None, {"model": {"depth": 3}})
    with pytest.raises(ValueError, match="recipe key loss: expected 'weighted_ce' or 'ohem', got 'dice'"):
        load_config(None, {"loss": "dice"})
    with pytest.raises(ValueError, match="recipe key lr: expected float"):
        load_config(None, {"lr": "fast"})
    with pytest.raises(ValueError, match="unknown backbone_weights 'imagenet'.*efficientnet-lite0, mobilenetv2"):
        load_config(None, {"model": {"backbone_weights": "imagenet"}})
    assert load_config(None, {"max_steps": None})["max_steps"] == DEFAULT_CONFIG["max_steps"]
    assert load_config(None, {"model": {"head": "bilinear"}})["model"]["backbone"] == "resnet18"


def test_poly_learning_rate():
    config = load_config(None, {"max_steps": 10, "lr": 0.1, "model": {"width": 16}})
    module = SegmentationModule(config, 3, ["a", "b", "c"], 255)
    schedule = module.configure_optimizers()
    optimizer, scheduler = schedule["optimizer"], schedule["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.9
    assert optimizer.param_groups[0]["weight_decay"] == 5e-4 and optimizer.param_groups[1]["weight_decay"] == 0
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1 * (1 - step / 10) ** 0.9 for step in range(10)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    if not (data_dir / "camvid").is_dir():
        pytest.skip("camvid not found")
    run_dir = tmp_path_factory.mktemp("farsee_run")
    export = train_farsee(None, {**TINY_RUN, "run_dir": str(run_dir)})
    return run_dir, export


def test_real_training_steps_lower_the_loss(trained):
    run_dir, export = trained
    losses = [loss for _, loss in _logged(run_dir, "train/loss")]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3, losses
    assert 0 <= _logged(run_dir, "val/miou")[-1][1] <= 1
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and export.is_file()


def test_export_round_trip(trained, data_dir):
    run_dir, export = trained
    model = load_farsee(export)
    assert model.class_names[3] == "Road" and len(model.class_names) == 11 and model.ignore_index == 11
    assert model.config["width"] == 32 and not model.training
    # the fp16 export behaves like the fp32 checkpoint
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    reference = load_farsee(export_checkpoint(run_dir / "checkpoints" / "last.ckpt", run_dir / "from_ckpt.safetensors"))
    reference.load_state_dict({k[6:]: v for k, v in state["state_dict"].items() if k.startswith("model.")})
    from keenvision.farsee import CamVidDataset

    image = CamVidDataset(data_dir / "camvid", "val")[0][0][None]
    with torch.no_grad():
        exported, full = model(image), reference(image)
    assert exported.shape == (1, 11, 360, 480)
    assert (exported.argmax(1) == full.argmax(1)).float().mean() > 0.99
    assert (exported - full).abs().max() < 0.05 * full.abs().max()


def test_resume_continues_from_the_checkpoint(trained):
    run_dir, _ = trained
    export = train_farsee(None, {**TINY_RUN, "run_dir": str(run_dir), "max_steps": 24, "resume": True})
    steps = [step for step, _ in _logged(run_dir, "train/loss")]
    assert steps[20:] == [20, 21, 22, 23]  # the second run starts at step 20, not 0
    from safetensors import safe_open

    with safe_open(str(export), "pt") as handle:
        assert handle.metadata()["global_step"] == "24"


def test_holdout_recipe_trains_on_the_other_drives_and_validates_on_the_held_out_one(data_dir):
    if not (data_dir / "camvid").is_dir():
        pytest.skip("camvid not found")
    config = load_config(CONFIGS / "camvid_holdout.yaml")
    train, val = make_datasets(config)
    assert set(val.drives()) == {"0006R0"} and len(val) == 101
    assert set(train.drives()) == {"0001TP", "0016E5"} and len(train) == 367
    augmented = load_config(CONFIGS / "camvid_holdout_augment.yaml")
    assert {k for k in config if config[k] != augmented[k]} == {"run_dir", "export_name", "scale_range",
                                                                "colour_jitter"}
    bilinear = load_config(CONFIGS / "camvid_holdout_augment_bilinear.yaml")
    assert {k for k in augmented if augmented[k] != bilinear[k]} == {"run_dir", "export_name", "model"}
    assert {k for k in bilinear["model"] if bilinear["model"][k] != augmented["model"][k]} == {"head"}
    with pytest.raises(ValueError, match="drive 'XYZ' has no frame"):
        make_datasets(load_config(CONFIGS / "camvid_holdout.yaml", {"holdout_drive": "XYZ"}))


def test_checkpoints_are_mirrored_under_keen_runs_and_resume_from_the_newer(trained, runs_outside_home):
    run_dir, _ = trained
    mirror = mirrored_run_dir(run_dir) / "checkpoints" / "last.ckpt"
    assert mirror.is_relative_to(runs_outside_home) and mirror.is_file()
    assert checkpoint_step(mirror) == checkpoint_step(run_dir / "checkpoints" / "last.ckpt") >= 20
    assert not list((run_dir / "checkpoints").glob("*.partial"))  # saves are renamed into place
    assert not list(run_dir.glob("logs/*/checkpoints"))  # and Lightning adds no checkpoint callback of its own


def test_warm_start_continues_the_step_count_and_refuses_another_architecture(trained, tmp_path):
    _, export = trained  # 20 steps (24 after the resume test) of TINY_RUN
    from safetensors import safe_open

    with safe_open(str(export), "pt") as handle:
        steps = int(handle.metadata()["global_step"])
    warm = train_farsee(None, {**TINY_RUN, "run_dir": str(tmp_path / "warm"), "init_weights": str(export),
                               "max_steps": steps + 3})
    logged = [step for step, _ in _logged(tmp_path / "warm", "train/loss")]
    assert len(logged) == 3  # only the steps the shipped weights had not taken yet
    with safe_open(str(warm), "pt") as handle:
        assert handle.metadata()["global_step"] == str(steps + 3)
    # resuming the warm-started run keeps its place: 2 more steps to reach steps + 5, not steps + 5 more
    resumed = train_farsee(None, {**TINY_RUN, "run_dir": str(tmp_path / "warm"), "init_weights": str(export),
                                  "max_steps": steps + 5, "resume": True})
    assert len(_logged(tmp_path / "warm", "train/loss")) == 5
    with safe_open(str(resumed), "pt") as handle:
        assert handle.metadata()["global_step"] == str(steps + 5)
    with pytest.raises(WeightsError, match="does not match the recipe's architecture: width 32 .* vs 16"):
        train_farsee(None, {**TINY_RUN, "run_dir": str(tmp_path / "other"), "init_weights": str(export),
                            "model": {"width": 16}})


@pytest.mark.parametrize("name, reference", [("camvid_mobilenetv2_holdout_0001TP", "camvid_mobilenetv2_holdout"),
                                             ("camvid_mobilenetv2_holdout_0001TP_bilinear",
                                              "camvid_mobilenetv2_holdout_bilinear")])
def test_untouched_drive_recipes_differ_only_in_the_drive_they_hold_out(name, reference):
    """Drive 0001TP, on which no choice was made, scores the shipped recipe (and its bilinear baseline) as is."""
    arm, base = load_config(CONFIGS / f"{name}.yaml"), load_config(CONFIGS / f"{reference}.yaml")
    assert {k for k in base if base[k] != arm[k]} == {"holdout_drive", "run_dir", "export_name"}
    assert base["holdout_drive"] == "0006R0" and arm["holdout_drive"] == "0001TP"
