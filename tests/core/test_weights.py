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


def test_every_packaged_file_has_a_registry_entry_with_its_checksum(monkeypatch):
    from keenvision.core import registry

    folder = packaged_weights("mtcnn_caffe.safetensors").parent
    entries = registry.shipped_models()
    assert {entry.file for entry in entries} == {path.name for path in folder.glob("*.safetensors")}
    for entry in entries:
        assert sha256(packaged_weights(entry.file)) == entry.sha256, entry.name
        assert entry.system in ("mtcnn", "sicnn", "farsee", "engagement", "diffrate") and entry.licence
        assert {"name", "value", "split"} <= set(entry.metric)
    # a packaged file the registry does not know is refused, not trusted
    monkeypatch.setattr(registry, "expected_sha256", lambda filename: None)
    with pytest.raises(WeightsError, match="no entry in the registry"):
        packaged_weights("mtcnn_caffe.safetensors")


def test_load_by_name_and_keen_models(capsys):
    import keenvision
    from keenvision.cli import main
    from keenvision.farsee import FarSeeNet

    assert isinstance(keenvision.load("farsee-camvid"), FarSeeNet)
    with pytest.raises(ValueError, match="unknown shipped model 'nope'; shipped: mtcnn-caffe"):
        keenvision.load("nope")
    assert main(["models", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "farsee-camvid" in {model["name"] for model in record["models"]}
