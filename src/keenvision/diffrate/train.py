"""Training the small CIFAR-10 ViT that DiffRate's embedded default compresses (timm architecture, from scratch).

Run ``python -m keenvision.diffrate.train --config configs/diffrate/cifar10_vit.yaml [--resume]``. Lightning owns the
loop, devices, precision and checkpoints (``<run_dir>/checkpoints/last.ckpt`` every ``checkpoint_every`` steps, so an
interrupted CPU run continues where it stopped); the final weights are written as fp16 safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset

from ..core.recipe import Section, TrainerSettings, recipe_defaults, typed_recipe
from ..core.training import build_trainer, fp16_state, read_checkpoint, resume_checkpoint
from ..core.weights import load_into, open_weights, save_weights
from .data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, load_cifar10  # noqa: F401 - CIFAR10_CLASSES: public here too


@dataclass
class VitArchitecture(Section):
    """The timm VisionTransformer's arguments (no class token changes, no pretrained weights)."""

    img_size: int = 32
    patch_size: int = 4
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    num_classes: int = 10
    drop_path_rate: float = 0.1


@dataclass
class CifarVitRecipe(TrainerSettings):
    """The CIFAR-10 ViT recipe (configs/diffrate/cifar10_vit.yaml), typed: `load_config` checks every key."""

    run_dir: str = "runs/diffrate/cifar10_vit"
    cache_dir: str = "runs/diffrate/cache"
    seed: int = 0
    model: VitArchitecture = field(default_factory=VitArchitecture)
    batch_size: int = 128
    lr: float = 1.0e-3
    weight_decay: float = 0.05
    warmup_steps: int = 500
    label_smoothing: float = 0.1
    max_steps: int = 6000
    checkpoint_every: int = 500
    val_every: int = 2000
    precision: str = "32-true"
    images_per_class: int | None = None
    init_weights: str | None = None  # a safetensors export (or "shipped") to continue from, fresh optimiser
    # Fine-tuning with a fixed DiffRate schedule (the public recipe: lr 2e-5 x batch/512, drop-path 0.1): the model
    # trains patched, with real token removal; the export holds plain ViT weights (patching leaves the state_dict).
    schedule: str | None = None  # a schedule file, published:... or shipped:... (see models.load_schedule)
    lr_reference_batch: int | None = None  # set (e.g. 512): the lr used is lr * batch_size / lr_reference_batch


DEFAULT_CONFIG = recipe_defaults(CifarVitRecipe)


def build_vit(config: dict) -> torch.nn.Module:
    """A timm VisionTransformer with the given architecture (class token, no pretrained weights)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**config)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 32, 32, 3]`` -> float ``[B, 3, 32, 32]`` standardised with the CIFAR-10 statistics."""
    mean = images.new_tensor(CIFAR10_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = images.new_tensor(CIFAR10_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255 - mean) / std


class ArrayDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool):
        self.images, self.labels, self.augment = torch.from_numpy(images), torch.from_numpy(labels), augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.augment:  # the standard CIFAR recipe: 4-pixel padded random crop and horizontal flip
            padded = F.pad(image.permute(2, 0, 1), (4, 4, 4, 4), mode="reflect").permute(1, 2, 0)
            top, left = torch.randint(0, 9, (2,)).tolist()
            image = padded[top:top + 32, left:left + 32]
            if torch.rand(()) < 0.5:
                image = image.flip(1)
        return image, self.labels[index]


class CifarClassifier(L.LightningModule):
    """The ViT with label-smoothed cross-entropy, AdamW, linear warm-up then cosine decay."""

    def __init__(self, config: CifarVitRecipe | dict):
        super().__init__()
        # plain types in the checkpoint: it is read back with weights_only loading
        self.save_hyperparameters({"config": config.as_dict() if isinstance(config, Section) else config})
        self.config = config
        self.model = build_vit(config["model"])
        if config.get("schedule"):
            from .method.patch import patch
            from .models import load_schedule

            patch(self.model, load_schedule(str(config["schedule"]), self.model))

    def learning_rate(self) -> float:
        """The configured lr, scaled by ``batch_size / lr_reference_batch`` when a reference batch is set."""
        reference = self.config.get("lr_reference_batch")
        return self.config["lr"] * (self.config["batch_size"] / reference if reference else 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(normalise(images))

    def training_step(self, batch, _):
        images, labels = batch
        loss = F.cross_entropy(self(images), labels, label_smoothing=self.config["label_smoothing"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        images, labels = batch
        logits = self(images)
        self.log("val/loss", F.cross_entropy(logits, labels), sync_dist=True)
        self.log("val/top1", (logits.argmax(1) == labels).float().mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.config["weight_decay"]},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.learning_rate())
        warmup, total = self.config["warmup_steps"], self.config["max_steps"]

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return float(0.5 * (1 + np.cos(np.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load_config(path: str | Path | None, overrides: dict | None = None) -> CifarVitRecipe:
    """The recipe: `CifarVitRecipe`'s defaults <- the YAML ``path`` <- ``overrides``, every key type-checked."""
    return typed_recipe(CifarVitRecipe, path, overrides)


def train_cifar_vit(config_path: str | Path | None, overrides: dict | None = None) -> Path:
    """Train (or resume) and write ``<run_dir>/cifar10_vit.safetensors`` (fp16); returns its path."""
    config = load_config(config_path, overrides)
    torch.set_num_threads(config.num_threads)
    L.seed_everything(config.seed, workers=True)
    run_dir = Path(config.run_dir)
    subset = config.images_per_class
    train = ArrayDataset(*load_cifar10("train", config.cache_dir, images_per_class=subset), augment=True)
    test = ArrayDataset(*load_cifar10("test", config.cache_dir, images_per_class=subset), augment=False)
    module = CifarClassifier(config)
    if config.init_weights:
        source = "cifar10-vit" if config.init_weights == "shipped" else config.init_weights
        weights = open_weights(source, "diffrate", "DiffRate ViT", "this recipe")
        load_into(module.model, weights.state(), str(weights.path))
    trainer = build_trainer(config, run_dir, config.checkpoint_every, val_check_interval=config.val_every,
                            check_val_every_n_epoch=None, log_every_n_steps=50, num_sanity_val_steps=2)
    resume_from = resume_checkpoint(run_dir) if config.resume else None
    trainer.fit(module, DataLoader(train, batch_size=config.batch_size, shuffle=True, drop_last=True),
                DataLoader(test, batch_size=500), ckpt_path=str(resume_from) if resume_from else None,
                weights_only=True)
    return export_vit(module.model, config.model.as_dict(), run_dir / "cifar10_vit.safetensors", trainer.global_step)


def export_vit(model: torch.nn.Module, architecture: dict, out: str | Path, global_step: int) -> Path:
    """fp16 safetensors of the ViT with its architecture in the metadata (what `models.vit_from_export` reads)."""
    metadata = {"architecture": yaml.safe_dump(architecture), "global_step": str(global_step)}
    save_weights(fp16_state(model), out, metadata)
    return Path(out)


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Export the ViT of a Lightning checkpoint of this recipe (e.g. ``last.ckpt`` of a run still going)."""
    state, hyper, global_step = read_checkpoint(checkpoint)
    model = build_vit(hyper["config"]["model"])
    model.load_state_dict(state)
    return export_vit(model, hyper["config"]["model"], out, global_step)


if __name__ == "__main__":
    from ..core.cli import train_main

    train_main("diffrate")
