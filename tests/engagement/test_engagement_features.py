"""Segmenting (the 2019 features' overlapping scheme, the short-input fallback) and the NaN-free statistics."""

from __future__ import annotations

import numpy as np
import pytest

from keenvision.engagement.features import (
    masked_mean_std,
    mean_std_features,
    minimum_frames,
    presence_ratio,
    safe_ratio,
    segment_frames,
)


def reference_bounds(length: int, n_segments: int, alpha: float) -> list[tuple[int, int]]:
    """The loop of SML_EW_EmotiW2019 utils.py parse_gaze_features, transcribed."""
    indexing = int((n_segments - 1) * (1 - alpha))
    k_value = length // (1 + indexing)
    bounds, index_st = [], 0
    for idx in range(n_segments):
        index_ed = k_value + int(k_value * (1 - alpha) * idx)
        bounds.append((index_st, index_ed))
        index_st = index_ed - int((1 - alpha) * k_value)
    return bounds


@pytest.mark.parametrize("length", [9000, 7301, 1000, 101, 22, 16])
@pytest.mark.parametrize("n_segments", [15, 21])
def test_segments_match_the_2019_code(length, n_segments):
    length = max(length, minimum_frames(n_segments))  # shorter inputs take the fallback (tested below)
    segmentation = segment_frames(length, n_segments, 0.5)
    expected = reference_bounds(length, n_segments, 0.5)
    assert len(segmentation) == n_segments and not segmentation.repeated_frames
    for indices, (start, end) in zip(segmentation.frame_indices, expected):
        assert indices.tolist() == list(range(start, end))
    assert segmentation.bounds.tolist() == [list(b) for b in expected]


def test_minimum_frames_is_where_the_scheme_stops_giving_empty_segments():
    for n_segments in (15, 21):
        needed = minimum_frames(n_segments)
        assert all(end > start for start, end in reference_bounds(needed, n_segments, 0.5))
        assert any(end <= start for start, end in reference_bounds(needed - 1, n_segments, 0.5))


@pytest.mark.parametrize("length", [1, 5, 15])
def test_short_inputs_repeat_frames(length):
    segmentation = segment_frames(length, 15)
    assert segmentation.repeated_frames and len(segmentation) == 15
    for indices in segmentation.frame_indices:
        assert len(indices) >= 1 and indices.min() >= 0 and indices.max() < length
    used = np.unique(np.concatenate(segmentation.frame_indices))
    assert used.tolist() == list(range(length))  # every real frame is used


def test_bad_segmenting_arguments():
    with pytest.raises(ValueError, match="no frames"):
        segment_frames(0, 15)
    with pytest.raises(ValueError, match="segments"):
        segment_frames(100, 0)
    with pytest.raises(ValueError, match="overlap"):
        segment_frames(100, 15, overlap=1.0)


def test_statistics_never_nan():
    mean, std = masked_mean_std(np.ones((4, 3)), np.zeros(4, bool))
    assert mean.tolist() == [0, 0, 0] and std.tolist() == [0, 0, 0]
    mean, std = masked_mean_std(np.array([[1.0], [3.0], [100.0]]), np.array([True, True, False]))
    assert mean.tolist() == [2.0] and std.tolist() == [1.0]  # population std, invalid rows left out
    assert safe_ratio([1.0, 2.0, 0.0], [0.0, 4.0, 0.0]).tolist() == [0.0, 0.5, 0.0]
    segmentation = segment_frames(40, 15)
    signals = np.random.default_rng(0).normal(size=(40, 3))
    signals[10:20] = np.nan  # frames without a face may hold anything
    valid = np.ones(40, bool)
    valid[10:20] = False
    features = mean_std_features(np.nan_to_num(signals), valid, segmentation)
    assert features.shape == (15, 6) and np.isfinite(features).all()
    presence = presence_ratio(valid, segmentation)
    assert presence.min() < 1 and presence.max() == 1
    assert np.isfinite(mean_std_features(signals * 0, np.zeros(40, bool), segmentation)).all()
