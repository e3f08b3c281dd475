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

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` and the CLI modules must not pay for torch
_EXPORTS = {  # submodule: the public names it defines
    ".data": ("FeatureLayout", "evaluate_predictions", "intensity_level", "load_features"),
    ".ensemble": ("EngagementEnsemble", "load_engagement"),
    ".losses": ("engagement_loss", "rank_loss"),
    ".model": ("MILEngagementRegressor",),
    ".openface": ("openface_csv_features", "read_openface_csv", "read_openpose"),
    ".predict": ("EngagementPrediction", "plot_timeline", "predict_csv", "predict_file", "predict_video"),
    ".video": ("track_face", "video_segment_features"),
    ".train": ("train_engagement",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
