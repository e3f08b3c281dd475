"""Training the engagement regressor: Lightning recipe, stratified K-fold cross-validation, bootstrap aggregation.

Run ``python -m keenvision.engagement.train --config configs/engagement/openface_15seg.yaml``. The recipe:

1. ``cv_folds`` >= 2: stratified (by level), seeded K-fold cross-validation of the whole recipe (standardisation
   fitted on the training folds only, the bagged ensemble trained on them, scored on the held-out fold): the
   cross-validated MSE (mean +- std over folds) and the per-level MSE of the pooled out-of-fold predictions.
   With a ``select`` grid (e.g. ``{epochs: [20, 40], rank_weight: [0, 0.01]}``), each candidate is first
   cross-validated on the training data and the best (lowest CV MSE) is the recipe trained; inside the outer
   cross-validation the selection runs again within each outer training fold (nested), so the reported CV MSE
   does not see the videos that chose the hyperparameters.
2. Bootstrap aggregation (the 2019 team's bagging; their number of models is not stated, docs/engagement.md):
   ``bag_models`` models, each on a bootstrap resample (n draws with replacement) of all training videos,
   predictions averaged; the OUT-OF-BAG MSE scores each video with the models whose resample left it out.
   ``bootstrap: false`` trains every model on all videos (a seed ensemble).
3. The export: one fp32 safetensors file with the N state dicts, the standardisation statistics and the layout
   (feature set, segments, dim), read by `keenvision.engagement.load_engagement`; a JSON report beside it.

Lightning owns each model's loop (Adam, step decay at fractions of the epochs as in the 2019 code); runs are seconds
each on a CPU, so there are no checkpoints or resume.
"""

from __future__ import annotations

import itertools
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..core.data import data_root
from ..core.progress import progress_bar
from ..core.recipe import Section, recipe_defaults, typed_recipe
from ..core.training import build_trainer
from .baseline import fit_ridge
from .data import (
    EngagementFeatures,
    FeatureLayout,
    FeatureStandardiser,
    evaluate_predictions,
    intensity_level,
    learner_groups,
    load_features,
)
from .ensemble import EngagementEnsemble
from .losses import RANK_MARGIN, engagement_loss
from .model import MILEngagementRegressor


@dataclass
class EngagementModel(Section):
    """`MILEngagementRegressor`'s arguments."""

    hidden: int = 64
    lstm_layers: int = 2
    mlp: list[int] = field(default_factory=lambda: [128, 64, 32])
    dropout: float = 0.0
    input_mlp: list[int] = field(default_factory=list)
    across_segments: bool = False


@dataclass
class EngagementRecipe(Section):
    """An engagement recipe (configs/engagement/*.yaml), typed: `load_config` checks every key."""

    run_dir: str = "runs/engagement/openface_15seg"
    seed: int = 0
    # an NPZ path; a relative path that does not exist is looked up under the shared data folder ($KEEN_DATA)
    features: str = "engagement/emotiw2019_openface_15seg_train.npz"
    model: EngagementModel = field(default_factory=EngagementModel)
    standardise_clip: float = 5.0  # robust z-scores are clipped to +-this (OpenFace tracking failures, see data.py)
    # the 2019 code: Adam 2e-3, batch 12, 20 epochs, lr x0.1 at 30/50/80 % of the epochs, weight decay 1e-4
    batch_size: int = 12
    lr: float = 2.0e-3
    weight_decay: float = 1.0e-4
    epochs: int = 20
    lr_decay_at: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.8])
    lr_decay: float = 0.1
    rank_weight: float = 0.0  # 0: MSE only (as the 2019 code trained); > 0 adds the rank loss on the pooled features
    rank_margin: float = RANK_MARGIN
    bag_models: int = 10
    bootstrap: bool = True  # N models, each on a bootstrap resample (False: all data, other seeds)
    # the intensity blends the models' mean with ridge on segment mean+std (baseline.py): 0 models only, 1 ridge only
    ridge_weight: float = 0.0
    # face-recognition features of the same videos (a VGGFace2 NPZ) whose pseudo-learners (`learner_groups`) keep
    # each learner's videos in one fold of every CV; null: folds by video (optimistic: learners recur)
    learner_groups_from: str | None = None
    cv_folds: int = 5  # cross-validation of the recipe before the final training (0: skip)
    cv_repeats: int = 1
    select: dict[str, list] | None = None  # {key: [candidates]} chosen by CV on the training data (nested in the CV)
    select_folds: int = 4  # the selection's inner CV (single models: the grid is costly)
    select_bag_models: int = 1
    num_threads: int = 1
    accelerator: str = "cpu"
    precision: str = "32-true"
    export_name: str = "engagement_openface_15seg.safetensors"  # written into run_dir

    def __post_init__(self):
        unknown = [f"select.{key}" for key in self.select or {}
                   if key not in self.keys() and not (key.startswith("model.") and key[6:] in self.model.keys())]
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        if self.bag_models < 1:
            raise ValueError(f"bag_models must be >= 1, got {self.bag_models}")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError(f"cv_folds must be 0 (no cross-validation) or >= 2, got {self.cv_folds}")


DEFAULT_CONFIG = recipe_defaults(EngagementRecipe)
DEFAULT_MODEL = DEFAULT_CONFIG["model"]


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict:
    """`EngagementRecipe`'s defaults <- the YAML ``path`` <- ``overrides`` (None values skipped; a ``model`` dict
    updates the model keys), every key type-checked (one-line ValueError naming an unknown key or a wrong value);
    returned as a plain dict, the form `with_setting` varies and the export's metadata records."""
    return typed_recipe(EngagementRecipe, path, overrides).as_dict()


def with_setting(config: dict, key: str, value) -> dict:
    """A copy of ``config`` with ``key`` (``"epochs"`` or ``"model.hidden"``) set to ``value``."""
    config = {**config, "model": dict(config["model"])}
    if key.startswith("model."):
        config["model"][key[6:]] = value
    else:
        config[key] = value
    return config


def resolve_features_path(features: str | Path) -> Path:
    path = Path(features)
    if not path.is_file() and not path.is_absolute() and (data_root() / path).is_file():
        return data_root() / path
    return path


# --------------------------------------------------------------------------------------------- splits and bagging
def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index ``[N]`` in 0..folds-1: each level's videos shuffled (seeded) and dealt round-robin to the folds,
    so every fold holds each level in about the same proportion (levels 0 and 1 are rare: 5 and 28 of 146)."""
    rng = np.random.default_rng(seed)
    levels = intensity_level(labels)
    assignment = np.empty(len(labels), np.int64)
    offset = 0
    for level in range(4):
        members = np.flatnonzero(levels == level)
        rng.shuffle(members)
        # continue the round-robin where the previous level stopped: fold sizes differ by at most one
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return assignment


def grouped_stratified_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index ``[N]`` with every group (learner) whole in one fold: groups in a seeded order, largest first,
    each into the fold where it brings the level counts closest to an equal share (least squared excess)."""
    rng = np.random.default_rng(seed)
    levels = intensity_level(labels)
    names = rng.permutation(np.unique(groups))
    counts = {name: np.bincount(levels[groups == name], minlength=4) for name in names}
    names = sorted(names, key=lambda name: -counts[name].sum())  # stable: the seeded order breaks ties
    target = np.bincount(levels, minlength=4) / folds
    filled = np.zeros((folds, 4))
    fold_of = {}
    for name in names:
        cost = (((filled + counts[name] - target).clip(min=0)) ** 2).sum(1) + 1e-3 * filled.sum(1)
        fold_of[name] = int(np.argmin(cost + 1e-9 * rng.random(folds)))
        filled[fold_of[name]] += counts[name]
    return np.array([fold_of[name] for name in groups], np.int64)


def cv_folds(labels: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """`grouped_stratified_folds` when ``groups`` (learners) are known, else `stratified_folds`."""
    if groups is None:
        return stratified_folds(labels, folds, seed)
    return grouped_stratified_folds(labels, groups, folds, seed)


def bootstrap_resamples(count: int, models: int, seed: int) -> list[np.ndarray]:
    """``models`` bootstrap resamples of ``range(count)``: each ``count`` indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, count, count) for _ in range(models)]


def out_of_bag_predictions(predictions: np.ndarray, resamples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-bag estimate: ``predictions`` ``[M, N]`` (model m on video n), ``resamples`` the M training index
    sets -> ``(mean over the models whose resample excluded n [N] (NaN where every model saw it), count [N])``."""
    predictions = np.asarray(predictions, dtype=np.float64)
    out_of_bag = np.ones(predictions.shape, bool)
    for model, resample in enumerate(resamples):
        out_of_bag[model, np.unique(resample)] = False
    count = out_of_bag.sum(0)
    total = np.where(out_of_bag, predictions, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count


# ---------------------------------------------------------------------------------------------------- training
class EngagementModule(L.LightningModule):
    """One `MILEngagementRegressor` with MSE (+ rank loss), Adam and step decay at fractions of the epochs."""

    def __init__(self, config: dict, input_dim: int):
        super().__init__()
        self.config = config
        self.model = MILEngagementRegressor(input_dim, **config["model"])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(features)

    def training_step(self, batch, _):
        features, labels = batch
        _, _, pooled = self.model.embed(features)
        loss, parts = engagement_loss(self.model.head(pooled), labels, pooled, self.config["rank_weight"],
                                      self.config["rank_margin"])
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=len(labels))
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config["lr"],
                                     weight_decay=self.config["weight_decay"])
        epochs = self.config["epochs"]
        milestones = sorted({int(round(fraction * epochs)) for fraction in self.config["lr_decay_at"]})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=self.config["lr_decay"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def fit_model(features: np.ndarray, labels: np.ndarray, config: dict, seed: int) -> MILEngagementRegressor:
    """Train one model on standardised ``features`` ``[N, S, D]`` and ``labels`` ``[N]``; returns it in eval mode."""
    torch.manual_seed(seed)
    module = EngagementModule(config, features.shape[-1])
    dataset = TensorDataset(torch.from_numpy(np.ascontiguousarray(features, np.float32)),
                            torch.from_numpy(np.asarray(labels, np.float32)))
    loader = DataLoader(dataset, batch_size=config["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    # seconds-long fits, many per run: one device, no files, no bar
    trainer = build_trainer(config, None, progress=False, devices=1, max_epochs=config["epochs"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*treespec.*")  # a Lightning/torch deprecation, not ours
        trainer.fit(module, loader)
    return module.model.eval()


def fit_ensemble(features: np.ndarray, labels: np.ndarray, config: dict, seed: int,
                 layout: FeatureLayout | None = None,
                 groups: np.ndarray | None = None) -> tuple[EngagementEnsemble, list[np.ndarray]]:
    """The standardisation fitted on these (training) videos and ``bag_models`` models on bootstrap resamples of
    them (or on all of them, ``bootstrap: false``), and with ``ridge_weight`` > 0 a ridge member whose penalty a
    4-fold CV (by learner with ``groups``) on these videos chooses -> ``(ensemble, resamples)``."""
    standardiser = FeatureStandardiser.fit(features, config["standardise_clip"])
    standard = standardiser(features)
    if config["bootstrap"]:
        resamples = bootstrap_resamples(len(labels), config["bag_models"], seed)
    else:
        resamples = [np.arange(len(labels))] * config["bag_models"]
    models = [fit_model(standard[resample], labels[resample], config, seed * 1000 + index)
              for index, resample in enumerate(resamples)]
    layout = layout or FeatureLayout("unknown", features.shape[1], features.shape[2])
    ridge = None
    if config["ridge_weight"]:
        ridge = fit_ridge(features, labels, cv_folds(labels, 4, seed, groups), clip=config["standardise_clip"])
    return EngagementEnsemble(models, standardiser, layout, ridge=ridge, ridge_weight=config["ridge_weight"]), resamples


def member_predictions(ensemble: EngagementEnsemble, features: np.ndarray) -> np.ndarray:
    """``[M, N]``: each model's intensity on ``features`` (raw)."""
    standard = torch.from_numpy(ensemble.standardiser(features))
    with torch.no_grad():
        return np.stack([model(standard)[0].numpy() for model in ensemble.models])


def cross_validate(features: np.ndarray, labels: np.ndarray, config: dict, folds: int | None = None,
                   repeats: int | None = None, seed: int | None = None, nested_select: bool = True,
                   groups: np.ndarray | None = None) -> dict:
    """Stratified K-fold CV of the recipe (``repeats`` times with different fold seeds), by learner when ``groups``
    ([N] learner index, `learner_groups`) is given. Each fold: (selection by inner CV, also by learner, when
    ``config["select"]`` and ``nested_select``), standardisation and ensemble on the training folds, MSE on the
    held-out fold. Returns ``{"mse", "mse_std", "fold_mse", "mse_per_level", "count_per_level",
    "predictions" [repeats, N], "chosen"}``."""
    folds = folds or config["cv_folds"]
    repeats = repeats or config["cv_repeats"]
    seed = config["seed"] if seed is None else seed
    fold_mse, predictions, chosen = [], np.zeros((repeats, len(labels))), []
    # one bar for the outer folds; the inner (selection) CVs run inside them
    bar = progress_bar(desc="cross-validation", unit="fold", total=repeats * folds, enabled=nested_select)
    for repeat in range(repeats):
        assignment = cv_folds(labels, folds, seed + 7919 * repeat, groups)
        for fold in range(folds):
            train, held_out = assignment != fold, assignment == fold
            recipe = config
            if config.get("select") and nested_select:
                recipe, _ = select_hyperparameters(features[train], labels[train], config, seed + fold,
                                                   None if groups is None else groups[train])
                chosen.append({key: _get(recipe, key) for key in config["select"]})
            ensemble, _ = fit_ensemble(features[train], labels[train], recipe, seed + 100 * repeat + fold,
                                       groups=None if groups is None else groups[train])
            predictions[repeat, held_out] = ensemble.predict(features[held_out])[0]
            fold_mse.append(float(np.mean((predictions[repeat, held_out] - labels[held_out]) ** 2)))
            bar.update()
    bar.close()
    pooled = evaluate_predictions(predictions.reshape(-1), np.tile(labels, repeats))
    return {"mse": float(np.mean(fold_mse)), "mse_std": float(np.std(fold_mse)), "fold_mse": fold_mse,
            "mse_per_level": pooled["mse_per_level"], "count_per_level": pooled["count_per_level"],
            "predictions": predictions, "chosen": chosen}


def _get(config: dict, key: str):
    return config["model"][key[6:]] if key.startswith("model.") else config[key]


def select_hyperparameters(features: np.ndarray, labels: np.ndarray, config: dict, seed: int,
                           groups: np.ndarray | None = None) -> tuple[dict, list]:
    """Grid search of ``config["select"]`` by ``select_folds``-fold CV on these videos (by learner with
    ``groups``) with ``select_bag_models`` models per fold -> ``(the best config, [(setting, cv mse), ...])``."""
    grid = config["select"]
    keys = list(grid)
    scored = []
    for values in itertools.product(*(grid[key] for key in keys)):
        candidate = {**config, "select": None, "bag_models": config["select_bag_models"]}
        for key, value in zip(keys, values):
            candidate = with_setting(candidate, key, value)
        result = cross_validate(features, labels, candidate, config["select_folds"], 1, seed, nested_select=False,
                                groups=groups)
        scored.append((dict(zip(keys, values)), result["mse"]))
    best = min(scored, key=lambda item: item[1])[0]
    recipe = {**config, "select": None}
    for key, value in best.items():
        recipe = with_setting(recipe, key, value)
    return recipe, scored


def training_learner_groups(config: dict, labels: np.ndarray) -> np.ndarray | None:
    """`learner_groups` of the recipe's ``learner_groups_from`` NPZ (None when unset). ValueError when that file
    does not hold the same videos (count and labels) as the training features."""
    if not config["learner_groups_from"]:
        return None
    faces = load_features(resolve_features_path(config["learner_groups_from"]))
    if faces.labels.shape != labels.shape or not np.allclose(faces.labels, labels):
        raise ValueError(f"learner_groups_from {config['learner_groups_from']}: not the training videos (its "
                         f"{len(faces.labels)} labels differ from the features' {len(labels)})")
    return learner_groups(faces.features)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def train_engagement(config_path: str | Path | None, overrides: dict | None = None) -> Path:
    """Cross-validate (``cv_folds``), select (``select``), train the bagged ensemble on all videos of
    ``features`` and write ``<run_dir>/<export_name>`` plus ``<run_dir>/report.json``; returns the export's path."""
    config = load_config(config_path, overrides)
    torch.set_num_threads(config["num_threads"])
    _quiet_lightning()
    data: EngagementFeatures = load_features(resolve_features_path(config["features"]))
    features, labels = data.features, data.labels
    groups = training_learner_groups(config, labels)
    report: dict = {"layout": data.layout.as_metadata(), "videos": len(labels)}
    if groups is not None:
        report["learners"] = int(groups.max() + 1)
        print(f"cross-validation by learner: {groups.max() + 1} pseudo-learners from {config['learner_groups_from']}")
    if config["cv_folds"]:
        cv = cross_validate(features, labels, config, groups=groups)
        # the out-of-fold predictions too: recipes cross-validated on the same folds (same labels, learners and
        # seed) fuse by averaging them (benchmarks/engagement_ablation.py --reports)
        report["cv"] = {**{k: v for k, v in cv.items() if k != "predictions"}, "folds_by": "learner" if groups
                        is not None else "video", "seed": config["seed"], "predictions": cv["predictions"].tolist()}
        print(f"cross-validated MSE {cv['mse']:.4f} +- {cv['mse_std']:.4f} ({config['cv_folds']} folds x "
              f"{config['cv_repeats']}), per level {json.dumps(cv['mse_per_level'])}")
    recipe = config
    if config["select"]:
        recipe, scored = select_hyperparameters(features, labels, config, config["seed"], groups)
        report["selection"] = [{"setting": setting, "cv_mse": mse} for setting, mse in scored]
        print(f"selected {json.dumps({key: _get(recipe, key) for key in config['select']})}")
    ensemble, resamples = fit_ensemble(features, labels, recipe, config["seed"], data.layout, groups)
    metadata = {"config": json.dumps(recipe), "videos": str(len(labels)), "trained_on": str(config["features"])}
    if config["bootstrap"]:
        oob, count = out_of_bag_predictions(member_predictions(ensemble, features), resamples)
        covered = count > 0
        oob_metrics = evaluate_predictions(oob[covered], labels[covered])
        report["oob"] = {**oob_metrics, "videos_scored": int(covered.sum())}
        metadata["oob_mse"] = f"{oob_metrics['mse']:.6f}"
        print(f"out-of-bag MSE of the MIL models {oob_metrics['mse']:.4f} ({int(covered.sum())} of {len(labels)} "
              "videos scored)")
    if "cv" in report:
        metadata["cv_mse"] = f"{report['cv']['mse']:.6f}"
        metadata["cv_mse_std"] = f"{report['cv']['mse_std']:.6f}"
    run_dir = Path(config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    out = ensemble.save(run_dir / config["export_name"], metadata)
    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    return out


if __name__ == "__main__":
    from ..core.cli import train_main

    train_main("engagement")
