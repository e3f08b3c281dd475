"""Engagement-intensity regression (EmotiW 2018/2019, Yang et al. ICMI'18, Wang et al. ICMI'19): a multi-instance
LSTM over a video's segments, MSE + rank loss, bootstrap-aggregated ensembles.

Public API:
    MILEngagementRegressor                      -- the model (segments -> intensity in [0, 1] and per-segment scores)
    EngagementEnsemble, load_engagement         -- a bagged ensemble; "engagement-openface-15" or an export's path
    load_features, FeatureLayout, intensity_level, evaluate_predictions
                                                -- the features NPZ, its layout, the 4 levels, the MSE metric
    engagement_loss, rank_loss                  -- the losses
    train_engagement                            -- the recipe (configs/engagement/*.yaml), cross-validation, bagging
    predict_file, predict_video, predict_csv, EngagementPrediction, plot_timeline
                                                -- intensity and per-segment timeline of a video or OpenFace CSV
    track_face, video_segment_features, openface_csv_features, read_openface_csv, read_openpose
                                                -- per-frame signals and per-segment features
"""

from pathlib import Path

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {
    "FeatureLayout": ".data",
    "evaluate_predictions": ".data",
    "intensity_level": ".data",
    "load_features": ".data",
    "EngagementEnsemble": ".ensemble",
    "load_engagement": ".ensemble",
    "engagement_loss": ".losses",
    "rank_loss": ".losses",
    "MILEngagementRegressor": ".model",
    "openface_csv_features": ".openface",
    "read_openface_csv": ".openface",
    "read_openpose": ".openface",
    "EngagementPrediction": ".predict",
    "plot_timeline": ".predict",
    "predict_csv": ".predict",
    "predict_file": ".predict",
    "predict_video": ".predict",
    "track_face": ".video",
    "video_segment_features": ".video",
}
lazy_exports(__name__, _EXPORTS)


def train_engagement(config_path: str | Path | None, overrides: dict | None = None) -> Path:
    """See `keenvision.engagement.train.train_engagement` (imported lazily: Lightning is slow to import)."""
    from .train import train_engagement as train

    return train(config_path, overrides)


__all__ = [
    "EngagementEnsemble",
    "EngagementPrediction",
    "FeatureLayout",
    "MILEngagementRegressor",
    "engagement_loss",
    "evaluate_predictions",
    "intensity_level",
    "load_engagement",
    "load_features",
    "openface_csv_features",
    "plot_timeline",
    "predict_csv",
    "predict_file",
    "predict_video",
    "rank_loss",
    "read_openface_csv",
    "read_openpose",
    "track_face",
    "train_engagement",
    "video_segment_features",
]
