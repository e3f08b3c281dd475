"""Engagement intensity of a video or an OpenFace CSV with a trained ensemble, and its per-segment timeline.

    prediction = predict_video("lecture.mp4")          # shipped "engagement-openface-15" by default
    prediction.intensity, prediction.level             # 0.71, 0.66
    prediction.per_segment                             # [15] segment scores in [0, 1]
    plot_timeline(prediction, "timeline.png")

Which features a model gets. A model is trained for one layout (feature set, segments S, dim D; see
`keenvision.engagement.FeatureLayout`); the input is segmented into that model's S segments and:

* an OpenFace CSV gives the 60-d ``"openface"`` features (`keenvision.engagement.openface`), exactly those of the
  training data for OpenFace 2.x files, partly approximated for files without eye landmarks;
* a video goes through our own pipeline (`keenvision.engagement.video`). No labelled videos are available to train
  a model on our own ``"keenvision-video"`` features, so for the shipped OpenFace models the video's track is mapped
  into the OpenFace layout (head pose from 5 points, gaze = head direction, see video.py): the prediction is then
  marked ``approximate`` -- the model never saw such features, so treat its number as indicative. A model trained on
  ``"keenvision-video"`` features (from `keen engagement features` on your labelled videos) gets those directly.

Any other layout is refused with a one-line error naming both layouts.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.io import is_video, write_atomic
from .data import LEVEL_VALUES, FeatureLayout
from .features import DEFAULT_OVERLAP, SegmentFeatures
from .openface import OPENFACE_FEATURE_SET, openface_csv_features
from .video import (
    DEFAULT_DETECT_EVERY,
    DEFAULT_DETECT_WIDTH,
    DEFAULT_MIN_FACE_SIZE,
    VIDEO_FEATURE_NAMES,
    VIDEO_FEATURE_SET,
    track_face,
    video_openface_features,
    video_segment_features,
)

DEFAULT_MODEL = "engagement-openface-15"
LEVEL_NAMES = ("disengaged", "barely engaged", "engaged", "highly engaged")  # EmotiW's levels 0..3


@dataclass
class EngagementPrediction:
    """One input's result: ``intensity`` in [0, 1], ``per_segment`` [S] scores, the segments' ``presence`` [S] (share
    of frames with a face), ``segment_frames`` [S, 2] (first, last+1 frame) and, with a frame rate,
    ``segment_seconds`` [S, 2]; ``approximate`` when the features only approximate the model's training features."""

    source: str
    input_kind: str  # "video" or "openface-csv"
    model: str
    layout: str
    intensity: float
    per_segment: np.ndarray
    presence: np.ndarray
    segment_frames: np.ndarray
    segment_seconds: np.ndarray | None
    frames: int
    fps: float
    approximate: bool
    notes: list[str] = field(default_factory=list)

    @property
    def level_index(self) -> int:
        """The nearest EmotiW level 0..3."""
        return int(np.abs(np.asarray(LEVEL_VALUES) - self.intensity).argmin())

    @property
    def level(self) -> float:
        return LEVEL_VALUES[self.level_index]

    def to_dict(self) -> dict:
        return {
            "source": self.source, "input": self.input_kind, "model": self.model, "layout": self.layout,
            "intensity": round(float(self.intensity), 4), "level": self.level,
            "level_name": LEVEL_NAMES[self.level_index], "approximate": self.approximate,
            "frames": self.frames, "fps": round(float(self.fps), 3),
            "per_segment": [round(float(v), 4) for v in self.per_segment],
            "presence": [round(float(v), 3) for v in self.presence],
            "segment_frames": self.segment_frames.tolist(),
            "segment_seconds": None if self.segment_seconds is None
            else [[round(float(a), 3), round(float(b), 3)] for a, b in self.segment_seconds],
            "notes": list(self.notes),
        }


def resolve_model(model):
    """An `EngagementEnsemble` as given, or loaded from a shipped name / .safetensors path."""
    from .ensemble import EngagementEnsemble, load_engagement

    return model if isinstance(model, EngagementEnsemble) else load_engagement(model)


def _model_name(model) -> str:
    return model if isinstance(model, str) else str(model) if isinstance(model, Path) else "given ensemble"


def video_feature_set_for(layout: FeatureLayout) -> str:
    """Which of our video feature sets fits a model's layout: ``"openface"`` (the mapping) or
    ``"keenvision-video"``; ValueError when neither does."""
    unknown = layout.feature_set == "unknown"
    if layout.feature_set == VIDEO_FEATURE_SET or (unknown and layout.dim == len(VIDEO_FEATURE_NAMES)):
        return VIDEO_FEATURE_SET
    if layout.feature_set == OPENFACE_FEATURE_SET or (unknown and layout.dim == 60):
        return OPENFACE_FEATURE_SET
    raise ValueError(f"no video features for a model of layout {layout}: a video gives '{OPENFACE_FEATURE_SET}' "
                     f"(60-d, approximated) or '{VIDEO_FEATURE_SET}' ({len(VIDEO_FEATURE_NAMES)}-d) features")


def check_csv_layout(layout: FeatureLayout) -> None:
    """ValueError unless the model takes the 60-d OpenFace features an OpenFace CSV gives."""
    if layout.feature_set not in (OPENFACE_FEATURE_SET, "unknown") or layout.dim != 60:
        raise ValueError(f"an OpenFace CSV gives '{OPENFACE_FEATURE_SET}' 60-d features; the model takes {layout}")


def predict_features(features: SegmentFeatures, model=DEFAULT_MODEL, source: str = "", input_kind: str = "",
                     approximate: bool = False) -> EngagementPrediction:
    """Score per-segment features ``[S, D]`` with an ensemble (refused unless they fit its layout)."""
    ensemble = resolve_model(model)
    intensity, segments = ensemble.predict(features.features[None], feature_set=features.feature_set)
    seconds = features.segment_seconds
    return EngagementPrediction(
        source=source, input_kind=input_kind, model=_model_name(model), layout=str(ensemble.layout),
        intensity=float(intensity[0]), per_segment=np.asarray(segments[0], np.float32),
        presence=features.presence, segment_frames=features.segmentation.bounds, segment_seconds=seconds,
        frames=features.segmentation.frames, fps=features.fps, approximate=approximate,
        notes=list(features.notes) + (["short input: frames repeated to fill the segments"]
                                      if features.segmentation.repeated_frames else []))


def predict_csv(path: str | Path, model=DEFAULT_MODEL, include_failed_frames: bool = False,
                overlap: float = DEFAULT_OVERLAP) -> EngagementPrediction:
    """Engagement from an OpenFace CSV (60-d OpenFace features; approximate for CSVs without eye landmarks)."""
    ensemble = resolve_model(model)
    layout = ensemble.layout
    check_csv_layout(layout)
    features = openface_csv_features(path, layout.segments, overlap, include_failed_frames)
    approximate = any("approximated" in note for note in features.notes)
    prediction = predict_features(features, ensemble, str(path), "openface-csv", approximate)
    prediction.model = _model_name(model)
    return prediction


def predict_video(path: str | Path, model=DEFAULT_MODEL, detect_every: int = DEFAULT_DETECT_EVERY, detector=None,
                  min_face_size: float = DEFAULT_MIN_FACE_SIZE, detect_width: int = DEFAULT_DETECT_WIDTH,
                  max_frames: int | None = None, overlap: float = DEFAULT_OVERLAP,
                  progress: bool = False) -> EngagementPrediction:
    """Engagement from a video file through our face pipeline (`keenvision.engagement.video.track_face`), with the
    features the model's layout asks for (see the module docstring); ``progress``: a bar over the frames."""
    ensemble = resolve_model(model)
    feature_set = video_feature_set_for(ensemble.layout)  # refuse before the (slower) video pass
    track = track_face(path, detect_every=detect_every, detector=detector, min_face_size=min_face_size,
                       detect_width=detect_width, max_frames=max_frames, progress=progress)
    if feature_set == OPENFACE_FEATURE_SET:
        features = video_openface_features(track, ensemble.layout.segments, overlap)
    else:
        features = video_segment_features(track, ensemble.layout.segments, overlap)
    prediction = predict_features(features, ensemble, str(path), "video", feature_set == OPENFACE_FEATURE_SET)
    prediction.model = _model_name(model)
    if not track.present.any():
        prediction.notes.append("no face found in any frame: the score reflects absence only")
    return prediction


def predict_file(path: str | Path, model=DEFAULT_MODEL, **video_options) -> EngagementPrediction:
    """`predict_csv` for ``.csv`` files, `predict_video` for video files (by suffix)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return predict_csv(path, model)
    if is_video(path):
        return predict_video(path, model, **video_options)
    raise ValueError(f"{path}: expected a video (.mp4, .mov, ...) or an OpenFace .csv file")


def plot_timeline(prediction: EngagementPrediction, path: str | Path, title: str | None = None) -> Path:
    """A PNG of the per-segment scores over time (seconds when the frame rate is known, else frames), the video's
    intensity as a dashed line, EmotiW's four levels as grid lines and the share of frames with a face below.
    Written atomically."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the user's backend alone

    spans = prediction.segment_seconds if prediction.segment_seconds is not None else prediction.segment_frames
    unit = "s" if prediction.segment_seconds is not None else "frame"
    spans = np.asarray(spans, np.float64)
    centres = spans.mean(1)
    figure = Figure(figsize=(8, 3.6), dpi=100)
    axes, presence_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for value in LEVEL_VALUES:
        axes.axhline(value, color="#dddddd", linewidth=0.8, zorder=0)
    for (start, end), score in zip(spans, prediction.per_segment):
        axes.plot([start, end], [score, score], color="#9ecae1", linewidth=1, zorder=1)  # the segment's span
    axes.plot(centres, prediction.per_segment, "o-", color="#08519c", label="segment score", zorder=2)
    axes.axhline(prediction.intensity, color="#e6550d", linestyle="--",
                 label=f"video: {prediction.intensity:.2f} ({LEVEL_NAMES[prediction.level_index]})")
    axes.set_ylim(-0.05, 1.05)
    axes.set_yticks(LEVEL_VALUES)
    axes.set_ylabel("engagement")
    axes.legend(loc="lower left", fontsize=8, framealpha=0.8)
    name = Path(prediction.source).name or "input"
    axes.set_title(title or f"{name}: {prediction.model}" + (" (approximate features)" if prediction.approximate
                                                               else ""), fontsize=9)
    presence_axes.bar(centres, prediction.presence, width=np.maximum(spans[:, 1] - spans[:, 0], 1e-6) * 0.5,
                      color="#74c476")
    presence_axes.set_ylim(0, 1.05)
    presence_axes.set_ylabel("face", fontsize=8)
    presence_axes.set_xlabel(f"time ({unit})")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
    return Path(path)


def plot_calibration(predictions: dict[str, np.ndarray], labels: np.ndarray, path: str | Path,
                     title: str = "") -> Path:
    """A PNG of predicted against true intensity per level, one column of points per model (``predictions``: name
    -> ``[N]``) at each of the four levels, the mean prediction of each level joined by a line, and the diagonal a
    calibrated model would follow. Written atomically."""
    from matplotlib.figure import Figure

    from .data import intensity_level

    labels = np.asarray(labels, np.float64)
    levels = intensity_level(labels)
    figure = Figure(figsize=(6, 4.5), dpi=100)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="#bbbbbb", linestyle="--", linewidth=1, label="calibrated")
    width = 0.6 / max(1, len(predictions))
    colours = ("#08519c", "#e6550d", "#31a354", "#756bb1", "#636363")
    rng = np.random.default_rng(0)  # jitter only spreads the points sideways, for legibility
    for index, (name, values) in enumerate(predictions.items()):
        values = np.asarray(values, np.float64)
        offset = (index - (len(predictions) - 1) / 2) * width * 0.3
        colour = colours[index % len(colours)]
        means = []
        for level, value in enumerate(LEVEL_VALUES):
            chosen = levels == level
            if not chosen.any():
                means.append(np.nan)
                continue
            x = value + offset + rng.uniform(-0.02, 0.02, chosen.sum())
            axes.scatter(x, values[chosen], s=10, color=colour, alpha=0.35)
            means.append(values[chosen].mean())
        mse = float(np.mean((values - labels) ** 2))
        axes.plot(np.asarray(LEVEL_VALUES) + offset, means, "o-", color=colour, label=f"{name} (MSE {mse:.4f})")
    axes.set_xticks(LEVEL_VALUES)
    axes.set_yticks(LEVEL_VALUES)
    axes.set_xlim(-0.1, 1.1)
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlabel("true level")
    axes.set_ylabel("predicted intensity")
    axes.set_title(title or f"predicted vs true per level ({len(labels)} videos)", fontsize=9)
    axes.legend(loc="upper left", fontsize=8, framealpha=0.8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
    return Path(path)
