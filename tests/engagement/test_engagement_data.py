"""The NPZ reader on the real EmotiW 2019 files and its errors on bad files, the level mapping, the robust
standardisation and the metric."""

from __future__ import annotations

import numpy as np
import pytest

from keenvision.engagement.data import (
    FeatureLayout,
    FeatureStandardiser,
    evaluate_predictions,
    intensity_level,
    learner_groups,
    load_features,
)


@pytest.fixture(scope="module")
def engagement_dir(data_dir):
    folder = data_dir / "engagement"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.mark.parametrize("feature_set, segments, dim", [("openface", 15, 60), ("openface", 21, 60),
                                                        ("vggface2", 15, 128), ("vggface2", 21, 128)])
def test_real_files(engagement_dir, feature_set, segments, dim):
    features, labels, layout = load_features(engagement_dir / f"emotiw2019_{feature_set}_{segments}seg_train.npz")
    assert features.shape == (146, segments, dim) and features.dtype == np.float32
    assert layout == FeatureLayout(feature_set, segments, dim)
    assert np.bincount(intensity_level(labels), minlength=4).tolist() == [5, 35, 78, 28]


def test_intensity_levels():
    assert intensity_level(0.0) == 0 and intensity_level(0.33) == 1 and intensity_level(0.66) == 2
    assert intensity_level(1) == 3
    assert intensity_level(np.array([1.0, 0.66, 0.333333])).tolist() == [3, 2, 1]
    with pytest.raises(ValueError, match="not one of the engagement levels"):
        intensity_level(np.array([0.0, 0.5]))


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_reader_errors(tmp_path):
    good = np.random.default_rng(0).normal(size=(4, 3, 5)).astype(np.float32)
    labels = np.array([0, 0.33, 0.66, 1], np.float32)
    with pytest.raises(ValueError, match="no 'features' array"):
        load_features(write(tmp_path / "a.npz", labels=labels))
    with pytest.raises(ValueError, match="no 'labels' array"):
        load_features(write(tmp_path / "b.npz", features=good))
    assert load_features(tmp_path / "b.npz", require_labels=False).labels is None
    with_nan = good.copy()
    with_nan[1, 2, :3] = np.nan
    with pytest.raises(ValueError, match="3 NaN/inf values"):
        load_features(write(tmp_path / "c.npz", features=with_nan, labels=labels))
    with pytest.raises(ValueError, match=r"\[videos, segments, dim\]"):
        load_features(write(tmp_path / "d.npz", features=good[:, 0], labels=labels))
    with pytest.raises(ValueError, match="one per video"):
        load_features(write(tmp_path / "e.npz", features=good, labels=labels[:3]))
    with pytest.raises(ValueError, match="not one of the engagement levels"):
        load_features(write(tmp_path / "f.npz", features=good, labels=np.array([0, 0.5, 1, 1], np.float32)))
    (tmp_path / "g.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_features(tmp_path / "g.npz")
    with pytest.raises(FileNotFoundError):
        load_features(tmp_path / "missing.npz")


def test_feature_set_name_from_file_or_key(tmp_path):
    features = np.zeros((2, 4, 3), np.float32)
    labels = np.array([0, 1], np.float32)
    assert load_features(write(tmp_path / "x_openface_4seg.npz", features=features, labels=labels)).layout == \
        FeatureLayout("openface", 4, 3)
    stored = write(tmp_path / "clip.npz", features=features, labels=labels, feature_set=np.array("mine"))
    assert load_features(stored).layout.feature_set == "mine"
    unnamed = load_features(write(tmp_path / "clip2.npz", features=features), require_labels=False)
    assert unnamed.layout.feature_set == "unknown"


def test_standardiser_is_robust_and_fitted_on_given_videos_only(engagement_dir):
    features, _, _ = load_features(engagement_dir / "emotiw2019_openface_15seg_train.npz")
    assert np.abs(features).max() > 1e6  # the OpenFace tracking failures the robust statistics are there for
    standardiser = FeatureStandardiser.fit(features[:100])
    standard = standardiser(features)
    assert np.abs(standard).max() <= standardiser.clip
    assert np.abs(np.median(standard[:100].reshape(-1, 60), 0)).max() < 1e-4
    # statistics come from the videos given: fitting on others changes them
    assert not np.allclose(FeatureStandardiser.fit(features[100:]).center, standardiser.center)
    constant = FeatureStandardiser.fit(np.ones((3, 2, 4)))
    assert np.all(constant.scale == 1.0)


def test_evaluate_predictions_by_hand():
    labels = np.array([0.0, 0.33, 0.66, 0.66, 1.0])
    predictions = np.array([0.2, 0.33, 0.56, 0.76, 0.7])
    result = evaluate_predictions(predictions, labels)
    assert np.isclose(result["mse"], (0.04 + 0 + 0.01 + 0.01 + 0.09) / 5)
    assert np.allclose([result["mse_per_level"][k] for k in ("0", "0.33", "0.66", "1")], [0.04, 0, 0.01, 0.09])
    assert result["count_per_level"] == {"0": 1, "0.33": 1, "0.66": 2, "1": 1}
    assert evaluate_predictions([0.5], [1.0])["mse_per_level"]["0"] is None


def test_learner_groups_recover_identities_and_keep_the_real_learners_apart(engagement_dir):
    rng = np.random.default_rng(0)
    identities = rng.normal(size=(4, 128)) * 10  # four people, three videos each, small per-video changes
    videos = np.stack([identities[i] + rng.normal(size=(15, 128)) for i in range(4) for _ in range(3)])
    groups = learner_groups(videos)
    assert [len(set(groups[i * 3:(i + 1) * 3])) for i in range(4)] == [1, 1, 1, 1]
    assert len(set(groups)) == 4
    # the real VGGFace2 features: learners recur (groups of several videos), and within a group the labels agree
    # far more than across the data set (a learner's level is partly a trait; folds by video reward it)
    features, labels, _ = load_features(engagement_dir / "emotiw2019_vggface2_15seg_train.npz")
    real = learner_groups(features)
    sizes = np.bincount(real)
    assert 20 < len(sizes) < 146 and sizes.max() >= 4
    within = np.mean([(labels[i] - labels[real == real[i]].mean()) ** 2 for i in range(len(labels))])
    assert within < 0.6 * float(np.var(labels))
    with pytest.raises(ValueError, match="face features must be"):
        learner_groups(features[0])


def test_evaluate_predictions_reports_the_mean_prediction_per_level():
    result = evaluate_predictions([0.2, 0.4, 0.5, 0.7, 0.9], [0.0, 0.33, 0.66, 0.66, 1.0])
    assert result["mean_prediction_per_level"] == pytest.approx({"0": 0.2, "0.33": 0.4, "0.66": 0.6, "1": 0.9})
