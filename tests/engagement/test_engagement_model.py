"""The MIL-LSTM regressor: shapes of both input forms, outputs in [0, 1], attention pooling, size; the ensemble's
save/load round trip and its layout refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keenvision.core.weights import WeightsError, save_weights
from keenvision.engagement import EngagementEnsemble, MILEngagementRegressor, load_engagement
from keenvision.engagement.data import FeatureLayout, FeatureStandardiser

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def model():
    torch.manual_seed(0)
    with torch.no_grad():
        yield MILEngagementRegressor(60).eval()


def test_shapes_and_range_for_segment_vectors_and_frame_sequences(model):
    intensity, segments = model(torch.randn(5, 15, 60) * 10)  # large inputs: sigmoids saturate, still in [0, 1]
    assert intensity.shape == (5,) and segments.shape == (5, 15)
    assert 0 <= float(intensity.min()) and float(intensity.max()) <= 1
    assert 0 <= float(segments.min()) and float(segments.max()) <= 1
    intensity, segments = model(torch.randn(2, 10, 12, 60))  # 10 segments of 12 frames: the LSTM runs over frames
    assert intensity.shape == (2,) and segments.shape == (2, 10)
    with pytest.raises(ValueError, match=r"\[B, S, 60\]"):
        model(torch.randn(2, 15, 59))


def test_vector_input_is_a_length_one_sequence(model):
    inputs = torch.randn(3, 7, 60)
    assert torch.allclose(model(inputs)[0], model(inputs.unsqueeze(2))[0])


def test_frame_order_within_a_segment_matters_but_segment_order_does_not(model):
    inputs = torch.randn(2, 6, 9, 60)
    reference = model(inputs)[0]
    assert torch.allclose(model(inputs[:, torch.randperm(6)])[0], reference, atol=1e-6)  # a bag: order-free
    assert not torch.allclose(model(inputs.flip(2))[0], reference)  # the LSTM is temporal within a segment


def test_attention_pooling(model):
    features = model.segment_features(torch.randn(4, 15, 60))
    weights = model.attention_weights(features)
    assert weights.shape == (4, 15) and float(weights.min()) > 0 and float(weights.max()) < 1
    pooled = model.pool(features, weights)
    expected = (features * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
    assert torch.allclose(pooled, expected)
    # normalised weights: scaling every a_k by a constant changes nothing; equal weights give the plain mean
    assert torch.allclose(model.pool(features, weights * 0.01), pooled, atol=1e-6)
    assert torch.allclose(model.pool(features, torch.ones_like(weights)), features.mean(1), atol=1e-6)
    # a bag of identical segments pools to that segment, whatever the attention
    same = features[:, :1].expand(-1, 15, -1)
    assert torch.allclose(model.pool(same, weights), features[:, 0], atol=1e-6)
    # the intensity is the two-head average on the pooled feature
    _, _, embedded = model.embed(torch.randn(1, 15, 60))
    direct = torch.sigmoid(model.direct_head(embedded))
    via_levels = torch.sigmoid(model.level_head(model.level_scores(embedded)))
    assert torch.allclose(model.head(embedded), ((direct + via_levels) / 2).squeeze(-1))


def test_small_enough_to_ship(model):
    size_bytes = sum(p.numel() for p in model.parameters()) * 4
    assert size_bytes < 1_000_000


def ensemble_of(count: int, dim: int = 60, segments: int = 15) -> EngagementEnsemble:
    torch.manual_seed(1)
    data = np.random.default_rng(0).normal(size=(20, segments, dim)).astype(np.float32)
    return EngagementEnsemble([MILEngagementRegressor(dim, hidden=16, mlp=(16, 8)) for _ in range(count)],
                              FeatureStandardiser.fit(data), FeatureLayout("openface", segments, dim))


def test_ensemble_averages_its_models_and_round_trips(tmp_path):
    ensemble = ensemble_of(3)
    features = np.random.default_rng(1).normal(size=(6, 15, 60)).astype(np.float32)
    intensity, segments = ensemble.predict(features)
    inputs = torch.from_numpy(ensemble.standardiser(features))
    with torch.no_grad():
        expected = torch.stack([model(inputs)[0] for model in ensemble.models]).mean(0).numpy()
    assert np.allclose(intensity, expected, atol=1e-6) and segments.shape == (6, 15)
    path = ensemble.save(tmp_path / "e.safetensors", {"oob_mse": "0.05"})
    loaded = load_engagement(str(path))
    assert len(loaded) == 3 and loaded.layout == ensemble.layout and loaded.metadata["oob_mse"] == "0.05"
    assert np.allclose(loaded.predict(features)[0], intensity, atol=1e-6)
    assert np.allclose(loaded.predict(torch.from_numpy(features))[1], segments, atol=1e-6)


def test_ensemble_refuses_another_layout():
    ensemble = ensemble_of(1)
    with pytest.raises(ValueError, match="layout 21 segments x 60 .* trained on openface 15 segments x 60"):
        ensemble.predict(np.zeros((2, 21, 60), np.float32))
    with pytest.raises(ValueError, match="layout 15 segments x 128 .* trained on openface 15 segments x 60"):
        ensemble.predict(np.zeros((2, 15, 128), np.float32))
    with pytest.raises(ValueError, match="layout vggface2 15 segments x 60"):
        ensemble.predict(np.zeros((2, 15, 60), np.float32), feature_set="vggface2")
    with pytest.raises(ValueError, match=r"\[videos, segments, dim\]"):
        ensemble.predict(np.zeros((15, 60), np.float32))


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown engagement model"):
        load_engagement("engagement-nothing")
    with pytest.raises(FileNotFoundError):
        load_engagement(str(tmp_path / "missing.safetensors"))
    save_weights({"x": torch.zeros(2)}, tmp_path / "other.safetensors", {"format": "something else"})
    with pytest.raises(WeightsError, match="not an engagement export"):
        load_engagement(str(tmp_path / "other.safetensors"))


def test_input_layers_and_an_lstm_across_segments():
    torch.manual_seed(0)
    features = torch.randn(3, 15, 60)
    order = torch.randperm(15)
    across = MILEngagementRegressor(60, hidden=8, mlp=(8,), input_mlp=(16,), across_segments=True).eval()
    within = MILEngagementRegressor(60, hidden=8, mlp=(8,), input_mlp=(16,)).eval()
    with torch.no_grad():
        # within segments the bag is order-free; across segments the order of the video matters
        assert torch.allclose(within(features)[0], within(features[:, order])[0], atol=1e-6)
        assert not torch.allclose(across(features)[0], across(features[:, order])[0], atol=1e-4)
        intensity, segments = across(features)
    assert intensity.shape == (3,) and segments.shape == (3, 15)
    assert across.architecture()["input_mlp"] == [16] and across.architecture()["across_segments"] is True
    assert MILEngagementRegressor(**{**across.architecture()}).lstm.input_size == 16
