import json

import pytest
import torch

from keenvision.core.weights import WeightsError, load_into, load_weights, packaged_weights, save_weights, sha256


def test_roundtrip_and_prefix(tmp_path):
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5.0)}
    digest = save_weights(state, tmp_path / "w.safetensors")
    assert digest == sha256(tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert list(load_weights(tmp_path / "w.safetensors", prefix="a.")) == ["weight"]


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "none.safetensors")


def test_load_into_names_the_mismatch():
    module = torch.nn.Linear(3, 2)
    with pytest.raises(WeightsError, match="does not fit Linear"):
        load_into(module, {"weight": torch.zeros(5, 3), "bias": torch.zeros(2)}, "file.safetensors")


def test_packaged_weights_match_their_checksums():
    path = packaged_weights("mtcnn_caffe.safetensors")
    recorded = json.loads((path.parent / "checksums.json").read_text())
    assert recorded["mtcnn_caffe.safetensors"] == sha256(path)
