"""MobileFace_Identification_V2 imported from its MXNet files without MXNet: the converted network must verify
real unseen faces (a wrong conversion gives chance), and foreign or truncated files are refused with one line."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from keenvision.cli import main
from keenvision.core.errors import WeightsError
from keenvision.sicnn.data import FaceIdentityDataset, prepare_faces
from keenvision.sicnn.evaluate import pair_verification
from keenvision.sicnn.mobileface import MobileFaceNet, import_mobileface, read_mxnet_params
from keenvision.sicnn.model import load_cnn_r

PREFIX = "MobileFace_Identification_V2"


@pytest.fixture(scope="module")
def mobileface_files(data_dir):
    folder = data_dir / "pretrained" / "mobileface_identification_v2"
    params, symbol = folder / f"{PREFIX}-0000.params", folder / f"{PREFIX}-symbol.json"
    if not params.is_file():
        pytest.skip(f"{params} not found")
    return params, symbol


@pytest.fixture(scope="module")
def unseen_faces(tmp_path_factory, data_dir, detector):
    """30 identities of celeba_identities_more aligned to 96x112 (all in one split), as [N, 3, 112, 96] + labels."""
    source = data_dir / "celeba_identities_more"
    src = tmp_path_factory.mktemp("mobileface_src")
    for identity in sorted(p.name for p in source.iterdir())[:30]:
        shutil.copytree(source / identity, src / identity)
    out = tmp_path_factory.mktemp("mobileface_faces") / "faces"
    prepare_faces(src, out, detector=detector, fractions={"train": 0.0, "val": 0.0, "test": 1.0})
    dataset = FaceIdentityDataset(out, "test", min_faces_per_identity=2)
    faces = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    return faces, labels


def _auc(model, faces, labels) -> float:
    with torch.no_grad():
        embeddings = F.normalize(model.embed(faces), dim=1)
    return pair_verification(embeddings, labels)["verification_auc"]


def test_converted_network_verifies_unseen_faces(mobileface_files, unseen_faces, one_torch_thread):
    faces, labels = unseen_faces
    assert len(labels.unique()) >= 25 and len(faces) >= 100
    assert _auc(import_mobileface(*mobileface_files), faces, labels) >= 0.95
    torch.manual_seed(0)
    assert _auc(MobileFaceNet().eval(), faces, labels) < 0.75  # random weights: near chance


def test_import_command_writes_a_cnn_r_export(mobileface_files, unseen_faces, tmp_path, one_torch_thread):
    out = tmp_path / "cnn_r.safetensors"
    assert main(["sicnn", "import-recogniser", "--params", str(mobileface_files[0]), "--out", str(out)]) == 0
    model = load_cnn_r(out)
    assert isinstance(model, MobileFaceNet) and model.embedding_dim == 256
    faces, labels = unseen_faces
    assert _auc(model, faces, labels) >= 0.95  # the fp16 export keeps the metric


def test_truncated_params_are_refused(mobileface_files, tmp_path):
    truncated = tmp_path / f"{PREFIX}-0000.params"
    truncated.write_bytes(mobileface_files[0].read_bytes()[:50_000])
    with pytest.raises(WeightsError, match="truncated"):
        read_mxnet_params(truncated)


def test_foreign_file_is_refused_with_one_line(mobileface_files, tmp_path, capsys):
    foreign = tmp_path / "model-0000.params"
    foreign.write_bytes(b"PK\x03\x04" + bytes(100))
    code = main(["sicnn", "import-recogniser", "--params", str(foreign), "--symbol", str(mobileface_files[1]),
                 "--out", str(tmp_path / "x.safetensors")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "not an MXNet .params file" in error and "\n" not in error
    assert not (tmp_path / "x.safetensors").exists()


def test_graph_of_another_network_is_refused(mobileface_files, tmp_path):
    """A symbol whose layers are not MobileFace's (a 64-filter first conv): one line naming the layer."""
    import json

    graph = json.loads(mobileface_files[1].read_text())
    for node in graph["nodes"]:
        if node["name"] == "conv1":
            node["attrs"]["num_filter"] = "64"
    symbol = tmp_path / f"{PREFIX}-symbol.json"
    symbol.write_text(json.dumps(graph))
    with pytest.raises(WeightsError, match="conv1") as error:
        import_mobileface(mobileface_files[0], symbol)
    assert "\n" not in str(error.value)


def test_params_missing_a_tensor_of_the_graph_name_it(mobileface_files, monkeypatch):
    from keenvision.sicnn import mobileface

    arrays = read_mxnet_params(mobileface_files[0])
    arrays.pop("fc5_weight")
    monkeypatch.setattr(mobileface, "read_mxnet_params", lambda path: arrays)
    with pytest.raises(WeightsError, match="fc5_weight"):
        import_mobileface(*mobileface_files)


def test_params_whose_tensor_does_not_fit_name_it(mobileface_files, monkeypatch):
    from keenvision.sicnn import mobileface

    arrays = read_mxnet_params(mobileface_files[0])
    arrays["bn1_gamma"] = arrays["bn1_gamma"][:16]
    monkeypatch.setattr(mobileface, "read_mxnet_params", lambda path: arrays)
    with pytest.raises(WeightsError, match=r"bn1_gamma is \(16,\)"):
        import_mobileface(*mobileface_files)


def test_a_new_head_on_the_imported_recogniser_is_imprinted(mobileface_files, tmp_path, data_dir, detector,
                                                             one_torch_thread):
    """The recognition phase from the imported network with no steps: the exported head classifies the training
    faces it was imprinted from, and the CNN-R is the imported one, unchanged."""
    from keenvision.sicnn.train import train_sicnn

    src = tmp_path / "src"
    for identity in ("00001", "00002", "00003", "00004", "00005", "00006", "00007", "00008"):
        shutil.copytree(data_dir / "celeba_identities" / identity, src / identity)
    faces = tmp_path / "faces"
    prepare_faces(src, faces, detector=detector, fractions={"train": 0.75, "val": 0.25, "test": 0.0})
    imported = tmp_path / "mobileface.safetensors"
    assert main(["sicnn", "import-recogniser", "--params", str(mobileface_files[0]), "--out", str(imported)]) == 0
    exported = train_sicnn(None, {"phase": "recognition", "run_dir": str(tmp_path / "run"), "data_root": str(faces),
                                  "init_cnn_r": str(imported), "max_steps": 0, "num_threads": 1,
                                  "head": {"kind": "cosface", "options": {"scale": 30.0, "margin": 0.35}}})
    cnn_r, head = load_cnn_r(exported, with_head=True)
    train = FaceIdentityDataset(faces, "train")
    images = torch.stack([train[i][0] for i in range(len(train))])
    labels = torch.tensor([train[i][1] for i in range(len(train))])
    with torch.no_grad():
        accuracy = (head(cnn_r.embed(images)).argmax(1) == labels).float().mean()
    assert head.weight.shape[0] == train.num_classes == 6
    assert accuracy >= 0.9  # a random 6-way head: ~1/6
    reference = load_cnn_r(imported)
    assert all(torch.equal(a, b) for a, b in zip(cnn_r.state_dict().values(), reference.state_dict().values()))
