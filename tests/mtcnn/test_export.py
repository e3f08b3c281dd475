"""`keen mtcnn export-onnx`: three ONNX files whose ONNX Runtime outputs match torch's (dynamic batch, and dynamic
height and width for P-Net), one-line errors for a bad --out, and nothing half-written when an export fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from keenvision.cli import main
from keenvision.core.io import read_image
from keenvision.core.onnx import onnx_export_available, onnx_runtime_available

pytestmark = pytest.mark.skipif(not (onnx_export_available() and onnx_runtime_available()),
                                reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, detector):
    from keenvision.mtcnn.export import export_mtcnn_onnx

    return export_mtcnn_onnx(detector, tmp_path_factory.mktemp("onnx"))


def test_onnx_runtime_matches_torch_on_a_real_pyramid_level(exported, detector, data_dir):
    import onnx
    import onnxruntime

    from keenvision.mtcnn.export import onnx_parity

    assert max(onnx_parity(detector, exported).values()) < 1e-4
    photo = read_image(data_dir / "mtcnn_official" / "test1.jpg").pixels
    level = torch.from_numpy(photo).permute(2, 0, 1).float()[None]
    level = torch.nn.functional.interpolate(level, scale_factor=0.3, mode="area")
    level = (level - 127.5) / 128  # the networks' input, as the detector feeds it
    session = onnxruntime.InferenceSession(str(exported["pnet"]), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"images": level.numpy()})
    with torch.inference_mode():
        reference = detector.pnet(level)
    assert len(ours) == len(reference) and ours[0].shape == tuple(reference[0].shape)
    assert max(float(np.abs(a - b.numpy()).max()) for a, b in zip(ours, reference)) < 1e-4
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(exported["onet"])).metadata_props}
    assert metadata["outputs"] == ["face_logits", "box_offsets", "landmark_offsets"]


def test_export_command_and_its_errors(tmp_path, capsys, monkeypatch, detector):
    (tmp_path / "file").write_text("not a folder")
    assert main(["mtcnn", "export-onnx", "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err.strip().splitlines()[-1]
    from keenvision.mtcnn import export

    calls = []

    def failing(*args, **kwargs):  # the second network fails: the first must not be left on disk either
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("exporter failed")
        return b"onnx bytes"

    monkeypatch.setattr(export, "export_to_onnx_bytes", failing)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export.export_mtcnn_onnx(detector, tmp_path / "half")
    assert not list((tmp_path / "half").glob("*"))
