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
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassJaccardIndex

from ..core.data import data_root
from ..core.recipe import load_recipe
from ..core.training import build_trainer, checkpoint_entry, fp16_state, read_checkpoint, resume_checkpoint
from ..core.weights import WeightsError, read_metadata, resolve_weights, save_weights
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
from .model import SHIPPED, FarSeeNet, build_farsee, export_metadata, load_farsee

DEFAULT_MODEL = {"backbone": "resnet18", "head": "sr", "input_scale": 0.5, "pretrained": False, "width": 256,
                 "low_level_channels": 48, "high_dilations": [6, 12, 18], "low_dilations": [6, 12],
                 "full_resolution": False, "classifier_kernel": 1,
                 "backbone_weights": None}

DEFAULT_CONFIG = {
    "run_dir": "runs/farsee/camvid", "seed": 0,
    "dataset": "camvid",  # camvid (CamVidDataset layout) or cityscapes
    "data_root": None,  # None: <KEEN_DATA>/<dataset>
    "train_split": "train", "val_split": "val",  # CamVid: several folders joined by "+" ("train+val")
    # a CamVid drive (0001TP, 0006R0, 0016E5, ...): left out of training, and the only one validated on
    "holdout_drive": None,
    "train_images": None, "val_images": None,  # use only the first so many images (quick runs and tests)
    "model": DEFAULT_MODEL,
    # augmentation (TrainAugmentation): crop (height, width) of the full-resolution image, scale range, flip
    "crop_size": [320, 448], "scale_range": [0.75, 1.5], "flip": True, "colour_jitter": 0.0,
    "batch_size": 8, "val_batch_size": 4, "num_workers": 0,
    "optimizer": "sgd",  # sgd (momentum, nesterov off) or adamw
    "lr": 0.01, "momentum": 0.9, "weight_decay": 5.0e-4, "poly_power": 0.9, "warmup_steps": 0,
    "backbone_lr_factor": 1.0,  # the backbone's lr relative to lr (0.1 is usual for a pretrained one)
    "loss": "weighted_ce",  # weighted_ce or ohem
    "class_weights": "enet",  # enet (1/ln(1.02 + p_c) from the training labels) or none
    "ohem_threshold": 0.7, "ohem_min_kept": 100_000,
    "max_steps": 6000, "checkpoint_every": 200, "val_every": 1000, "log_every": 50,
    "num_threads": 2, "precision": "auto",  # auto: 16-mixed on a GPU, 32-true on the CPU
    "accelerator": "auto", "devices": 1, "num_nodes": 1, "resume": False,
    # warm start (when there is no checkpoint to resume): a shipped name ("farsee-camvid") or an export's path; its
    # weights are loaded and the step count (its global_step) continues, so each sitting adds to the last one
    "init_weights": None,
    "export_name": "farsee_camvid.safetensors",  # written into run_dir at the end
}


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict:
    """Defaults <- YAML file (and its ``base`` recipes) <- ``overrides`` (`core.recipe.load_recipe`: None values
    skipped, ``model`` merged key by key or by dotted keys). Unknown keys and bad values raise ValueError."""
    config = load_recipe(path, DEFAULT_CONFIG, overrides)
    if config["dataset"] not in ("camvid", "cityscapes"):
        raise ValueError(f"dataset must be camvid or cityscapes, got {config['dataset']!r}")
    if config["loss"] not in ("weighted_ce", "ohem"):
        raise ValueError(f"loss must be weighted_ce or ohem, got {config['loss']!r}")
    if config["optimizer"] not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be sgd or adamw, got {config['optimizer']!r}")
    name = config["model"]["backbone_weights"]
    if name and not str(name).endswith((".pth", ".pt", ".safetensors")):
        backbone_weights_source(name)  # one line listing the known names
    if config["class_weights"] not in ("enet", "none", None):
        raise ValueError(f"class_weights must be enet or none, got {config['class_weights']!r}")
    return config


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
        self.save_hyperparameters({"config": config, "num_classes": num_classes, "class_names": list(class_names),
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
    path = resolve_weights(weights, SHIPPED, "FarSee-Net", "`keen farsee train --config ...`")  # checksum once
    source = load_farsee(path)
    differing = sorted(key for key in set(source.config) | set(model.config)
                       if key != "pretrained" and source.config.get(key) != model.config.get(key))
    if differing:
        raise WeightsError(f"--init-weights {weights} does not match the recipe's architecture: " + ", ".join(
            f"{key} {source.config.get(key)!r} (weights) vs {model.config.get(key)!r} (recipe)" for key in differing))
    model.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
    return int(read_metadata(path).get("global_step", 0))


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


def main() -> None:
    from ..core.cli import train_module_main

    train_module_main(__doc__.splitlines()[0], "configs/farsee/camvid_mobilenet.yaml", train_farsee, export_checkpoint)


if __name__ == "__main__":
    main()
