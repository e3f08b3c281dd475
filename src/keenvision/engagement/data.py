"""Per-segment engagement features: the NPZ reader, the 4 intensity levels, standardisation and the metric.

An engagement NPZ holds ``features`` ``[N, S, D]`` (N videos, S segments, D features per segment) and, for training
or evaluation, ``labels`` ``[N]`` in {0, 0.33, 0.66, 1} (EmotiW's four engagement levels, docs/engagement.md).
The feature set's name comes from an optional ``feature_set`` string in the file, else from the file name
(``emotiw2019_<set>_<S>seg_*.npz``), else "unknown". A model is trained for one layout (feature set, S, D) and
refuses another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

# EmotiW's engagement levels 0..3 ("disengaged" .. "highly engaged") as the regression targets of the data set
LEVEL_VALUES = (0.0, 0.33, 0.66, 1.0)
LEVEL_NAMES = ("0", "0.33", "0.66", "1")
_LEVEL_TOLERANCE = 0.1  # labels are stored as 0.33 / 0.66 (not 1/3, 2/3); anything farther from a level is an error


@dataclass(frozen=True)
class FeatureLayout:
    """What a model takes: the feature set's name, segments per video and features per segment."""

    feature_set: str
    segments: int
    dim: int

    def __str__(self) -> str:
        name = "" if self.feature_set == "unknown" else f"{self.feature_set} "
        return f"{name}{self.segments} segments x {self.dim}"

    def as_metadata(self) -> dict[str, str]:
        return {"feature_set": self.feature_set, "segments": str(self.segments), "dim": str(self.dim)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> FeatureLayout:
        return cls(metadata["feature_set"], int(metadata["segments"]), int(metadata["dim"]))


class EngagementFeatures(NamedTuple):
    """``features`` float32 ``[N, S, D]``, ``labels`` float32 ``[N]`` (None when the file has none), ``layout``."""

    features: np.ndarray
    labels: np.ndarray | None
    layout: FeatureLayout


def _feature_set_name(path: Path, stored) -> str:
    if stored is not None:
        return str(np.asarray(stored).item())
    match = re.search(r"(?:^|_)([a-z0-9]+)_(\d+)seg", path.stem.lower())
    return match.group(1) if match else "unknown"


def load_features(path: str | Path, require_labels: bool = True) -> EngagementFeatures:
    """Read an engagement NPZ -> ``(features [N, S, D] float32, labels [N] float32 | None, FeatureLayout)``.

    Raises ValueError with the reason for a file without ``features`` (or without ``labels`` when
    ``require_labels``), features that are not 3-d, labels whose count differs from the videos', labels outside the
    four levels, and NaN/inf values (refused, with their count: a model would silently turn them into NaN scores).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such features file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npz file ({error})") from None
    with archive:
        keys = set(archive.files)
        if "features" not in keys:
            raise ValueError(f"{path} has no 'features' array (keys: {sorted(keys)})")
        if require_labels and "labels" not in keys:
            raise ValueError(f"{path} has no 'labels' array (keys: {sorted(keys)})")
        features = np.asarray(archive["features"], dtype=np.float32)
        labels = np.asarray(archive["labels"], dtype=np.float32) if "labels" in keys else None
        stored_name = archive["feature_set"] if "feature_set" in keys else None
    if features.ndim != 3:
        raise ValueError(f"{path}: features must be [videos, segments, dim], got shape {features.shape}")
    if min(features.shape) == 0:
        raise ValueError(f"{path}: features are empty, shape {features.shape}")
    bad = int((~np.isfinite(features)).sum())
    if bad:
        raise ValueError(f"{path}: features hold {bad} NaN/inf values; refusing them (re-extract or impute first)")
    if labels is not None:
        if labels.shape != (features.shape[0],):
            raise ValueError(f"{path}: labels must be [{features.shape[0]}] (one per video), got shape {labels.shape}")
        bad = int((~np.isfinite(labels)).sum())
        if bad:
            raise ValueError(f"{path}: labels hold {bad} NaN/inf values")
        intensity_level(labels)  # raises for values outside the four levels
    layout = FeatureLayout(_feature_set_name(path, stored_name), features.shape[1], features.shape[2])
    return EngagementFeatures(features, labels, layout)


def intensity_level(label):
    """The level index 0..3 of an intensity label (0, 0.33, 0.66, 1 -> 0, 1, 2, 3); a float gives an int, an array
    an int64 array. ValueError for values farther than 0.1 from every level."""
    values = np.asarray(label, dtype=np.float64)
    distance = np.abs(values[..., None] - np.asarray(LEVEL_VALUES))
    if values.size and distance.min(-1).max() > _LEVEL_TOLERANCE:
        worst = values.reshape(-1)[distance.min(-1).reshape(-1).argmax()]
        raise ValueError(f"label {worst:g} is not one of the engagement levels {LEVEL_VALUES}")
    levels = distance.argmin(-1).astype(np.int64)
    return int(levels) if levels.ndim == 0 else levels


@dataclass(frozen=True)
class FeatureStandardiser:
    """Robust per-feature standardisation ``clip((x - center) / scale, -clip, clip)``.

    Why robust: OpenFace columns hold tracking failures of up to 7e6 among values of ~1-800 (the 2019 training
    NPZ), which would set a mean/std standardisation's scale. The center is the median and the scale the
    inter-quartile range / 1.349 (the std of a normal), both over all segments of the TRAINING videos only (fit
    on the training folds in cross-validation), and standardised values are clipped to ``[-clip, clip]``.
    """

    center: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    clip: float = 5.0

    @classmethod
    def fit(cls, features: np.ndarray, clip: float = 5.0) -> FeatureStandardiser:
        """Statistics of ``features`` ``[N, S, D]`` (or ``[M, D]``) over all but the last axis."""
        flat = np.asarray(features, dtype=np.float64).reshape(-1, np.shape(features)[-1])
        low, center, high = np.percentile(flat, [25, 50, 75], axis=0)
        scale = (high - low) / 1.349
        fallback = flat.std(0)  # a feature constant over its middle half: use the std, else 1
        scale = np.where(scale > 1e-8, scale, np.where(fallback > 1e-8, fallback, 1.0))
        return cls(center.astype(np.float32), scale.astype(np.float32), float(clip))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        standard = (np.asarray(features, dtype=np.float32) - self.center) / self.scale
        return np.clip(standard, -self.clip, self.clip).astype(np.float32)


def evaluate_predictions(predictions, labels) -> dict:
    """EmotiW's metric: ``{"mse": mean squared error, "mse_per_level": {"0": .., "0.33": .., "0.66": .., "1": ..},
    "count_per_level": {...}, "mean_prediction_per_level": {...}}`` (the last is the calibration: a model whose
    predictions collapse to the mean has the same mean prediction at every level); a level without videos has
    None."""
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if predictions.shape != labels.shape or not labels.size:
        raise ValueError(f"need as many predictions as labels (>0), got {predictions.size} and {labels.size}")
    squared = (predictions - labels) ** 2
    levels = intensity_level(labels)
    per_level, counts, means = {}, {}, {}
    for index, name in enumerate(LEVEL_NAMES):
        chosen = levels == index
        counts[name] = int(chosen.sum())
        per_level[name] = float(squared[chosen].mean()) if chosen.any() else None
        means[name] = float(predictions[chosen].mean()) if chosen.any() else None
    return {"mse": float(squared.mean()), "mse_per_level": per_level, "count_per_level": counts,
            "mean_prediction_per_level": means}


LEARNER_SIMILARITY = 0.7  # centred cosine of two videos' mean VGGFace2 features above this: the same learner


def learner_groups(face_features: np.ndarray, threshold: float = LEARNER_SIMILARITY) -> np.ndarray:
    """Pseudo-learner index ``[N]`` per video from face-recognition features ``[N, S, D]`` (VGGFace2): videos whose
    mean features (centred over the N videos, unit length) have cosine similarity above ``threshold`` are linked,
    and each connected set of videos is one learner.

    Why: the EmotiW files carry no learner ids, yet the same learners recur across training videos (on the 146
    2019 training videos the pairwise similarities split into two modes, below 0.5 and above 0.8; 0.7 gives 59
    learners, up to 8 videos each) and a learner's label explains about half the label variance. Folds that split a
    learner's videos reward recognising the learner; folds by learner measure new learners, as EmotiW's validation
    split does.
    """
    features = np.asarray(face_features, dtype=np.float64)
    if features.ndim != 3:
        raise ValueError(f"face features must be [videos, segments, dim], got shape {features.shape}")
    means = features.mean(1)
    means = means - means.mean(0)
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    from scipy.sparse.csgraph import connected_components

    _, groups = connected_components((means @ means.T) > threshold, directed=False)
    return groups.astype(np.int64)


def save_features(path: str | Path, results: list, sources: list[str | Path], n_segments: int,
                  overlap: float) -> tuple[int, int, int]:
    """Write per-segment features of several inputs (`features.SegmentFeatures` of one feature set) as the NPZ
    `load_features` reads: ``features [N, S, D]``, ``feature_set``, ``names``, ``paths``, ``presence [N, S]``,
    ``segment_frames [N, S, 2]``, ``fps [N]`` and a description; written atomically. Returns the features' shape."""
    import io

    from ..core.io import write_atomic

    first = results[0]
    arrays = {
        "features": np.stack([result.features for result in results]).astype(np.float32),
        "feature_set": np.array(first.feature_set), "names": np.array(first.names),
        "paths": np.array([str(source) for source in sources]),
        "presence": np.stack([result.presence for result in results]),
        "segment_frames": np.stack([result.segmentation.bounds for result in results]),
        "fps": np.array([result.fps for result in results], np.float64),
        "description": np.array(f"keenvision engagement features: {first.feature_set}, {n_segments} segments "
                                f"(overlap {overlap}); per input notes: "
                                + " | ".join("; ".join(result.notes) for result in results)),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())
    return arrays["features"].shape
