"""Training SICNN (Zhang et al., ECCV 2018) in its phases, with Lightning.

Run ``python -m keenvision.sicnn.train --config configs/sicnn/<phase>.yaml [--resume] [--max-steps N]`` on faces
prepared by `keenvision.sicnn.prepare_faces` (``keen sicnn prepare --src ... --out runs/sicnn/faces``). The config's
``phase`` picks the recipe (paper Sec. 3.3 and Algorithm 1; docs/sicnn.md):

- ``recognition``: pre-train CNN-R on HR faces with the margin head (A-Softmax, L_FR).
- ``pixel``: pre-train CNN-H with the pixel loss L_SR only.
- ``fixed_si``: CNN-H on ``pixel_weight * L_SR + alpha * L_SI`` with a fixed CNN-R trained on HR faces (the
  ablation the paper's "dynamic domain divergence" argument is about).
- ``domain_integrated``: each batch, first CNN-R is updated with L_FR on ``[SR.detach(); HR]`` (labels
  duplicated), then CNN-H with ``pixel_weight * L_SR + alpha * L_SI`` while CNN-R is frozen (its parameters get no
  gradient; the identity loss reaches CNN-H through CNN-R's activations only). Lightning manual optimisation with
  two optimisers.

Steps are optimiser updates (``trainer.global_step``): in ``domain_integrated`` each batch makes two (CNN-R, then
CNN-H), as the Caffe sample's solver counts (odd iterations CNN-R, even CNN-H). ``max_steps``, ``checkpoint_every``
and ``val_every`` count them; each lr schedule counts the updates of its own network (``lr_decay_every``,
``r_lr_decay_every``). Checkpoints go to ``<run_dir>/checkpoints/last.ckpt`` (``--resume``
continues); the result is exported as fp16 safetensors with the architecture in the metadata:
``<run_dir>/cnn_h.safetensors`` (the CNN-H phases) and ``<run_dir>/cnn_r.safetensors`` (recognition and
domain_integrated, with the margin head), read by `keenvision.sicnn.load_cnn_h` / `model.load_cnn_r`.
``--export CKPT OUT_DIR`` only exports the networks of a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..core.recipe import Section, TrainerSettings, recipe_defaults, typed_recipe
from ..core.training import build_trainer, fp16_state, read_checkpoint, resume_checkpoint
from ..core.weights import save_weights
from .data import FaceIdentityDataset, degrade
from .losses import margin_loss, pixel_loss, super_identity_loss
from .model import (
    HallucinationNet,
    RecognitionNet,
    build_cnn_r,
    build_margin_head,
    export_metadata,
    load_cnn_h,
    load_cnn_r,
    read_metadata,
)

PHASES = ("recognition", "pixel", "fixed_si", "domain_integrated")
OPTIMIZERS = ("rmsprop", "sgd", "adam")
Phase = Literal["recognition", "pixel", "fixed_si", "domain_integrated"]
Optimizer = Literal["rmsprop", "sgd", "adam"]


@dataclass
class CnnHArchitecture(Section):
    """`HallucinationNet`'s arguments (the sample's widths are 64 / 32 / [6, 6, 6, 2] / 256)."""

    stem_channels: int = 32
    growth: int = 16
    dense_layers: list[int] = field(default_factory=lambda: [4, 4, 4, 2])
    upsample_channels: int = 64
    bicubic_residual: bool = False


@dataclass
class CnnRArchitecture(Section):
    """`RecognitionNet`'s arguments (an ``init_cnn_r`` export replaces them with its own architecture)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    blocks: list[int] = field(default_factory=lambda: [1, 2, 2, 1])
    stem_channels: int = 16
    embedding_dim: int = 512
    batch_norm: bool = False


@dataclass
class MarginHead(Section):
    kind: Literal["sphereface", "cosface", "arcface"] = "sphereface"
    options: dict[str, float] = field(default_factory=dict)  # e.g. margin, scale, lambda_base, lambda_min


@dataclass
class SICNNRecipe(TrainerSettings):
    """A SICNN phase's recipe (configs/sicnn/*.yaml), typed: `load_config` checks every key."""

    phase: Phase = "pixel"
    run_dir: str = "runs/sicnn/pixel"
    seed: int = 0
    data_root: str = "runs/sicnn/faces"  # a prepare_faces folder
    train_split: str = "train"
    val_split: str = "val"
    train_faces: int | None = None  # use only the first so many faces (quick runs and tests)
    val_faces: int | None = None
    flip: bool = True  # horizontal mirroring of training faces (the sample's `mirror: true`)
    cnn_h: CnnHArchitecture = field(default_factory=CnnHArchitecture)
    cnn_r: CnnRArchitecture = field(default_factory=CnnRArchitecture)
    head: MarginHead = field(default_factory=MarginHead)
    init_cnn_h: str | None = None  # exports (.safetensors or shipped names) of the previous phases
    init_cnn_r: str | None = None
    # the CNN-H objective pixel_weight * L_SR + alpha * L_SI (paper Algorithm 1: L_SR + alpha L_SI)
    pixel_weight: float = 1.0
    pixel_reduction: Literal["image_sum", "mean"] = "image_sum"
    alpha: float = 8.0
    # the optimiser of the network a phase trains (CNN-R in recognition, CNN-H otherwise) ...
    optimizer: Optimizer = "rmsprop"
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 2.0e-4
    lr_decay: float = 0.85  # Caffe "step" policy: lr * lr_decay ^ floor(updates / every)
    lr_decay_every: int = 4000
    # ... and CNN-R's in domain_integrated
    r_optimizer: Optimizer = "sgd"
    r_lr: float = 0.01
    r_momentum: float = 0.9
    r_weight_decay: float = 2.5e-4
    r_lr_decay: float = 0.8
    r_lr_decay_every: int = 6000
    grad_clip_norm: float | None = None  # clip each update's gradient norm (margin losses can blow up early)
    batch_size: int = 16
    val_batch_size: int = 64
    num_workers: int = 0
    log_every: int = 50

    def __post_init__(self):
        if self.phase in ("fixed_si", "domain_integrated") and not self.init_cnn_r:
            raise ValueError(f"phase {self.phase} needs init_cnn_r (a CNN-R export of the recognition phase)")


DEFAULT_CONFIG = recipe_defaults(SICNNRecipe)
DEFAULT_CNN_H, DEFAULT_CNN_R, DEFAULT_HEAD = DEFAULT_CONFIG["cnn_h"], DEFAULT_CONFIG["cnn_r"], DEFAULT_CONFIG["head"]


def load_config(path: str | Path | None, overrides: dict | None = None) -> SICNNRecipe:
    """The recipe: `SICNNRecipe`'s defaults <- the YAML ``path`` (after its ``base`` recipes) <- ``overrides``
    (None values skipped; ``cnn_h``, ``cnn_r``, ``head`` update their keys); every key type-checked, an unknown key
    or a wrong value is a one-line ValueError naming it."""
    return typed_recipe(SICNNRecipe, path, overrides)


def make_optimizer(name: str, module: torch.nn.Module, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """``rmsprop`` (Caffe's defaults: decay 0.99, eps 1e-8), ``sgd`` (momentum) or ``adam``; weight decay on conv
    and linear weights only (the sample's decay_mult 0 on biases and PReLU slopes)."""
    decay = [p for p in module.parameters() if p.ndim > 1]
    no_decay = [p for p in module.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.99, eps=1e-8)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.Adam(groups, lr=lr)


def step_schedule(optimizer: torch.optim.Optimizer, decay: float, every: int):
    """Caffe's "step" lr policy: ``lr * decay ^ floor(updates / every)``."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, int(every)), gamma=decay)


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """``module`` in eval mode with ``requires_grad`` off for its parameters (restored afterwards): gradients still
    flow through it to its input, none reach its parameters."""
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    try:
        yield module
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)
        module.train(was_training)


def psnr(super_resolved: torch.Tensor, high_resolution: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of faces in [-1, 1] (the evaluator's `evaluate.psnr` at data range 2): ``[B]``."""
    from .evaluate import psnr as image_psnr

    return image_psnr(super_resolved.clamp(-1, 1), high_resolution, data_range=2.0)


class SICNNModule(L.LightningModule):
    """The networks of a phase, their losses and optimisers (manual optimisation in every phase, so one code path
    steps one or two optimisers and their schedules).

    ``num_classes``: identities of the training split (the margin head's classes).
    """

    def __init__(self, config: dict, num_classes: int, identities: list[str] | None = None):
        super().__init__()
        # plain data in checkpoints (read back with weights_only)
        plain = config.as_dict() if isinstance(config, Section) else config
        self.save_hyperparameters({"config": plain, "num_classes": num_classes, "identities": identities})
        self.automatic_optimization = False
        self.config, self.phase, self.num_classes = config, config["phase"], num_classes
        self.identities = identities
        self.cnn_h = HallucinationNet(**config["cnn_h"]) if self.phase != "recognition" else None
        self.cnn_r = build_cnn_r(config["cnn_r"]) if self.phase != "pixel" else None
        self.head = None
        if self.phase in ("recognition", "domain_integrated"):
            self.head = build_margin_head(config["head"]["kind"], self.cnn_r.embedding_dim, num_classes,
                                          **config["head"].get("options", {}))
        self._val_outputs: list = []
        self.last_val: dict[str, float] = {}
        self.head_needs_imprint = False  # a new head on a pretrained CNN-R (`imprint_head`)

    # -- losses ----------------------------------------------------------------------------------------------------
    def recognition_loss(self, faces: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """L_FR of CNN-R + head on ``faces [B, 3, 112, 96]``; also the training accuracy of the plain logits."""
        parts = {"lambda": torch.tensor(self.head.current_lambda())} if hasattr(self.head, "current_lambda") else {}
        embeddings = self.cnn_r.embed(faces)
        loss = margin_loss(self.head, embeddings, labels)
        with torch.no_grad():
            accuracy = (self.head(embeddings).argmax(1) == labels).float().mean()
        parts.update({"loss_fr": loss.detach(), "accuracy": accuracy})
        return loss, parts

    def hallucination_loss(self, super_resolved: torch.Tensor, high_resolution: torch.Tensor
                           ) -> tuple[torch.Tensor, dict]:
        """CNN-H's objective ``pixel_weight * L_SR + alpha * L_SI`` for ``super_resolved`` (with its graph through
        CNN-H) against ``high_resolution``; L_SI only when the phase has a CNN-R, which is frozen here: its
        parameters get no gradient, the SR face does."""
        config = self.config
        loss_sr = pixel_loss(super_resolved, high_resolution, config["pixel_reduction"])
        loss = config["pixel_weight"] * loss_sr
        parts = {"loss_sr": loss_sr.detach()}
        if self.cnn_r is not None and self.phase != "pixel":
            with frozen(self.cnn_r):
                with torch.no_grad():
                    features_hr = self.cnn_r.embed(high_resolution)
                features_sr = self.cnn_r.embed(super_resolved)
                loss_si = super_identity_loss(features_sr, features_hr)
            loss = loss + config["alpha"] * loss_si
            parts["loss_si"] = loss_si.detach()
        parts["loss_h"] = loss.detach()
        return loss, parts

    # -- training --------------------------------------------------------------------------------------------------
    def _update(self, optimizer, scheduler, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):  # stop before a diverged network reaches a checkpoint or an export
            raise FloatingPointError(f"the {self.phase} loss is {loss.item()} at step {self.global_step}: training "
                                     "diverged; lower lr or set grad_clip_norm, and resume from the last checkpoint")
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.config["grad_clip_norm"]:
            self.clip_gradients(optimizer, gradient_clip_val=self.config["grad_clip_norm"],
                                gradient_clip_algorithm="norm")
        optimizer.step()
        scheduler.step()

    def training_step(self, batch, _):
        faces, labels = batch
        optimizers = self.optimizers()
        schedulers = self.lr_schedulers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        logged: dict[str, torch.Tensor] = {}
        if self.phase == "recognition":
            loss, parts = self.recognition_loss(faces, labels)
            self._update(optimizers[0], schedulers[0], loss)
            logged.update(parts)
        else:
            super_resolved = self.cnn_h(degrade(faces))
            if self.phase == "domain_integrated":
                # 1. CNN-R (and head) on hallucinated and HR faces together, labels duplicated; SR detached so
                #    L_FR does not reach CNN-H
                optimizer_h, optimizer_r = optimizers
                scheduler_h, scheduler_r = schedulers
                loss_r, parts = self.recognition_loss(torch.cat([super_resolved.detach(), faces]),
                                                      torch.cat([labels, labels]))
                self._update(optimizer_r, scheduler_r, loss_r)
                optimizer_r.zero_grad(set_to_none=True)
                logged.update({f"r_{k}": v for k, v in parts.items()})
            # 2. CNN-H with CNN-R frozen (fixed_si: always frozen; pixel: no CNN-R)
            loss_h, parts = self.hallucination_loss(super_resolved, faces)
            self._update(optimizers[0], schedulers[0], loss_h)
            if self.cnn_r is not None:  # L_SI reached CNN-H through CNN-R's activations, never CNN-R's weights
                assert all(p.grad is None for p in self.cnn_r.parameters()), "CNN-R got gradients from CNN-H's loss"
            logged.update(parts)
            logged["psnr"] = psnr(super_resolved.detach(), faces).mean()
        logged["lr"] = torch.tensor(optimizers[0].param_groups[0]["lr"])
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, prog_bar=False)

    def configure_optimizers(self):
        config = self.config
        trained = self.cnn_h if self.cnn_h is not None else torch.nn.ModuleList([self.cnn_r, self.head])
        optimizer = make_optimizer(config["optimizer"], trained, config["lr"], config["momentum"],
                                   config["weight_decay"])
        optimizers = [optimizer]
        schedulers = [{"scheduler": step_schedule(optimizer, config["lr_decay"], config["lr_decay_every"]),
                       "interval": "step"}]
        if self.phase == "domain_integrated":
            optimizer_r = make_optimizer(config["r_optimizer"], torch.nn.ModuleList([self.cnn_r, self.head]),
                                         config["r_lr"], config["r_momentum"], config["r_weight_decay"])
            optimizers.append(optimizer_r)
            schedulers.append({"scheduler": step_schedule(optimizer_r, config["r_lr_decay"],
                                                          config["r_lr_decay_every"]), "interval": "step"})
        return optimizers, schedulers

    # -- validation ------------------------------------------------------------------------------------------------
    def validation_step(self, batch, _):
        faces, labels = batch
        if self.phase == "recognition":
            self._val_outputs.append((F.normalize(self.cnn_r.embed(faces), dim=1), labels))
            return
        low_resolution = degrade(faces)
        super_resolved = self.cnn_h(low_resolution)
        bicubic = F.interpolate(low_resolution, scale_factor=8, mode="bicubic", align_corners=False)
        row = {"psnr": psnr(super_resolved, faces), "psnr_bicubic": psnr(bicubic, faces)}
        if self.cnn_r is not None:
            features_sr, features_hr = self.cnn_r.embed(super_resolved), self.cnn_r.embed(faces)
            row["cosine"] = F.cosine_similarity(features_sr, features_hr, dim=1)
        self._val_outputs.append(row)

    def on_validation_epoch_end(self):
        outputs, self._val_outputs = self._val_outputs, []
        if not outputs:
            return
        if self.phase == "recognition":
            embeddings = torch.cat([o[0] for o in outputs])
            labels = torch.cat([o[1] for o in outputs])
            from .evaluate import pair_verification

            metrics = pair_verification(embeddings, labels)
        else:
            metrics = {key: float(torch.cat([o[key] for o in outputs]).mean()) for key in outputs[0]}
            if "cosine" in metrics:  # = mean L_SI on the val faces for unit features: 2 - 2 cos
                metrics["si_loss"] = 2 - 2 * metrics["cosine"]
        self.last_val = metrics
        self.log_dict({f"val/{k}": v for k, v in metrics.items()})


# ----------------------------------------------------------------------------------------------------------------------
# initialisation from earlier phases, exports


def initialise(module: SICNNModule, config: dict) -> None:
    """Load ``init_cnn_h`` into CNN-H and ``init_cnn_r`` (with its margin head when the phase trains one) into
    CNN-R; the architectures in the exports replace those of the config (they must be what was trained)."""
    if config["init_cnn_h"] and module.cnn_h is not None:
        loaded = load_cnn_h(config["init_cnn_h"])
        module.cnn_h = loaded.train()
        module.hparams["config"]["cnn_h"] = dict(loaded.config)
    if config["init_cnn_r"] and module.cnn_r is not None:
        metadata = read_metadata(config["init_cnn_r"])
        if module.head is None:
            module.cnn_r = load_cnn_r(config["init_cnn_r"]).train()
        else:
            if "head" not in metadata:
                if module.phase != "recognition":
                    raise ValueError(f"{config['init_cnn_r']} has no margin head to continue training (fine-tune "
                                     "it in the recognition phase first)")
                # a recogniser without a head (an imported one): fine-tuning starts a new head on this split
                module.cnn_r = load_cnn_r(config["init_cnn_r"]).train()
                module.head = build_margin_head(config["head"]["kind"], module.cnn_r.embedding_dim,
                                                module.num_classes, **config["head"].get("options", {}))
                module.hparams["config"]["cnn_r"] = dict(module.cnn_r.config)
                module.head_needs_imprint = True
                return
            head_config = json.loads(metadata["head"])
            if head_config["num_classes"] != module.num_classes:
                raise ValueError(f"{config['init_cnn_r']}'s head has {head_config['num_classes']} identities, the "
                                 f"training split {module.num_classes}: use the same prepared faces")
            cnn_r, head = load_cnn_r(config["init_cnn_r"], with_head=True)
            if head_config["kind"] != config["head"]["kind"]:
                raise ValueError(f"{config['init_cnn_r']} has a {head_config['kind']} head, the config asks for "
                                 f"{config['head']['kind']}")
            # the config's head options (e.g. the sample's fixed lambda 12) apply to the loaded weights
            module.head = build_margin_head(config["head"]["kind"], cnn_r.embedding_dim, module.num_classes,
                                            **config["head"].get("options", {}))
            module.head.load_state_dict(head.state_dict())
            module.cnn_r = cnn_r.train()
        module.hparams["config"]["cnn_r"] = dict(module.cnn_r.config)
        identities = json.loads(metadata.get("identities", "null"))
        if identities is not None and module.identities is not None and identities != module.identities:
            raise ValueError(f"{config['init_cnn_r']} was trained on other identities than this training split")


@torch.no_grad()
def imprint_head(head: torch.nn.Module, cnn_r: torch.nn.Module, dataset, batch_size: int = 128) -> None:
    """Set each class weight of a new margin head to the mean unit embedding of that identity's training faces
    (weight imprinting, Qi et al. 2018): fine-tuning a pretrained recogniser then starts from a head that already
    classifies, instead of random weights whose first gradients would disturb the pretrained metric."""
    was_training = cnn_r.training
    cnn_r.eval()
    sums = torch.zeros_like(head.weight)
    flip = getattr(dataset, "flip", False)
    dataset.flip = False  # the faces as they are
    try:
        for faces, labels in DataLoader(dataset, batch_size=batch_size):
            sums.index_add_(0, labels, F.normalize(cnn_r.embed(faces), dim=1).to(sums.dtype))
    finally:
        dataset.flip = flip
    seen = sums.norm(dim=1) > 0
    head.weight[seen] = F.normalize(sums[seen], dim=1)
    cnn_r.train(was_training)


def export_cnn_h(model: HallucinationNet, out: str | Path, extra: dict[str, str] | None = None) -> Path:
    """fp16 safetensors of CNN-H with the metadata `load_cnn_h` reads."""
    save_weights(fp16_state(model), out, export_metadata("cnn_h", model, extra))
    return Path(out)


def export_cnn_r(model: RecognitionNet, head: torch.nn.Module | None, out: str | Path, head_config: dict | None = None,
                 extra: dict[str, str] | None = None) -> Path:
    """fp16 safetensors of CNN-R (and its margin head as ``head.*``, kind/options/classes in the ``head``
    metadata) that `model.load_cnn_r` reads."""
    state = fp16_state(model)
    metadata = dict(extra or {})
    if head is not None:
        state.update(fp16_state(head, "head."))
        metadata["head"] = json.dumps({"kind": head_config["kind"], "options": head_config.get("options", {}),
                                       "num_classes": head.weight.shape[0]})
    save_weights(state, out, export_metadata("cnn_r", model, metadata))
    return Path(out)


def export_module(module: SICNNModule, run_dir: str | Path, global_step: int) -> dict[str, Path]:
    """Write the phase's networks to ``run_dir`` (``cnn_h.safetensors``, ``cnn_r.safetensors``)."""
    run_dir = Path(run_dir)
    extra = {"phase": module.phase, "global_step": str(global_step),
             **{f"val_{k}": f"{v:.6f}" for k, v in module.last_val.items()}}
    written = {}
    if module.cnn_h is not None:
        written["cnn_h"] = export_cnn_h(module.cnn_h, run_dir / "cnn_h.safetensors", extra)
    if module.head is not None:
        identities = {"identities": json.dumps(module.identities)} if module.identities is not None else {}
        written["cnn_r"] = export_cnn_r(module.cnn_r, module.head, run_dir / "cnn_r.safetensors",
                                        module.config["head"], {**extra, **identities})
    return written


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Export the networks of a Lightning checkpoint of this recipe (e.g. ``last.ckpt`` of a run still going)."""
    state, hyper, global_step = read_checkpoint(checkpoint, prefix=None)
    module = SICNNModule(hyper["config"], hyper["num_classes"], hyper.get("identities"))
    module.load_state_dict(state)
    return export_module(module, out_dir, global_step)


# ----------------------------------------------------------------------------------------------------------------------
# the recipe


def _first(dataset, count: int | None):
    return Subset(dataset, range(min(count, len(dataset)))) if count else dataset


def train_sicnn(config_path: str | Path | None, overrides: dict | None = None) -> Path:
    """Train (or resume) one SICNN phase; returns the main export: ``<run_dir>/cnn_r.safetensors`` for the
    recognition phase, ``<run_dir>/cnn_h.safetensors`` otherwise (domain_integrated writes both)."""
    config = load_config(config_path, overrides)
    torch.set_num_threads(config["num_threads"])
    L.seed_everything(config["seed"], workers=True)
    run_dir = Path(config["run_dir"])
    train = FaceIdentityDataset(config["data_root"], config["train_split"], flip=config["flip"])
    # recognition is validated by verification on unseen identities: those with at least two faces
    val = FaceIdentityDataset(config["data_root"], config["val_split"],
                              min_faces_per_identity=2 if config["phase"] == "recognition" else 1)
    module = SICNNModule(config, train.num_classes, train.identities)
    initialise(module, config)
    if module.head_needs_imprint and not config["resume"]:
        imprint_head(module.head, module.cnn_r, train)
    updates_per_batch = 2 if config["phase"] == "domain_integrated" else 1
    # the checkpoint callback tests global_step % every == 0, so a multiple of the updates per batch
    checkpoint_every = math.ceil(config["checkpoint_every"] / updates_per_batch) * updates_per_batch
    trainer = build_trainer(config, run_dir, checkpoint_every, log_every_n_steps=config["log_every"],
                            val_check_interval=max(1, math.ceil(config["val_every"] / updates_per_batch)),
                            check_val_every_n_epoch=None)
    workers = config["num_workers"]
    loader_options = {"num_workers": workers, "persistent_workers": workers > 0}
    train_loader = DataLoader(_first(train, config["train_faces"]), batch_size=config["batch_size"], shuffle=True,
                              drop_last=True, **loader_options)
    val_loader = DataLoader(_first(val, config["val_faces"]), batch_size=config["val_batch_size"], **loader_options)
    resume_from = resume_checkpoint(run_dir) if config["resume"] else None
    with warnings.catch_warnings():
        # Lightning notes that under manual optimisation step checkpoints hold the state after the update: that is
        # the state a resumed run must continue from
        warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(resume_from) if resume_from else None,
                    weights_only=True)
    written = export_module(module, run_dir, trainer.global_step) if trainer.is_global_zero else {}
    main_export = "cnn_r" if config["phase"] == "recognition" else "cnn_h"
    return written.get(main_export, run_dir / f"{main_export}.safetensors")


def loss_gradient_norms(cnn_h: HallucinationNet, cnn_r: RecognitionNet, data_root: str | Path, split: str = "train",
                        batches: int = 8, batch_size: int = 16, pixel_reduction: str = "image_sum",
                        seed: int = 0) -> dict:
    """How strongly L_SR and L_SI pull on CNN-H: the gradient norms of each w.r.t. CNN-H's parameters (CNN-R frozen)
    on ``batches`` training batches, and their median ratio ``|g_SR| / |g_SI|``, the alpha at which the two terms
    pull equally hard. alpha's meaning depends on the loss reductions and on how sharp CNN-R's identity metric is,
    so a value copied from another setup can make L_SI negligible (or dominant); this measures it for ours.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(FaceIdentityDataset(data_root, split, flip=True), batch_size=batch_size, shuffle=True,
                        generator=generator)
    parameters = [p for p in cnn_h.parameters() if p.requires_grad]
    rows = []
    with frozen(cnn_r):
        for index, (faces, _) in enumerate(loader):
            if index == batches:
                break
            super_resolved = cnn_h(degrade(faces))
            loss_sr = pixel_loss(super_resolved, faces, pixel_reduction)
            with torch.no_grad():
                features_hr = cnn_r.embed(faces)
            loss_si = super_identity_loss(cnn_r.embed(super_resolved), features_hr)
            norms = [torch.sqrt(sum(g.pow(2).sum() for g in torch.autograd.grad(loss, parameters, retain_graph=True)))
                     for loss in (loss_sr, loss_si)]
            rows.append({"loss_sr": loss_sr.item(), "loss_si": loss_si.item(), "grad_sr": norms[0].item(),
                         "grad_si": norms[1].item()})
    ratios = sorted(row["grad_sr"] / max(row["grad_si"], 1e-12) for row in rows)
    return {"batches": rows, "median_grad_ratio": ratios[len(ratios) // 2]}


if __name__ == "__main__":
    from ..core.cli import train_main

    train_main("sicnn")
