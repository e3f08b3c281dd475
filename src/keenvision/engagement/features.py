"""Splitting a video's frames into S overlapping segments and summarising per-frame signals per segment.

The segmenting is the one of the EmotiW 2019 features this package is trained on (``littleZY/SML_EW_EmotiW2019``,
``utils.py``, ``parse_gaze_features``), so that features we compute line up with the shipped models:

    hops = int((S - 1) * (1 - overlap))       # overlap = 0.5 -> 7 hops for S = 15, 10 for S = 21
    k = frames // (1 + hops)                  # frames per segment; the last frames % (1 + hops) are not used
    segment i = [end_{i-1} - int(k * (1 - overlap)), k + int(k * (1 - overlap) * i))    (segment 0 starts at 0)

Short inputs (documented fallback): that scheme gives empty segments when ``k < 2``, i.e. for fewer than
``2 * (1 + hops)`` frames (16 for S = 15, 22 for S = 21). Such inputs are stretched to that length by repeating
frames (nearest-neighbour resampling of the frame index) and then segmented as usual, so every segment holds at
least one real frame; `Segmentation.repeated_frames` says it happened. Zero frames is an error.

Statistics skip frames without a face (``valid`` false); a segment with no valid frame gets zeros, and its
presence ratio (0) says so. Nothing here returns NaN or inf: every division is guarded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_SEGMENTS = 15
DEFAULT_OVERLAP = 0.5  # the 2019 features' alpha: consecutive segments share half their frames


@dataclass(frozen=True)
class Segmentation:
    """The frames of each segment: ``frame_indices[i]`` int64 indices into the input's frames (non-empty)."""

    frame_indices: tuple[np.ndarray, ...]
    frames: int  # length of the input
    repeated_frames: bool  # the short-input fallback was used

    def __len__(self) -> int:
        return len(self.frame_indices)

    @property
    def bounds(self) -> np.ndarray:
        """``[S, 2]`` int64: first and last+1 input frame of each segment."""
        return np.array([[indices[0], indices[-1] + 1] for indices in self.frame_indices], dtype=np.int64)


def minimum_frames(n_segments: int, overlap: float = DEFAULT_OVERLAP) -> int:
    """Fewest frames the segmenting uses without repeating frames: ``2 * (1 + int((S - 1) * (1 - overlap)))``."""
    return 2 * (1 + int((n_segments - 1) * (1 - overlap)))


def segment_frames(frames: int, n_segments: int = DEFAULT_SEGMENTS, overlap: float = DEFAULT_OVERLAP) -> Segmentation:
    """The 2019 features' overlapping segments of ``frames`` frames (see the module docstring)."""
    if n_segments < 1:
        raise ValueError(f"the number of segments must be >= 1, got {n_segments}")
    if not 0 <= overlap < 1:
        raise ValueError(f"segment overlap must be in [0, 1), got {overlap}")
    if frames < 1:
        raise ValueError("cannot segment an input with no frames")
    hops = int((n_segments - 1) * (1 - overlap))
    needed = minimum_frames(n_segments, overlap)
    repeated = frames < needed
    length = needed if repeated else frames
    # index map from the (possibly stretched) timeline back to input frames
    source = (np.arange(length) * frames // length).astype(np.int64) if repeated else np.arange(length)
    per_segment = length // (1 + hops)
    step = int((1 - overlap) * per_segment)
    segments, start = [], 0
    for index in range(n_segments):
        end = per_segment + int(per_segment * (1 - overlap) * index)
        segments.append(source[start:end])
        start = end - step
    return Segmentation(tuple(segments), frames, repeated)


def masked_mean_std(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std (``np.std``, ddof 0, as the 2019 features) over the rows of ``values`` ``[T, D]``
    where ``valid`` ``[T]`` is true; zeros where no row is valid."""
    values = np.asarray(values, dtype=np.float64)
    chosen = values[np.asarray(valid, dtype=bool)]
    if len(chosen) == 0:
        zeros = np.zeros(values.shape[1:], np.float64)
        return zeros, zeros.copy()
    return chosen.mean(0), chosen.std(0)


def safe_ratio(numerator, denominator) -> np.ndarray:
    """``numerator / denominator`` elementwise, 0 where the denominator is 0 or the result is not finite."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, np.float64), np.asarray(denominator, np.float64))
    out = np.zeros(numerator.shape, np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    out[~np.isfinite(out)] = 0.0
    return out


def finite(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN / inf replaced by 0 (last line of defence; the readers mark such frames invalid)."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class SegmentFeatures:
    """Per-segment features of one input: ``features`` float32 ``[S, D]``, their ``names`` (D), the feature set
    (``"openface"``: the 60-d layout of the shipped models; ``"keenvision-video"``: our own video features;
    ``"openpose-body"``), the segmentation, the share of frames with a face per segment, and notes (e.g. which
    features are approximations)."""

    features: np.ndarray
    names: tuple[str, ...]
    feature_set: str
    segmentation: Segmentation
    presence: np.ndarray  # [S] in [0, 1]
    fps: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def segment_seconds(self) -> np.ndarray | None:
        """``[S, 2]`` start and end time of each segment in seconds, or None without a frame rate."""
        return self.segmentation.bounds / self.fps if self.fps > 0 else None


def per_segment(signals: np.ndarray, valid: np.ndarray, segmentation: Segmentation, statistic) -> np.ndarray:
    """``statistic(signals[idx], valid[idx]) -> [D']`` for each segment, stacked ``[S, D']`` float32, finite."""
    rows = [np.asarray(statistic(signals[indices], valid[indices]), dtype=np.float64)
            for indices in segmentation.frame_indices]
    return finite(np.stack(rows)).astype(np.float32)


def presence_ratio(valid: np.ndarray, segmentation: Segmentation) -> np.ndarray:
    """``[S]`` float32: share of each segment's frames that are valid (had a face)."""
    valid = np.asarray(valid, dtype=bool)
    return np.array([valid[indices].mean() for indices in segmentation.frame_indices], dtype=np.float32)


def mean_std_features(signals: np.ndarray, valid: np.ndarray, segmentation: Segmentation) -> np.ndarray:
    """``[S, 2 * D]``: per segment, the mean then the std of each of the ``D`` signals over valid frames."""
    def statistic(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mean, std = masked_mean_std(values, mask)
        return np.concatenate([mean, std])

    return per_segment(np.asarray(signals, np.float64), np.asarray(valid, bool), segmentation, statistic)
