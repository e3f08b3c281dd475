"""Training FarSee-Net (CamVid by default, Cityscapes supported) with Lightning.

Run ``python -m keenvision.farsee.train --config configs/farsee/camvid.yaml [--resume] [--max-steps N]`` (or
``keen farsee train --config ...``). Lightning owns the loop, devices, precision, DDP and checkpoints
(``<run_dir>/checkpoints/last.ckpt`` every ``checkpoint_every`` steps, so an interrupted CPU run continues where it
stopped with ``--resume``); validation mIoU (torchmetrics, ignore index honoured) every ``val_every`` steps; the
final weights are written as fp16 safetensors whose metadata `keenvision.farsee.load_farsee` reads.
``--export CKPT OUT`` only exports the model of a checkpoint (e.g. ``last.ckpt`` of a run still going).

The paper's loss and schedule are not known (docs/farsee.md); the recipe is the usual one of real-time
segmentation: poly learning rate (power 0.9), SGD with momentum 0.9 and weight decay 5e-4 (AdamW selectable),
ENet-weighted cross entropy (OHEM selectable; see `losses`), random scale / crop / flip.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassJaccardIndex

from ..core.data import data_root
from ..core.recipe import Section, TrainerSettings, recipe_defaults, typed_recipe
from ..core.training import build_trainer, checkpoint_entry, fp16_state, read_checkpoint, resume_checkpoint
from ..core.weights import WeightsError, open_weights, save_weights
from .backbones import BACKBONE_WEIGHTS, backbone_weights_source
from .data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CamVidDataset,
    CityscapesDataset,
    Normalise,
    TrainAugmentation,
    class_frequencies,
)
from .losses import enet_class_weights, ohem_cross_entropy, weighted_cross_entropy
from .model import EXPORT_FORMAT, FarSeeNet, build_farsee, export_metadata, load_farsee


@dataclass
class FarSeeArchitecture(Section):
    """`FarSeeNet`'s arguments (`build_farsee`); ``backbone_weights`` and ``pretrained`` only initialise the backbone
    for training (an export holds the trained network)."""

    backbone: str = "resnet18"
    head: Literal["sr", "bilinear"] = "sr"
    input_scale: float = 0.5
    pretrained: bool = False  # timm's ImageNet weights from the Hugging Face hub (network)
    width: int = 256
    low_level_channels: int = 48
    high_dilations: list[int] = field(default_factory=lambda: [6, 12, 18])
    low_dilations: list[int] = field(default_factory=lambda: [6, 12])
    full_resolution: bool = False
    classifier_kernel: int = 1
    backbone_weights: str | None = None  # a `backbones.BACKBONE_WEIGHTS` name or a .pth/.pt/.safetensors file

    def __post_init__(self):
        name = self.backbone_weights
        if name and not str(name).endswith((".pth", ".pt", ".safetensors")):
            backbone_weights_source(name)  # one line listing the known names


@dataclass
class FarSeeRecipe(TrainerSettings):
    """A FarSee-Net training recipe (configs/farsee/*.yaml), typed: `load_config` checks every key."""

    run_dir: str = "runs/farsee/camvid"
    seed: int = 0
    dataset: Literal["camvid", "cityscapes"] = "camvid"
    data_root: str | None = None  # None: <KEEN_DATA>/<dataset>
    train_split: str = "train"  # CamVid: several folders joined by "+" ("train+val")
    val_split: str = "val"
    # a CamVid drive (0001TP, 0006R0, 0016E5, ...): left out of training, and the only one validated on
    holdout_drive: str | None = None
    train_images: int | None = None  # use only the first so many images (quick runs and tests)
    val_images: int | None = None
    model: FarSeeArchitecture = field(default_factory=FarSeeArchitecture)
    # augmentation (TrainAugmentation): crop (height, width) of the full-resolution image, scale range, flip
    crop_size: list[int] = field(default_factory=lambda: [320, 448])
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.5])
    flip: bool = True
    colour_jitter: float = 0.0
    batch_size: int = 8
    val_batch_size: int = 4
    num_workers: int = 0
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: momentum, nesterov off
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    poly_power: float = 0.9
    warmup_steps: int = 0
    backbone_lr_factor: float = 1.0  # the backbone's lr relative to lr (0.1 is usual for a pretrained one)
    loss: Literal["weighted_ce", "ohem"] = "weighted_ce"
    class_weights: Literal["enet", "none"] | None = "enet"  # enet: 1/ln(1.02 + p_c) from the training labels
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 100_000
    max_steps: int = 6000
    log_every: int = 50
    # warm start (when there is no checkpoint to resume): a shipped name ("farsee-camvid") or an export's path; its
    # weights are loaded and the step count (its global_step) continues, so each sitting adds to the last one
    init_weights: str | None = None
    export_name: str = "farsee_camvid.safetensors"  # written into run_dir at the end


DEFAULT_CONFIG = recipe_defaults(FarSeeRecipe)
DEFAULT_MODEL = DEFAULT_CONFIG["model"]


def load_config(path: str | Path | None, overrides: dict | None = None) -> FarSeeRecipe:
    """The recipe: `FarSeeRecipe`'s defaults <- the YAML ``path`` (and its ``base`` recipes) <- ``overrides``
    (None values skipped, ``model`` merged key by key or by dotted keys); every key type-checked, an unknown key or
    a wrong value is a one-line ValueError naming it."""
    return typed_recipe(FarSeeRecipe, path, overrides)


def make_datasets(config: dict):
    """(train, val) datasets of the config, train with `TrainAugmentation`, val full images normalised; pairs
    that fail their checks (unreadable, size mismatch, labels out of range) are dropped with a message each."""
    root = Path(config["data_root"] or data_root() / config["dataset"])
    dataset_class = CamVidDataset if config["dataset"] == "camvid" else CityscapesDataset
    mean, std = input_normalisation(config["model"])
    val = dataset_class(root, config["val_split"], Normalise(mean, std))
    augment = TrainAugmentation(config["crop_size"], val.ignore_index, config["scale_range"],
                                0.5 if config["flip"] else 0.0, mean, std, colour_jitter=config["colour_jitter"])
    train = dataset_class(root, config["train_split"], augment)
    if config["holdout_drive"]:
        train.select_drive(config["holdout_drive"], keep=False)
        val.select_drive(config["holdout_drive"], keep=True)
    for dataset, count in ((train, config["train_images"]), (val, config["val_images"])):
        if count:
            dataset.pairs = dataset.pairs[:count]  # the first `count` pairs (tests, quick checks)
        for message in dataset.drop_bad_pairs():  # checked once here, not at the step that first draws them
            print(f"farsee train: skipped {message}", file=sys.stderr)
    return train, val


def input_normalisation(model_config: dict) -> tuple[tuple, tuple]:
    """(mean, std) the recipe's backbone expects: those of its ``backbone_weights``, else ImageNet's."""
    name = model_config.get("backbone_weights")
    if name and name in BACKBONE_WEIGHTS:
        return BACKBONE_WEIGHTS[name].mean, BACKBONE_WEIGHTS[name].std
    return IMAGENET_MEAN, IMAGENET_STD


class SegmentationModule(L.LightningModule):
    """FarSee-Net with its loss, optimiser and poly schedule; validation mIoU with torchmetrics.

    ``class_weights`` (``[K]``, or None) is a buffer, so it follows the module's device and lives in checkpoints.
    """

    def __init__(self, config: dict, num_classes: int, class_names: list[str], ignore_index: int,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        plain = config.as_dict() if isinstance(config, Section) else config  # checkpoints hold plain data
        self.save_hyperparameters({"config": plain, "num_classes": num_classes, "class_names": list(class_names),
                                   "ignore_index": ignore_index})
        self.config, self.class_names, self.ignore_index = config, list(class_names), int(ignore_index)
        self.model = build_farsee(num_classes=num_classes, **config["model"])
        weights = torch.ones(num_classes) if class_weights is None else torch.as_tensor(class_weights).float()
        self.register_buffer("class_weights", weights)
        self.use_class_weights = class_weights is not None
        # as `keen farsee eval` (evaluate.py): a class absent from the labels and predictions of the whole split has
        # no IoU (NaN) and is left out of the mean, not counted as 0
        self.val_iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index,
                                              zero_division=math.nan)
        self.last_val_iou: list[float] | None = None
        self.start_step = 0  # steps already taken by warm-start weights: the schedule continues from there

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = self.class_weights if self.use_class_weights else None
        if self.config["loss"] == "ohem":
            return ohem_cross_entropy(logits, labels, self.ignore_index, self.config["ohem_threshold"],
                                      self.config["ohem_min_kept"], weights)
        return weighted_cross_entropy(logits, labels, self.ignore_index, weights)

    def training_step(self, batch, _):
        images, labels = batch
        loss = self.loss(self(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[-1]["lr"])  # the head's
        return loss

    def validation_step(self, batch, _):
        images, labels = batch
        logits = self(images)
        self.log("val/loss", self.loss(logits, labels), sync_dist=True)
        self.val_iou.update(logits.argmax(1), labels)

    def on_validation_epoch_end(self):
        per_class = self.val_iou.compute()  # synchronised across processes under DDP
        self.val_iou.reset()
        self.last_val_iou = [float(v) for v in per_class]
        self.log("val/miou", per_class.nanmean(), prog_bar=True, sync_dist=True)  # equal on all ranks
        for name, value in zip(self.class_names, per_class):
            if not torch.isnan(value):
                self.log(f"val/iou/{name}", value, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["start_step"] = self.start_step  # a resumed warm start keeps its place in the schedule

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.start_step = int(checkpoint.get("start_step", 0))

    def configure_optimizers(self):
        # conv weights decayed, BN and biases not; a pretrained backbone learns at backbone_lr_factor x lr
        groups = []
        backbone = set(self.model.backbone.parameters())
        for part, factor in ((backbone, self.config["backbone_lr_factor"]), (None, 1.0)):
            params = [p for p in self.model.parameters() if (p in backbone) == (part is not None)]
            groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": self.config["weight_decay"],
                        "lr": self.config["lr"] * factor},
                       {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0,
                        "lr": self.config["lr"] * factor}]
        if self.config["optimizer"] == "sgd":
            optimizer = torch.optim.SGD(groups, lr=self.config["lr"], momentum=self.config["momentum"])
        else:
            optimizer = torch.optim.AdamW(groups, lr=self.config["lr"])
        warmup, total, power = self.config["warmup_steps"], self.config["max_steps"], self.config["poly_power"]

        def factor(step: int) -> float:
            """Linear warm-up, then poly decay ``(1 - step / max_steps) ^ power`` (step counted from the warm
            start's own steps)."""
            step += self.start_step
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, 1 - step / max(1, total)) ** power

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def train_farsee(config_path: str | Path | None, overrides: dict | None = None) -> Path:
    """Train (or resume) FarSee-Net and write ``<run_dir>/<export_name>`` (fp16 safetensors); returns its path."""
    config = load_config(config_path, overrides)
    torch.set_num_threads(config["num_threads"])
    L.seed_everything(config["seed"], workers=True)
    run_dir = Path(config["run_dir"])
    train, val = make_datasets(config)
    class_weights = None
    if config["class_weights"] == "enet":
        class_weights = enet_class_weights(class_frequencies(train))
    module = SegmentationModule(config, train.num_classes, train.class_names, train.ignore_index, class_weights)
    resume_from = resume_checkpoint(run_dir) if config["resume"] else None
    if resume_from is not None:  # a resumed warm start: its step budget is known before the Trainer is built
        module.start_step = int(checkpoint_entry(resume_from, "start_step", 0))
    elif config["init_weights"]:
        module.start_step = warm_start(module.model, config["init_weights"])
    trainer = build_trainer(config, run_dir, config["checkpoint_every"],
                            max_steps=config["max_steps"] - module.start_step,  # a warm start's steps are taken
                            val_check_interval=config["val_every"], check_val_every_n_epoch=None,
                            log_every_n_steps=config["log_every"])
    workers = config["num_workers"]
    loader_options = {"num_workers": workers, "persistent_workers": workers > 0}
    train_loader = DataLoader(train, batch_size=config["batch_size"], shuffle=True, drop_last=True, **loader_options)
    val_loader = DataLoader(val, batch_size=config["val_batch_size"], **loader_options)
    if resume_from is not None:
        print(f"farsee train: resuming from {resume_from}", file=sys.stderr)
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(resume_from) if resume_from else None,
                weights_only=True)
    if not trainer.is_global_zero:
        return run_dir / config["export_name"]
    extra = {"global_step": str(trainer.global_step + module.start_step), "dataset": config["dataset"],
             "train_split": config["train_split"], "holdout_drive": str(config["holdout_drive"] or "")}
    if module.last_val_iou is not None:
        present = {name: value for name, value in zip(module.class_names, module.last_val_iou)
                   if not math.isnan(value)}
        extra["val_iou"] = json.dumps(present)
        extra["val_miou"] = f"{sum(present.values()) / max(1, len(present)):.6f}"
    return export_farsee(module.model, module.class_names, module.ignore_index, run_dir / config["export_name"], extra)


def warm_start(model: FarSeeNet, weights: str | Path) -> int:
    """Load ``weights`` (a shipped name or an export's path) into ``model`` and return the steps they were trained
    for (their ``global_step``), so a new sitting continues the schedule. WeightsError, one line, when the file's
    architecture is not the recipe's."""
    resolved = open_weights(weights, "farsee", "FarSee-Net", "`keen farsee train --config ...`",
                            format=EXPORT_FORMAT, required=("architecture",))  # checksum once
    path = resolved.path
    source = load_farsee(path)
    differing = sorted(key for key in set(source.config) | set(model.config)
                       if key != "pretrained" and source.config.get(key) != model.config.get(key))
    if differing:
        raise WeightsError(f"--init-weights {weights} does not match the recipe's architecture: " + ", ".join(
            f"{key} {source.config.get(key)!r} (weights) vs {model.config.get(key)!r} (recipe)" for key in differing))
    model.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
    return int(resolved.metadata.get("global_step", 0))


def export_farsee(model: FarSeeNet, class_names, ignore_index: int | None, out: str | Path,
                  extra: dict[str, str] | None = None) -> Path:
    """fp16 safetensors of ``model`` with the metadata `load_farsee` reads (architecture, classes, ignore index,
    normalisation) plus ``extra`` strings."""
    metadata = export_metadata(model, class_names, ignore_index, model.mean, model.std, extra)
    save_weights(fp16_state(model), out, metadata)
    return Path(out)


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Export the model of a Lightning checkpoint of this recipe."""
    state, hyper, global_step = read_checkpoint(checkpoint)
    # the checkpoint holds every weight: never download pretrained ones to overwrite them
    model = build_farsee(num_classes=hyper["num_classes"], **{**hyper["config"]["model"], "pretrained": False,
                                                              "backbone_weights": None})
    model.mean, model.std = input_normalisation(hyper["config"]["model"])
    model.load_state_dict(state)
    extra = {"global_step": str(global_step), "dataset": hyper["config"]["dataset"]}
    return export_farsee(model, hyper["class_names"], hyper["ignore_index"], out, extra)


if __name__ == "__main__":
    from ..core.cli import train_main

    train_main("farsee")
