"""The recipe: config errors, stratified folds, out-of-bag bookkeeping, a few real epochs lowering the training MSE,
train_engagement end to end (tiny), and the shipped ensemble on the real features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from keenvision.engagement import load_engagement, train_engagement
from keenvision.engagement.baseline import RidgeEngagement, fit_ridge
from keenvision.engagement.data import (
    FeatureStandardiser,
    evaluate_predictions,
    intensity_level,
    learner_groups,
    load_features,
)
from keenvision.engagement.model import MILEngagementRegressor
from keenvision.engagement.train import (
    bootstrap_resamples,
    cv_folds,
    fit_ensemble,
    fit_model,
    grouped_stratified_folds,
    load_config,
    out_of_bag_predictions,
    stratified_folds,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def openface_15(data_dir):
    path = data_dir / "engagement" / "emotiw2019_openface_15seg_train.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return load_features(path)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown config keys.*'bagging'"):
        load_config(None, {"bagging": 3})
    with pytest.raises(ValueError, match="model.width"):
        load_config(None, {"model": {"width": 3}})
    with pytest.raises(ValueError, match="select.epoch"):
        load_config(None, {"select": {"epoch": [1, 2]}})
    with pytest.raises(ValueError, match="cv_folds"):
        load_config(None, {"cv_folds": 1})
    assert load_config(None, {"model": {"hidden": 8}})["model"]["mlp"] == [128, 64, 32]


def test_stratified_folds_keep_level_proportions(openface_15):
    labels = openface_15.labels
    folds = stratified_folds(labels, 5, seed=3)
    assert np.array_equal(folds, stratified_folds(labels, 5, seed=3))
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=4))
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    levels = intensity_level(labels)
    for level, total in enumerate([5, 35, 78, 28]):
        per_fold = np.bincount(folds[levels == level], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == total  # 5 level-0 videos: one per fold


def test_out_of_bag_predictions_come_only_from_models_that_did_not_see_the_video():
    count, models = 30, 7
    resamples = bootstrap_resamples(count, models, seed=0)
    assert all(len(r) == count for r in resamples) and any(len(set(r.tolist())) < count for r in resamples)
    # model m predicts the marker 10^m for every video: the OOB mean reveals exactly which models were averaged
    markers = 10.0 ** np.arange(models)
    predictions = np.repeat(markers[:, None], count, 1)
    oob, used = out_of_bag_predictions(predictions, resamples)
    for video in range(count):
        excluded = [m for m in range(models) if video not in set(resamples[m].tolist())]
        assert used[video] == len(excluded)
        if excluded:
            assert np.isclose(oob[video], markers[excluded].mean())
        else:
            assert np.isnan(oob[video])
    assert used.sum() > 0


def test_a_few_real_epochs_lower_the_training_mse(openface_15):
    features, labels, _ = openface_15
    standard = FeatureStandardiser.fit(features)(features)
    config = load_config(None, {"epochs": 6, "lr_decay_at": [], "rank_weight": 0.1})
    torch.manual_seed(11)  # fit_model seeds the same way: this is the model before training
    untrained = MILEngagementRegressor(features.shape[-1], **config["model"]).eval()
    with torch.no_grad():
        before = float(((untrained(torch.from_numpy(standard))[0].numpy() - labels) ** 2).mean())
    trained = fit_model(standard, labels, config, seed=11)
    with torch.no_grad():
        after = float(((trained(torch.from_numpy(standard))[0].numpy() - labels) ** 2).mean())
    assert after < 0.85 * before and after < float(np.var(labels))


def test_train_engagement_end_to_end(openface_15, data_dir, tmp_path):
    path = train_engagement(None, {"features": str(data_dir / "engagement" / "emotiw2019_openface_15seg_train.npz"),
                                   "run_dir": str(tmp_path), "epochs": 2, "bag_models": 2, "cv_folds": 2,
                                   "export_name": "tiny.safetensors", "model": {"hidden": 8, "mlp": [8]}})
    ensemble = load_engagement(str(path))
    assert len(ensemble) == 2 and str(ensemble.layout) == "openface 15 segments x 60"
    assert {"oob_mse", "cv_mse", "cv_mse_std", "config"} <= set(ensemble.metadata)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["cv"]["fold_mse"]) == 2 and report["oob"]["videos_scored"] > 60  # ~60 % are out of 1 of 2 bags
    intensity, segments = ensemble.predict(openface_15.features[:3])
    assert intensity.shape == (3,) and segments.shape == (3, 15)


def test_shipped_ensemble_on_the_real_features(openface_15, data_dir):
    ensemble = load_engagement("engagement-openface-15")
    features, labels, layout = openface_15
    assert ensemble.layout == layout
    intensity, segments = ensemble.predict(features, feature_set=layout.feature_set)
    assert 0 <= intensity.min() and intensity.max() <= 1 and 0 <= segments.min() and segments.max() <= 1
    # trained on these videos, so this is a training-set fit (its honest errors are the OOB/CV MSE in the metadata)
    mse = evaluate_predictions(intensity, labels)["mse"]
    assert mse < 0.7 * float(np.var(labels))  # measured 0.034 against a label variance of 0.062
    assert float(ensemble.metadata["oob_mse"]) < float(np.var(labels))
    for other in ("emotiw2019_openface_21seg_train.npz", "emotiw2019_vggface2_15seg_train.npz"):
        other_features, _, other_layout = load_features(data_dir / "engagement" / other)
        with pytest.raises(ValueError, match="do not fit this engagement model"):
            ensemble.predict(other_features, feature_set=other_layout.feature_set)


@pytest.fixture(scope="module")
def real_learners(data_dir):
    return learner_groups(load_features(data_dir / "engagement" / "emotiw2019_vggface2_15seg_train.npz").features)


def test_folds_by_learner_keep_each_learner_whole_and_the_levels_balanced(openface_15, real_learners):
    labels = openface_15.labels
    for seed in range(3):
        folds = grouped_stratified_folds(labels, real_learners, 5, seed)
        assert all(len(set(folds[real_learners == g])) == 1 for g in np.unique(real_learners))
        levels = intensity_level(labels)
        for level in range(4):
            per_fold = np.bincount(folds[levels == level], minlength=5)
            assert per_fold.max() - per_fold.min() <= 3, (level, per_fold)
    assert not np.array_equal(grouped_stratified_folds(labels, real_learners, 5, 0),
                              grouped_stratified_folds(labels, real_learners, 5, 1))


def test_ridge_recovers_a_linear_signal_and_picks_its_penalty_by_cv():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 6, 4)).astype(np.float32)
    signal = features.mean(1)[:, 0]  # the first feature's segment mean
    labels = np.clip(0.5 + 0.3 * signal / signal.std(), 0, 1)
    model = fit_ridge(features, labels, np.arange(120) % 4)
    assert np.mean((model.predict(features) - labels) ** 2) < 0.1 * np.var(labels)
    assert model.penalty in (1.0, 10.0) and abs(model.weights[0]) == np.abs(model.weights).max()
    noise = rng.uniform(0, 1, 120)
    assert fit_ridge(features, noise, np.arange(120) % 4).penalty > model.penalty  # nothing to learn: shrink more


def test_ensemble_with_a_ridge_member_blends_and_round_trips(openface_15, real_learners, tmp_path):
    features, labels, layout = openface_15
    config = load_config(None, {"epochs": 2, "bag_models": 2, "ridge_weight": 0.5,
                                "model": {"hidden": 8, "mlp": [8]}})
    ensemble, _ = fit_ensemble(features, labels, config, 0, layout, real_learners)
    assert isinstance(ensemble.ridge, RidgeEngagement) and ensemble.ridge_weight == 0.5
    intensity, segments = ensemble.predict(features[:5])
    models_only = np.mean([model(torch.from_numpy(ensemble.standardiser(features[:5])))[0].detach().numpy()
                           for model in ensemble.models], 0)
    assert np.allclose(intensity, 0.5 * models_only + 0.5 * ensemble.ridge.predict(features[:5]), atol=1e-6)
    loaded = load_engagement(str(ensemble.save(tmp_path / "blend.safetensors")))
    assert loaded.ridge_weight == 0.5 and loaded.ridge.penalty == ensemble.ridge.penalty
    assert np.allclose(loaded.predict(features[:5])[0], intensity, atol=1e-6)
    assert np.allclose(loaded.predict(features[:5])[1], segments)


def test_cross_validation_by_learner_is_less_optimistic_than_by_video(data_dir, real_learners):
    """A lightly regularised ridge on VGGFace2 features recognises learners: folds by video flatter it, folds by
    learner (`cv_folds` with groups) do not."""
    features, labels, _ = load_features(data_dir / "engagement" / "emotiw2019_vggface2_15seg_train.npz")

    def cv_mse(groups):
        squared = []
        for repeat in range(3):
            folds = cv_folds(labels, 5, repeat, groups)
            for fold in range(5):
                fit, check = folds != fold, folds == fold
                model = RidgeEngagement.fit(features[fit], labels[fit], penalty=10.0)
                squared.append((model.predict(features[check]) - labels[check]) ** 2)
        return float(np.concatenate(squared).mean())

    by_video, by_learner = cv_mse(None), cv_mse(real_learners)
    assert by_learner > 1.3 * by_video, (by_video, by_learner)  # measured 0.055 vs 0.084


def test_shipped_vggface2_ensemble_and_the_fused_shipped_eval(data_dir, capsys):
    from keenvision.cli import main

    faces = load_features(data_dir / "engagement" / "emotiw2019_vggface2_15seg_train.npz")
    ensemble = load_engagement("engagement-vggface2-15")
    assert ensemble.layout == faces.layout
    metadata_config = json.loads(ensemble.metadata["config"])
    assert metadata_config["learner_groups_from"] and ensemble.ridge is not None  # chosen by CV by learner
    openface = data_dir / "engagement" / "emotiw2019_openface_15seg_train.npz"
    code = main(["engagement", "eval", "--features", str(openface), "--features",
                 str(data_dir / "engagement" / "emotiw2019_vggface2_15seg_train.npz"), "--json"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = [row["name"] for row in record["results"]]
    assert code == 0 and names[0] == "engagement-openface-15" and "engagement-vggface2-15" in names
    assert record["weights"].startswith("fused") and record["mse"] < float(np.var(faces.labels))
