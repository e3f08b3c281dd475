"""Degradation, value range, and preparing real CelebA / ORL identities into aligned, identity-split faces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from keenvision.mtcnn import TEMPLATES
from keenvision.sicnn import FaceIdentityDataset, degrade, denormalise, normalise, prepare_faces
from keenvision.sicnn.data import split_identities


def test_degrade_is_exact_8x8_average_pooling():
    torch.manual_seed(0)
    high = torch.rand(2, 3, 112, 96) * 2 - 1
    low = degrade(high)
    assert low.shape == (2, 3, 14, 12)
    blocks = high.reshape(2, 3, 14, 8, 12, 8).mean(dim=(3, 5))
    assert torch.allclose(low, blocks, atol=1e-6)
    assert low[1, 2, 5, 7].item() == pytest.approx(high[1, 2, 40:48, 56:64].mean().item(), abs=1e-6)
    assert degrade(high[0]).shape == (3, 14, 12)
    with pytest.raises(ValueError, match="multiple"):
        degrade(torch.zeros(1, 3, 110, 96))


def test_normalise_round_trip_and_range():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    tensor = normalise(pixels)
    assert tensor.shape == (3, 16, 16)
    assert tensor.min().item() == -1.0 and tensor.max().item() == 1.0
    assert np.array_equal(denormalise(tensor), pixels)
    assert denormalise(torch.full((3, 2, 2), 3.0)).max() == 255  # clipped


def test_split_identities_is_seeded_and_disjoint():
    names = [f"id{i:03d}" for i in range(50)]
    first = split_identities(names, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3)
    assert first == split_identities(list(reversed(names)), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3)
    assert first != split_identities(names, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=4)
    counts = {split: sum(1 for v in first.values() if v == split) for split in ("train", "val", "test")}
    assert counts == {"train": 40, "val": 5, "test": 5}
    small = split_identities(["a", "b", "c"], {"train": 0.8, "val": 0.1, "test": 0.1})
    assert sorted(small.values()) == ["test", "train", "val"]  # every split gets one when it can


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir, detector):
    """2 CelebA identities (one photo also as RGBA), 2 ORL subjects (grey .pgm), a single-photo identity, a corrupt
    JPEG, a face-less image, a text file, and an identity with no usable photo."""
    src = tmp_path_factory.mktemp("faces_src")
    for identity in ("00001", "00002"):
        shutil.copytree(data_dir / "celeba_identities" / identity, src / identity)
    for subject in ("s1", "s2"):
        (src / subject).mkdir()
        for index in (1, 2, 3, 4):
            shutil.copy(data_dir / "orl_faces" / subject / f"{index}.pgm", src / subject)
    (src / "single").mkdir()
    celeba = data_dir / "celeba_identities"
    shutil.copy(sorted((celeba / "00004").glob("*.jpg"))[0], src / "single")
    Image.open(sorted((celeba / "00001").glob("*.jpg"))[1]).convert("RGBA").save(src / "00001" / "rgba.png")
    (src / "00002" / "corrupt.jpg").write_bytes(sorted((celeba / "00002").glob("*.jpg"))[0].read_bytes()[:300])
    gradient = np.tile(np.linspace(40, 200, 178, dtype=np.uint8)[None, :, None], (218, 1, 3))
    cv2.imwrite(str(src / "s1" / "no_face.png"), gradient)
    (src / "s2" / "notes.txt").write_text("not a photo")
    (src / "empty_identity").mkdir()
    cv2.imwrite(str(src / "empty_identity" / "sky.png"), gradient[::-1])
    out = tmp_path_factory.mktemp("faces_out")
    manifest = prepare_faces(src, out, detector=detector, fractions={"train": 0.5, "val": 0.25, "test": 0.25},
                             seed=0)
    return src, out, manifest


def test_prepare_faces_writes_aligned_96x112_faces(prepared):
    _, out, manifest = prepared
    files = sorted(out.glob("*/*/*.png"))
    assert len(files) == len(manifest["faces"]) == 6 + 5 + 8 + 1  # 00001 + RGBA copy, 00002, ORL, single
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (112, 96, 3)
    orl = [f for f in manifest["faces"] if f["identity"] == "s1"]
    assert len(orl) == 4 and all(f["detection"] == "direct" for f in orl)  # MTCNN finds the 92x112 ORL faces
    grey = cv2.imread(str(out / orl[0]["file"]))
    assert np.array_equal(grey[..., 0], grey[..., 1])  # grey input, converted to 3 equal channels
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_prepared_faces_have_landmarks_on_the_template(prepared, detector):
    _, out, manifest = prepared
    template = TEMPLATES[(96, 112)]
    errors = []
    for face in manifest["faces"][::3]:
        aligned = cv2.cvtColor(cv2.imread(str(out / face["file"])), cv2.COLOR_BGR2RGB)
        found = detector.detect_arrays([aligned])[0]
        assert found, face["file"]
        best = max(found, key=lambda f: f.score)
        errors.append(np.linalg.norm(best.landmarks - 0.5 - template, axis=1).mean())
    assert np.median(errors) < 3.0  # pixels, in a 96x112 face


def test_prepare_faces_splits_by_identity_and_reports_failures(prepared):
    _, out, manifest = prepared
    split_of = {}
    for path in out.glob("*/*/*.png"):
        split, identity = path.parts[-3], path.parts[-2]
        assert split_of.setdefault(identity, split) == split  # one identity, one split
    assert set(split_of) == {"00001", "00002", "s1", "s2", "single"}
    assert {v["split"] for v in manifest["identities"].values()} <= {"train", "val", "test"}
    assert {k: v["split"] for k, v in manifest["identities"].items()} == split_of
    assert manifest["identities"]["single"]["single_photo"] is True
    assert manifest["identities"]["00001"] == {"split": split_of["00001"], "faces": 6, "single_photo": False,
                                               "origin": Path(manifest["source"]).name}
    reasons = {failure["source"]: failure["reason"] for failure in manifest["failures"]}
    assert reasons["00002/corrupt.jpg"].startswith("unreadable")
    assert reasons["s1/no_face.png"].startswith("no face found")
    assert reasons["s2/notes.txt"] == "not an image file type"
    assert "no usable photo" in reasons["empty_identity"]
    assert "empty_identity" not in manifest["identities"]
    with pytest.raises(FileExistsError):
        prepare_faces(prepared[0], out)


def test_face_identity_dataset_reads_a_split(prepared):
    _, out, manifest = prepared
    train_identities = sorted(k for k, v in manifest["identities"].items() if v["split"] == "train")
    dataset = FaceIdentityDataset(out, "train", flip=True)
    assert dataset.identities == train_identities
    assert len(dataset) == sum(manifest["identities"][k]["faces"] for k in train_identities)
    face, label = dataset[0]
    assert face.shape == (3, 112, 96) and face.dtype == torch.float32
    assert -1 <= face.min() and face.max() <= 1
    assert dataset.identities[label] == dataset.samples[0][0].parent.name
    without_singles = FaceIdentityDataset(out, manifest["identities"]["single"]["split"], min_faces_per_identity=2)
    assert "single" not in without_singles.identities
    with pytest.raises(ValueError, match="split"):
        FaceIdentityDataset(out, "holdout")
    most = max(v["faces"] for v in manifest["identities"].values())
    with pytest.raises(ValueError, match=f"holds no faces of an identity with at least {most + 1}"):
        FaceIdentityDataset(out, "train", min_faces_per_identity=most + 1)


def test_prepare_joins_sources_keeps_the_first_split_and_refuses_shared_identities(tmp_path, data_dir, detector):
    first, second = tmp_path / "first", tmp_path / "second"
    for identity in ("00001", "00002", "00003", "00004"):
        shutil.copytree(data_dir / "celeba_identities" / identity, first / identity)
    more = sorted(p for p in (data_dir / "celeba_identities_more").iterdir() if p.is_dir())[:3]
    for folder in more:
        (second / folder.name).mkdir(parents=True)
        shutil.copy(sorted(folder.glob("*.jpg"))[0], second / folder.name)  # one photo each keeps this quick
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25}
    alone = prepare_faces(first, tmp_path / "alone", detector=detector, fractions=fractions)
    joined = prepare_faces([first, second], tmp_path / "joined", detector=detector, fractions=fractions)
    for identity, entry in alone["identities"].items():  # adding a source leaves the first one's split as it was
        assert joined["identities"][identity]["split"] == entry["split"]
        assert joined["identities"][identity]["origin"] == "first"
    assert {joined["identities"][f.name]["origin"] for f in more} == {"second"}
    assert joined["source"] == [str(first), str(second)]
    # each source's own faces: the second source's identities can be scored as a test split of their own
    second_train = {i for i, e in joined["identities"].items() if e["origin"] == "second" and e["split"] == "train"}
    if second_train:
        assert set(FaceIdentityDataset(tmp_path / "joined", "train", origin="second").identities) == second_train
    train_of_first = {i for i, e in joined["identities"].items() if e["origin"] == "first" and e["split"] == "train"}
    assert set(FaceIdentityDataset(tmp_path / "joined", "train", origin="first").identities) == train_of_first
    with pytest.raises(ValueError, match="no identities from source 'third'; its sources are first, second"):
        FaceIdentityDataset(tmp_path / "joined", "train", origin="third")
    shutil.copytree(first / "00002", second / "00002")
    with pytest.raises(ValueError, match=r"identities 00002 are in both .*first and .*second"):
        prepare_faces([first, second], tmp_path / "clash", detector=detector, fractions=fractions)
