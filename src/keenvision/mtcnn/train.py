"""The MTCNN training recipe (the authors released none): P-Net, then R-Net and O-Net on samples the earlier stages
mine, each trained by PyTorch Lightning from a YAML config and exported to safetensors.

``train_from_config("configs/mtcnn/pnet.yaml", {"max_steps": 500})`` generates (and caches under the run folder)
the crops, trains, checkpoints (``resume: true`` continues from ``<run_dir>/checkpoints/last.ckpt``) and writes
``<run_dir>/<stage>.safetensors`` with ``<stage>.*`` keys. ``merge_stage_weights`` joins stage files into one
weights file for ``MTCNN(weights=...)``. docs/mtcnn_training.md describes every config key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import yaml
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy

from ..core.data import data_root
from ..core.recipe import Section, recipe_defaults, typed_recipe
from ..core.training import build_trainer, resume_checkpoint
from ..core.weights import load_into, open_weights, save_weights, sha256
from .data import (
    LANDMARK,
    NEGATIVE,
    PART,
    POSITIVE,
    CropSettings,
    ImageFaces,
    LandmarkFace,
    SampleDataModule,
    Samples,
    dlib_xml_to_landmarks,
    dlib_xml_to_wider,
    landmark_samples,
    mined_samples,
    pseudo_label_faces,
    random_crop_samples,
    read_landmark_faces,
    read_wider_boxes,
)
from .detector import DEFAULT_NAME, MTCNN
from .losses import STAGE_ALPHA, mtcnn_loss
from .model import STAGES

log = logging.getLogger(__name__)

@dataclass
class CropRecipe(Section):
    """Random training crops per image / face (`data` sources may override them)."""

    negatives_per_image: int = 50
    negatives_near_face: int = 5
    shifted_per_face: int = 20
    landmark_crops_per_face: int = 10
    min_face_size: int = 20
    min_crop_size: int = 12


@dataclass
class MiningSettings(Section):
    """R-Net / O-Net only: the earlier stages' proposals as samples (online hard sample mining's inputs)."""

    enabled: bool = True  # add the earlier stages' proposals as samples
    random_crops: bool = True  # also add random crops as for P-Net (proposals alone give few positives)
    pnet: str = "shipped"  # weights for the P-Net doing the mining: a file with pnet.* keys, or "shipped"
    rnet: str = "shipped"  # the same for R-Net (O-Net mining runs P-Net then R-Net)
    min_face_size: float = 20
    factor: float = 0.709
    thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.7])
    max_negatives_per_image: int = 100


def _no_sources() -> dict[str, list]:
    return {"boxes": [], "landmarks": []}


@dataclass
class DataSources(Section):
    """Annotation sources per split, each ``{boxes: [...], landmarks: [...]}`` (set whole by a recipe)."""

    train: dict[str, list] = field(default_factory=_no_sources)
    val: dict[str, list] = field(default_factory=_no_sources)


@dataclass
class MTCNNRecipe(Section):
    """An MTCNN stage's recipe (configs/mtcnn/*.yaml), typed: `load_config` checks every key."""

    stage: Literal["pnet", "rnet", "onet"] = "pnet"
    run_dir: str = "runs/mtcnn/pnet"  # checkpoints, logs, sample caches and the exported weights go here
    seed: int = 0
    resume: bool = False  # continue from <run_dir>/checkpoints/last.ckpt when it exists
    landmarks: bool = True  # landmark head on P/R-Net as in the paper's figure (O-Net always has one)
    init_weights: str | None = None  # start from a weights file's <stage>.* tensors ("shipped": the authors' weights)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 0.001
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0005
    lr_decay_steps: list[int] = field(default_factory=list)  # multiply the lr by lr_decay_factor at these steps
    lr_decay_factor: float = 0.1
    batch_size: int = 384
    max_steps: int | None = 10000
    max_epochs: int | None = None  # None: bounded by max_steps only
    steps_per_epoch: int = 500  # batches per epoch (the ratio sampler has no natural epoch); validation after each
    checkpoint_every: int = 500  # steps between saves of last.ckpt (it is also written when training ends)
    # {face, box, landmark} task weights; None: the paper's, (1, 0.5, 0.5) P/R-Net, (1, 0.5, 1) O-Net
    alpha: dict[str, float] | None = None
    ohem_ratio: float = 0.7  # fraction of the hardest classification losses back-propagated per batch
    sample_ratio: dict[str, int] = field(default_factory=lambda: {"negative": 3, "positive": 1, "part": 1,
                                                                  "landmark": 2})  # per batch
    flip: bool = True  # random horizontal mirroring, targets mirrored too
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1  # more than 1: multi-node DDP (one process per node, e.g. under SLURM or torchrun)
    strategy: str = "auto"
    num_threads: int | None = None  # CPU threads for torch; None: torch's default
    precision: str = "32-true"
    log_every_n_steps: int = 10
    progress_bar: bool = False
    data_cache: str | None = None  # converted annotations and pseudo-labels; None: <run_dir>/data
    data: DataSources = field(default_factory=DataSources)
    crops: CropRecipe = field(default_factory=CropRecipe)
    mining: MiningSettings = field(default_factory=MiningSettings)


DEFAULT_CONFIG: dict = recipe_defaults(MTCNNRecipe)


# ----------------------------------------------------------------------------------------------------------------
# configuration
def load_config(config_path: str | Path | None, overrides: dict | None = None) -> dict:
    """The YAML config over `MTCNNRecipe`'s defaults, then ``overrides``: flat keys (``max_steps``, ``run_dir``,
    ``resume``, ``lr``...) or dotted ones for nested keys (``mining.pnet``); ``None`` values are ignored, so a
    CLI can pass its unset options as they are. Every key is type-checked (an unknown key or a wrong value is one
    line naming it); returned as a plain dict with the stage's task weights filled in."""
    config = typed_recipe(MTCNNRecipe, config_path, overrides, replace=("data.train", "data.val")).as_dict()
    paper_alpha = dict(zip(("face", "box", "landmark"), STAGE_ALPHA[config["stage"]]))
    config["alpha"] = {**paper_alpha, **(config["alpha"] or {})}
    if set(config["alpha"]) != set(paper_alpha):
        raise ValueError(f"alpha takes the keys face, box and landmark, got {sorted(config['alpha'])}")
    if config["stage"] == "onet":
        config["landmarks"] = True
    if config["max_steps"] in (None, -1) and config["max_epochs"] in (None, -1):
        raise ValueError("set max_steps or max_epochs: training would never stop")
    return config


def _data_path(path: str | Path) -> Path:
    """Annotation and image paths in ``data`` are relative to the shared data folder (``KEEN_DATA``)."""
    path = Path(path)
    return path if path.is_absolute() else data_root() / path


# ----------------------------------------------------------------------------------------------------------------
# annotation sources -> faces
def _pseudo_labelled(source: dict, cache: Path) -> tuple[Path, Path, Path]:
    images_root = _data_path(source["images"])
    folders = sorted(p for p in images_root.iterdir() if p.is_dir())
    start, stop = source.get("identities", [0, len(folders)])
    min_score = float(source.get("min_score", 0.9))
    stem = cache / f"pseudo_{images_root.name}_{start}_{stop}_{min_score:g}"
    boxes_file, landmarks_file = stem.with_suffix(".wider.txt"), stem.with_suffix(".landmarks.txt")
    if not (boxes_file.is_file() and landmarks_file.is_file()):
        paths = [p for folder in folders[start:stop] for p in sorted(folder.iterdir()) if p.is_file()]
        log.info("pseudo-labelling %d images of %s with the shipped MTCNN", len(paths), images_root)
        pseudo_label_faces(paths, images_root, boxes_file, landmarks_file, min_score=min_score)
    return boxes_file, landmarks_file, images_root


def _read_sources(sources: list[dict], cache: Path, what: str, default: str, readers: dict) -> list:
    """Concatenate ``readers[format](source, cache)`` over ``sources`` (``format`` defaults to ``default``)."""
    items: list = []
    for source in sources:
        kind = source.get("format", default)
        if kind not in readers:
            raise ValueError(f"unknown {what} source format {kind!r} ({', '.join(readers)})")
        items += readers[kind](source, cache)
    return items


def _dlib_xml(source: dict, cache: Path, convert, suffix: str) -> tuple[Path, Path]:
    """(the dlib XML converted once into ``cache``, its images folder)."""
    xml = _data_path(source["path"])
    return convert(xml, cache / f"{xml.parent.name}_{xml.stem}{suffix}"), xml.parent


BOX_READERS = {
    "wider": lambda source, cache: read_wider_boxes(_data_path(source["path"]), _data_path(source["images"])),
    "dlib_xml": lambda source, cache: read_wider_boxes(*_dlib_xml(source, cache, dlib_xml_to_wider, ".wider.txt")),
    "celeba_pseudo": lambda source, cache: read_wider_boxes(*_pseudo_labelled(source, cache)[::2]),
}
LANDMARK_READERS = {
    "landmarks_txt": lambda source, cache: read_landmark_faces(
        _data_path(source["path"]), _data_path(source.get("images", _data_path(source["path"]).parent))),
    "dlib_xml": lambda source, cache: read_landmark_faces(
        *_dlib_xml(source, cache, dlib_xml_to_landmarks, ".landmarks.txt")),
    "celeba_pseudo": lambda source, cache: read_landmark_faces(*_pseudo_labelled(source, cache)[1:]),
}


def load_box_sources(sources: list[dict], cache: Path) -> list[ImageFaces]:
    """Faces of every image in the ``boxes`` sources: ``{format: wider, path, images}``, ``{format: dlib_xml,
    path}`` (converted to WIDER txt in ``cache`` first) or ``{format: celeba_pseudo, images, identities,
    min_score}`` (labelled by the shipped detector, cached)."""
    return _read_sources(sources, cache, "boxes", "wider", BOX_READERS)


def load_landmark_sources(sources: list[dict], cache: Path) -> list[LandmarkFace]:
    """Faces with 5 points from the ``landmarks`` sources: ``{format: landmarks_txt, path, images}``,
    ``{format: dlib_xml, path}`` (68 iBUG points reduced to 5) or ``{format: celeba_pseudo, ...}``."""
    return _read_sources(sources, cache, "landmarks", "landmarks_txt", LANDMARK_READERS)


# ----------------------------------------------------------------------------------------------------------------
# samples
def _weights_identity(weights: str) -> str:
    return "shipped" if weights == "shipped" else sha256(weights)


def _mining_detector(config: dict, run_dir: Path) -> MTCNN:
    mining = config["mining"]
    weights = {"pnet": None if mining["pnet"] == "shipped" else mining["pnet"]}
    if config["stage"] == "onet":
        weights["rnet"] = None if mining["rnet"] == "shipped" else mining["rnet"]
    merged = merge_stage_weights(run_dir / "mining_detector.safetensors", **weights)
    return MTCNN(weights=merged, min_face_size=mining["min_face_size"], factor=mining["factor"],
                 thresholds=tuple(mining["thresholds"]))


def _sample_fingerprint(config: dict, split: str) -> str:
    mining = dict(config["mining"])
    if config["stage"] != "pnet" and mining["enabled"]:
        # retraining an earlier stage changes what it mines, so its weights are part of the identity
        mining["pnet"] = _weights_identity(mining["pnet"])
        mining["rnet"] = _weights_identity(mining["rnet"]) if config["stage"] == "onet" else None
    identity = {key: config[key] for key in ("stage", "seed", "landmarks", "crops")}
    identity.update(split=split, sources=config["data"][split], mining=mining, data_root=str(data_root()))
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_samples(config: dict, split: str, run_dir: str | Path) -> Samples:
    """Crops of ``config["data"][split]`` for the config's stage: random crops (P-Net, and R/O-Net with
    ``mining.random_crops``), proposals mined by the earlier stages (R/O-Net with ``mining.enabled``) and
    landmark faces (when the network has a landmark head). A source may carry its own ``crops`` settings over
    the config's (e.g. many crops from a few scene photos, few from thousands of portraits)."""
    run_dir, stage = Path(run_dir), config["stage"]
    size = STAGES[stage].input_size
    cache = Path(config["data_cache"]) if config["data_cache"] else run_dir / "data"
    rng = np.random.default_rng([config["seed"], ("train", "val").index(split)])
    sources = config["data"][split]
    mining = stage != "pnet" and config["mining"]["enabled"]
    detector = _mining_detector(config, run_dir) if mining and sources.get("boxes") else None
    parts = []
    for source in sources.get("boxes") or []:
        settings = CropSettings(**{**config["crops"], **source.get("crops", {})})
        images = load_box_sources([source], cache)
        if stage == "pnet" or config["mining"]["random_crops"] or not mining:
            parts.append(random_crop_samples(images, size, settings, rng))
        if detector is not None:
            last_stage = {"rnet": "pnet", "onet": "rnet"}[stage]
            parts.append(mined_samples(images, size, detector, last_stage, rng,
                                       config["mining"]["max_negatives_per_image"]))
    if config["landmarks"]:
        for source in sources.get("landmarks") or []:
            settings = CropSettings(**{**config["crops"], **source.get("crops", {})})
            parts.append(landmark_samples(load_landmark_sources([source], cache), size, settings, rng))
    return Samples.concatenate(parts, size)


def prepare_samples(config: dict, run_dir: str | Path) -> dict[str, Path]:
    """Build the train and val sample caches under ``<run_dir>/samples/`` unless up to date; returns their
    folders (val only when it has sources)."""
    run_dir = Path(run_dir)
    folders = {}
    for split in ("train", "val"):
        sources = config["data"].get(split) or {}
        if not (sources.get("boxes") or sources.get("landmarks")):
            if split == "train":
                raise ValueError("the config has no training data (data.train.boxes / data.train.landmarks)")
            continue
        folder = run_dir / "samples" / split
        fingerprint = _sample_fingerprint(config, split)
        meta = folder / "meta.json"
        if not (meta.is_file() and json.loads(meta.read_text()).get("fingerprint") == fingerprint):
            if meta.is_file():
                meta.unlink()
            samples = build_samples(config, split, run_dir)
            if split == "train" and len(samples) == 0:
                raise ValueError("the training sources gave no samples")
            samples.save(folder, {"fingerprint": fingerprint, "stage": config["stage"]})
            log.info("%s samples for %s: %s", split, config["stage"], samples.counts())
        folders[split] = folder
    return folders


# ----------------------------------------------------------------------------------------------------------------
# the LightningModule
class StageModule(L.LightningModule):
    """One MTCNN stage trained with the paper's multi-task loss (see `keenvision.mtcnn.losses`).

    Batches are ``(images [B, 3, S, S], labels [B], box_targets [B, 4], landmark_targets [B, 10])``. Logs
    ``train/loss``, ``train/face``, ``train/box``, ``train/landmark``, ``train/accuracy`` and the same under
    ``val/`` (validation keeps every classification loss: no OHEM)."""

    def __init__(self, stage: str = "pnet", landmarks: bool = True, alpha: dict | None = None,
                 ohem_ratio: float = 0.7, optimizer: str = "adam", lr: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, lr_decay_steps: list[int] | None = None, lr_decay_factor: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = STAGES[stage](landmarks=landmarks)
        alpha = alpha or dict(zip(("face", "box", "landmark"), STAGE_ALPHA[stage]))
        self.alpha = (alpha["face"], alpha["box"], alpha["landmark"])
        self.val_accuracy = BinaryAccuracy()
        self.val_task_means = torch.nn.ModuleDict({name: MeanMetric() for name in ("face", "box", "landmark")})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net(images)

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        images, labels, box_targets, landmark_targets = batch
        outputs = self.net(images)
        total, parts = mtcnn_loss(outputs, labels, box_targets, landmark_targets, self.alpha,
                                  self.hparams.ohem_ratio)
        self.log("train/loss", total, prog_bar=True, batch_size=len(labels))
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=len(labels))
        classified = (labels == NEGATIVE) | (labels == POSITIVE)
        if classified.any():
            predicted_face = outputs[0].flatten(1)[classified].argmax(dim=1) == 1
            accuracy = (predicted_face == (labels[classified] == POSITIVE)).float().mean()
            self.log("train/accuracy", accuracy, batch_size=int(classified.sum()))
        return total

    def validation_step(self, batch, batch_index: int) -> None:
        images, labels, box_targets, landmark_targets = batch
        outputs = self.net(images)
        _, parts = mtcnn_loss(outputs, labels, box_targets, landmark_targets, self.alpha, ohem_ratio=1.0)
        # per-task means over the samples that take part in each task, whatever the batches' mix
        members = {"face": (labels == NEGATIVE) | (labels == POSITIVE),
                   "box": (labels == POSITIVE) | (labels == PART), "landmark": labels == LANDMARK}
        for name, value in parts.items():
            if members[name].any():
                self.val_task_means[name].update(value, members[name].sum())
        classified = members["face"]
        if classified.any():
            face_probability = outputs[0].flatten(1).softmax(dim=1)[classified, 1]
            self.val_accuracy.update(face_probability, (labels[classified] == POSITIVE).long())

    def on_validation_epoch_end(self) -> None:
        total = 0.0
        for (name, mean), weight in zip(self.val_task_means.items(), self.alpha):
            if mean.update_called:
                value = mean.compute()
                self.log(f"val/{name}", value)
                total = total + weight * value
                mean.reset()
        self.log("val/loss", total, prog_bar=True)
        if self.val_accuracy.update_called:
            self.log("val/accuracy", self.val_accuracy.compute(), prog_bar=True)
            self.val_accuracy.reset()

    def configure_optimizers(self):
        h = self.hparams
        if h.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(h.lr_decay_steps or []), h.lr_decay_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# ----------------------------------------------------------------------------------------------------------------
# weights files
def export_stage_weights(net: torch.nn.Module, stage: str, path: str | Path,
                         metadata: dict[str, str] | None = None) -> Path:
    """Write a stage network's tensors as ``<stage>.*`` keys to a safetensors file; returns the path."""
    save_weights({f"{stage}.{k}": v for k, v in net.state_dict().items()}, path,
                 {"stage": stage, **{k: str(v) for k, v in (metadata or {}).items()}})
    return Path(path)


def _stage_weights(name_or_path: str | Path | None, stage: str) -> dict[str, torch.Tensor]:
    """The ``<stage>.*`` tensors (prefix removed) of a weights file, or of the shipped weights (None), through the
    one weights resolver."""
    weights = open_weights(DEFAULT_NAME if name_or_path is None else name_or_path, "mtcnn", "MTCNN",
                           "`keen mtcnn train`")
    return weights.state(prefix=f"{stage}.")


def merge_stage_weights(output: str | Path, pnet: str | Path | None = None, rnet: str | Path | None = None,
                        onet: str | Path | None = None) -> Path:
    """One detector weights file from stage files (each holding ``<stage>.*`` keys, e.g. an exported stage or a
    whole detector file); stages left ``None`` come from the shipped weights. Load it with
    ``MTCNN(weights=output)``."""
    state = {}
    for stage, path in (("pnet", pnet), ("rnet", rnet), ("onet", onet)):
        tensors = _stage_weights(path, stage)
        if not tensors:
            raise ValueError(f"{path} has no {stage}.* tensors")
        state.update({f"{stage}.{k}": v for k, v in tensors.items()})
    save_weights(state, output, {"stages": json.dumps({"pnet": str(pnet or "shipped"),
                                                       "rnet": str(rnet or "shipped"),
                                                       "onet": str(onet or "shipped")})})
    return Path(output)


# ----------------------------------------------------------------------------------------------------------------
# entry point
def train_from_config(config_path: str | Path | None, overrides: dict | None = None) -> Path:
    """Train one MTCNN stage as the config says and return the exported ``<run_dir>/<stage>.safetensors``.

    Samples are generated once and cached in ``<run_dir>/samples`` (rebuilt when the data, crop or mining
    settings change); with ``resume: true`` training continues from ``<run_dir>/checkpoints/last.ckpt`` (step
    count, optimiser and scheduler included) up to ``max_steps``. ``overrides`` as in `load_config`."""
    config = load_config(config_path, overrides)
    if config["num_threads"]:
        torch.set_num_threads(config["num_threads"])
    run_dir = Path(config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    L.seed_everything(config["seed"], workers=True, verbose=False)
    ratio = dict(config["sample_ratio"])
    if not config["landmarks"]:
        ratio["landmark"] = 0
    datamodule = SampleDataModule(run_dir / "samples" / "train", run_dir / "samples" / "val",
                                  config["batch_size"], ratio, config["steps_per_epoch"], config["flip"],
                                  config["num_workers"], config["seed"], partial(prepare_samples, config, run_dir))
    module = StageModule(config["stage"], config["landmarks"], config["alpha"], config["ohem_ratio"],
                         config["optimizer"], config["lr"], config["momentum"], config["weight_decay"],
                         config["lr_decay_steps"], config["lr_decay_factor"])
    resume_from = resume_checkpoint(run_dir) if config["resume"] else None
    if config["init_weights"] and resume_from is None:
        source = None if config["init_weights"] == "shipped" else config["init_weights"]
        state = _stage_weights(source, config["stage"])
        heads = {k: v for k, v in module.net.state_dict().items() if k.startswith("landmarks.")}
        # the shipped P/R-Net have no landmark head: keep the fresh one
        load_into(module.net, {**heads, **state}, f"{source} ({config['stage']})")
    val_sources = config["data"].get("val") or {}
    has_val = bool(val_sources.get("boxes") or val_sources.get("landmarks"))
    trainer = build_trainer(
        config, run_dir, config["checkpoint_every"],
        max_steps=-1 if config["max_steps"] is None else config["max_steps"],
        max_epochs=config["max_epochs"] if config["max_epochs"] is not None else -1,
        strategy=config["strategy"], log_every_n_steps=config["log_every_n_steps"],
        enable_progress_bar=config["progress_bar"], limit_val_batches=1.0 if has_val else 0,
        use_distributed_sampler=False,  # RatioSampler gives each rank its own stream
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    output = run_dir / f"{config['stage']}.safetensors"
    if trainer.is_global_zero:
        export_stage_weights(module.net, config["stage"], output,
                             {"global_step": trainer.global_step, "landmarks": config["landmarks"],
                              "train_samples": json.dumps(datamodule.train_samples.counts()),
                              "recipe": "keenvision.mtcnn.train"})
    return output


if __name__ == "__main__":
    from ..core.cli import train_main

    train_main("mtcnn")
