"""The bootstrap-aggregated ensemble: N `MILEngagementRegressor` s with the standardisation they were trained with,
for one feature layout, optionally blended with a ridge member; saved as one safetensors file and loaded with
`load_engagement`.

File format (``format = keenvision.engagement`` in the metadata): tensors ``model<i>.<parameter>`` for i < N and
``standardiser.center`` / ``standardiser.scale`` ``[D]``; metadata ``architecture`` (JSON constructor arguments),
``models`` (N), ``clip``, the layout (``feature_set``, ``segments``, ``dim``) and free-form strings (OOB MSE, the
training config). With a ridge member: tensors ``ridge.center``, ``ridge.scale`` ``[D]``, ``ridge.weights`` ``[2D]``,
``ridge.bias`` ``[1]`` and metadata ``ridge_weight`` (its share of the intensity), ``ridge_penalty``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.registry import shipped_files
from ..core.weights import load_into, open_weights, save_weights
from .baseline import RidgeEngagement
from .data import FeatureLayout, FeatureStandardiser
from .model import MILEngagementRegressor

SHIPPED = shipped_files("engagement")  # name -> file under keenvision/weights/, from weights/registry.json
FORMAT = "keenvision.engagement"


class EngagementEnsemble:
    """Averages the intensity and per-segment scores of its models on standardised features of one layout; with a
    ``ridge`` member the intensity is ``(1 - ridge_weight) * models' mean + ridge_weight * ridge`` (the per-segment
    scores stay the models': ridge sees only whole videos)."""

    def __init__(self, models: Sequence[MILEngagementRegressor], standardiser: FeatureStandardiser,
                 layout: FeatureLayout, metadata: dict[str, str] | None = None, ridge: RidgeEngagement | None = None,
                 ridge_weight: float = 0.0):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if not 0 <= ridge_weight <= 1 or (ridge_weight and ridge is None):
            raise ValueError(f"ridge_weight must be in [0, 1] and needs a ridge member, got {ridge_weight}")
        self.models = [model.eval() for model in models]
        self.standardiser, self.layout = standardiser, layout
        self.metadata = dict(metadata or {})
        self.ridge, self.ridge_weight = ridge, float(ridge_weight)

    def __len__(self) -> int:
        return len(self.models)

    def check_layout(self, features: np.ndarray, feature_set: str | None = None) -> None:
        """ValueError (one line, naming both layouts) unless ``features`` is ``[N, segments, dim]`` of this
        ensemble (and ``feature_set``, when given and known, is its feature set)."""
        shape = tuple(np.shape(features))
        given_set = feature_set or "unknown"
        if len(shape) == 3:
            given = FeatureLayout(given_set, shape[1], shape[2])
            same_set = given_set in (self.layout.feature_set, "unknown") or self.layout.feature_set == "unknown"
            if (given.segments, given.dim) == (self.layout.segments, self.layout.dim) and same_set:
                return
            raise ValueError(f"features of layout {given} do not fit this engagement model, trained on {self.layout}")
        raise ValueError(f"features must be [videos, segments, dim] ({self.layout}), got shape {shape}")

    @torch.no_grad()
    def predict(self, features, feature_set: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``features`` ``[N, S, D]`` (raw, as in the NPZ) -> ``(intensity [N], per-segment scores [N, S])``,
        float32 NumPy arrays in [0, 1], the mean over the ensemble's models."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        self.check_layout(features, feature_set)
        inputs = torch.from_numpy(self.standardiser(features))
        intensity = torch.zeros(inputs.shape[0])
        segments = torch.zeros(inputs.shape[:2])
        for model in self.models:
            model_intensity, model_segments = model(inputs)
            intensity += model_intensity
            segments += model_segments
        intensity = (intensity / len(self.models)).numpy()
        if self.ridge_weight:
            ridge = self.ridge.predict(features).astype(np.float32)
            intensity = (1 - self.ridge_weight) * intensity + self.ridge_weight * ridge
        return intensity.astype(np.float32), (segments / len(self.models)).numpy()

    def save(self, path: str | Path, extra: dict[str, str] | None = None) -> Path:
        """Write the ensemble (fp32) to ``path``; ``extra`` strings join the metadata."""
        state = {f"model{index}.{key}": value.float().clone() for index, model in enumerate(self.models)
                 for key, value in model.state_dict().items()}
        state["standardiser.center"] = torch.from_numpy(np.asarray(self.standardiser.center, np.float32))
        state["standardiser.scale"] = torch.from_numpy(np.asarray(self.standardiser.scale, np.float32))
        metadata = {**self.metadata, **(extra or {}), "format": FORMAT, "models": str(len(self.models)),
                    "architecture": json.dumps(self.models[0].architecture()), "clip": repr(self.standardiser.clip),
                    **self.layout.as_metadata()}
        if self.ridge is not None:
            state["ridge.center"] = torch.from_numpy(np.asarray(self.ridge.standardiser.center, np.float32))
            state["ridge.scale"] = torch.from_numpy(np.asarray(self.ridge.standardiser.scale, np.float32))
            state["ridge.weights"] = torch.from_numpy(np.asarray(self.ridge.weights, np.float32))
            state["ridge.bias"] = torch.tensor([self.ridge.bias], dtype=torch.float32)
            metadata.update(ridge_weight=repr(self.ridge_weight), ridge_penalty=repr(self.ridge.penalty))
        save_weights(state, path, metadata)
        return Path(path)


def load_engagement(name_or_path: str | Path = "engagement-openface-15") -> EngagementEnsemble:
    """An `EngagementEnsemble` from a shipped name (``"engagement-openface-15"``, ``"engagement-openface-21"``) or
    the path of a ``.safetensors`` export of `keenvision.engagement.train`."""
    weights = open_weights(name_or_path, "engagement", "engagement",
                           "`keen engagement train --config configs/engagement/openface_15seg.yaml`", format=FORMAT)
    path, metadata, state = weights.path, weights.metadata, weights.state()
    architecture = json.loads(metadata["architecture"])
    models = []
    for index in range(int(metadata["models"])):
        model = MILEngagementRegressor(**architecture)
        load_into(model, {k[len(f"model{index}."):]: v for k, v in state.items() if k.startswith(f"model{index}.")},
                  f"{path} (model {index})")
        models.append(model)
    standardiser = FeatureStandardiser(state["standardiser.center"].numpy(), state["standardiser.scale"].numpy(),
                                       float(metadata["clip"]))
    ridge = None
    if "ridge.weights" in state:
        ridge = RidgeEngagement(FeatureStandardiser(state["ridge.center"].numpy(), state["ridge.scale"].numpy(),
                                                    float(metadata["clip"])),
                                state["ridge.weights"].double().numpy(), float(state["ridge.bias"][0]),
                                float(metadata.get("ridge_penalty", "nan")))
    known = {"format", "models", "architecture", "clip", "feature_set", "segments", "dim", "ridge_weight",
             "ridge_penalty"}
    return EngagementEnsemble(models, standardiser, FeatureLayout.from_metadata(metadata),
                              {k: v for k, v in metadata.items() if k not in known}, ridge,
                              float(metadata.get("ridge_weight", 0.0)))


def load(name_or_path: str | Path = "engagement-openface-15", device: str | None = None) -> EngagementEnsemble:
    """The system contract's loader: `load_engagement`. The ensembles' models are small LSTMs that run on the CPU
    (``device`` is accepted for the contract and not used)."""
    return load_engagement(name_or_path)


def shipped_for(layout: FeatureLayout) -> str:
    """The shipped model of a features layout (``engagement-openface-15`` ...); ValueError when none ships."""
    name = f"engagement-{layout.feature_set}-{layout.segments}"
    if name not in SHIPPED:
        raise ValueError(f"no shipped model for {layout} features; give --weights (a .safetensors export)")
    return name


def evaluate_files(features: Sequence[str | Path], weights: Sequence[str | Path] | None = None,
                   ) -> tuple[list[dict], dict[str, np.ndarray], np.ndarray]:
    """Score an ensemble on each labelled features file (``weights[i]`` for ``features[i]``, default the shipped
    model of the file's layout), its ridge member alone beside it, and with several files of the same videos their
    fusion (the mean of the ensembles' predictions). Returns ``(rows, predictions by name, labels)``, a row being
    `evaluate_predictions`' metrics with ``name``, ``features`` and ``layout``."""
    from .data import evaluate_predictions, load_features

    if weights and len(weights) != len(features):
        raise ValueError(f"give one --weights per --features ({len(weights)} for {len(features)})")
    rows, predictions, labels = [], {}, None
    for index, path in enumerate(features):
        data = load_features(path)
        if labels is not None and (data.labels.shape != labels.shape or not np.allclose(data.labels, labels)):
            raise ValueError(f"--features {path}: not the videos of {features[0]} (labels differ); fusion needs the "
                             "same videos in the same order")
        labels = data.labels
        name = str(weights[index] if weights else shipped_for(data.layout))
        ensemble = load_engagement(name)
        predictions[name], _ = ensemble.predict(data.features, feature_set=data.layout.feature_set)
        rows.append({"name": name, "features": str(path), "layout": str(data.layout),
                     **evaluate_predictions(predictions[name], labels)})
        if ensemble.ridge is not None:  # the simple baseline inside the ensemble, scored on its own beside it
            rows.append({"name": f"{name}: ridge member alone", "features": str(path), "layout": str(data.layout),
                         **evaluate_predictions(ensemble.ridge.predict(data.features), labels)})
    if len(predictions) > 1:
        predictions["fused"] = np.mean(list(predictions.values()), 0)
        rows.append({"name": "fused (mean of the ensembles)", "features": None, "layout": None,
                     **evaluate_predictions(predictions["fused"], labels)})
    return rows, predictions, labels
