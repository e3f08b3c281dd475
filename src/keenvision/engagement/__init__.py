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

from .data import FeatureLayout, evaluate_predictions, intensity_level, load_features
from .ensemble import EngagementEnsemble, load_engagement
from .losses import engagement_loss, rank_loss
from .model import MILEngagementRegressor
from .openface import openface_csv_features, read_openface_csv, read_openpose
from .predict import EngagementPrediction, plot_timeline, predict_csv, predict_file, predict_video
from .video import track_face, video_segment_features


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
