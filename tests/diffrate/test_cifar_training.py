import numpy as np
import torch
import torch.nn.functional as F

from keenvision.core.weights import load_weights
from keenvision.diffrate.train import (
    CIFAR10_CLASSES,
    CifarClassifier,
    build_vit,
    load_cifar10,
    load_config,
    train_cifar_vit,
)

TINY = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "num_classes": 10,
    "drop_path_rate": 0.0,
}


def _loss_before_and_after_steps(module, batch, steps):
    """Cross-entropy on `batch` before and after `steps` optimiser steps of the module's own recipe on it."""
    optimizer = module.configure_optimizers()["optimizer"]
    with torch.no_grad():
        before = F.cross_entropy(module(batch[0]), batch[1]).item()
    for _ in range(steps):
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        optimizer.step()
    with torch.no_grad():
        after = F.cross_entropy(module(batch[0]), batch[1]).item()
    return before, after


def test_cifar10_reader_decodes_real_images(data_dir, tmp_path):
    images, labels = load_cifar10("test", tmp_path, root=data_dir, images_per_class=3)
    assert images.shape == (30, 32, 32, 3) and images.dtype == np.uint8
    assert sorted(np.bincount(labels).tolist()) == [3] * len(CIFAR10_CLASSES)
    assert images.std() > 20  # real photos, not blank decodes
    again, _ = load_cifar10("test", tmp_path, root=data_dir, images_per_class=3)  # from the cache
    assert np.array_equal(images, again)


def test_a_few_steps_lower_the_loss_on_real_images(data_dir, tmp_path):
    torch.manual_seed(0)
    images, labels = load_cifar10("train", tmp_path, root=data_dir, images_per_class=8)
    config = load_config(None, {"lr": 3e-3, "warmup_steps": 1, "max_steps": 40})
    config["model"] = TINY
    module = CifarClassifier(config)
    batch = torch.from_numpy(images), torch.from_numpy(labels)
    before, after = _loss_before_and_after_steps(module, batch, steps=25)
    assert after < before * 0.7


def test_training_writes_fp16_weights_and_resumes(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KEEN_DATA", str(data_dir))
    overrides = {
        "run_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "cache"),
        "images_per_class": 4,
        "batch_size": 8,
        "max_steps": 4,
        "checkpoint_every": 2,
        "val_every": 4,
        "warmup_steps": 1,
    }
    config = tmp_path / "tiny.yaml"
    config.write_text("model: " + str(TINY).replace("'", "") + "\n")
    first = train_cifar_vit(config, overrides)
    weights = load_weights(first)
    assert all(v.dtype == torch.float16 for v in weights.values())
    model = build_vit(TINY)
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    resumed = train_cifar_vit(config, {**overrides, "max_steps": 6, "resume": True})
    from safetensors import safe_open

    with safe_open(str(resumed), "pt") as handle:
        assert handle.metadata()["global_step"] == "6"


def test_checkpoint_export_matches_the_final_export(data_dir, tmp_path, monkeypatch):
    from keenvision.diffrate.models import vit_from_export
    from keenvision.diffrate.train import export_checkpoint

    monkeypatch.setenv("KEEN_DATA", str(data_dir))
    overrides = {"run_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"), "images_per_class": 2,
                 "batch_size": 4, "max_steps": 2, "checkpoint_every": 2, "val_every": 2, "warmup_steps": 1}
    config = tmp_path / "tiny.yaml"
    config.write_text("model: " + str(TINY).replace("'", "") + "\n")
    final = load_weights(train_cifar_vit(config, overrides))
    exported = export_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "exported.safetensors")
    assert all(torch.equal(final[k], v) for k, v in load_weights(exported).items())
    assert vit_from_export(exported).pretrained_cfg["input_size"] == (3, 32, 32)


def test_shipped_cifar10_vit_classifies_real_test_images(data_dir):
    from keenvision.diffrate.data import ImageClassificationData, Preprocessing
    from keenvision.diffrate.models import load_model

    model = load_model("cifar10-vit")
    data = ImageClassificationData(data_dir / "cifar10", "test", Preprocessing.for_model(model), limit_per_class=20)
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor([data[i][1] for i in range(len(data))])
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert data.classes == list(CIFAR10_CLASSES)
    assert accuracy > 0.6  # chance is 0.10; the shipped weights reach 0.724 on the whole test set


def test_training_can_start_from_an_export(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KEEN_DATA", str(data_dir))
    overrides = {"cache_dir": str(tmp_path / "cache"), "images_per_class": 2, "batch_size": 4, "max_steps": 1,
                 "checkpoint_every": 1, "val_every": 1, "warmup_steps": 1}
    config = tmp_path / "tiny.yaml"
    config.write_text("model: " + str(TINY).replace("'", "") + "\n")
    first = train_cifar_vit(config, {**overrides, "run_dir": str(tmp_path / "a")})
    # lr 0: the one step changes nothing, so the continued run must export exactly the weights it started from
    second = train_cifar_vit(config, {**overrides, "run_dir": str(tmp_path / "b"), "init_weights": str(first),
                                      "lr": 0.0})
    start, end = load_weights(first), load_weights(second)
    assert all(torch.equal(start[k], end[k]) for k in start)


def test_fine_tuning_trains_the_patched_model_and_exports_plain_weights(data_dir, tmp_path, monkeypatch):
    from keenvision.diffrate.method.patch import is_patched
    from keenvision.diffrate.method.schedule import Schedule

    monkeypatch.setenv("KEEN_DATA", str(data_dir))
    schedule_file = tmp_path / "schedule.json"
    Schedule((17, 17), (17, 9)).save(schedule_file)  # 4x4 patches of 8 px + class token; block 1 merges 8 tokens
    config = load_config(None, {"schedule": str(schedule_file), "lr": 2e-5, "lr_reference_batch": 512,
                                "batch_size": 128, "warmup_steps": 1})
    config["model"] = TINY
    module = CifarClassifier(config)
    assert is_patched(module.model) and module.learning_rate() == 2e-5 * 128 / 512
    images, labels = load_cifar10("train", tmp_path, root=data_dir, images_per_class=8)
    batch = torch.from_numpy(images), torch.from_numpy(labels)
    config["lr"], config["lr_reference_batch"] = 3e-3, None  # a few steps must be visible
    before, after = _loss_before_and_after_steps(module, batch, steps=25)
    assert after < before * 0.7
    # the fine-tuned weights load into a plain (unpatched) ViT of the same architecture
    plain = build_vit(TINY)
    plain.load_state_dict(module.model.state_dict())
    assert not is_patched(plain)


def test_fine_tuning_recipe_is_the_public_one():
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "diffrate" / "cifar10_vit_finetune.yaml")
    assert config["schedule"] == "shipped:cifar10-vit/0.11" and config["init_weights"] == "shipped"
    assert config["lr"] * config["batch_size"] / config["lr_reference_batch"] == 2e-5 * 128 / 512
    assert config["model"]["drop_path_rate"] == 0.1
