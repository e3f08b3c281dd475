"""`keenvision.sicnn.evaluate` on real CelebA faces (shared data), aligned by `prepare_faces` as for training.

PSNR/SSIM are checked against a hand computation; the dlib recogniser (the ``eval`` extra) must tell the same
identity from different ones on real photos. An "identity" stub method (it returns the HR faces) is used only
where the test is about the metric plumbing, and says so."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from keenvision.sicnn.data import FaceIdentityDataset, degrade, prepare_faces
from keenvision.sicnn.evaluate import (
    METHOD_KEYS,
    best_threshold_accuracy,
    evaluate_hallucination,
    load_recogniser,
    psnr_ssim,
    score_methods,
    split_batches,
    verification_accuracy,
    verification_pairs,
)
from keenvision.sicnn.hallucinate import bicubic_upscale, to_unit_tensor
from keenvision.sicnn.model import HallucinationNet

# identities 00001-00003 with 3 photos each and 00004 with a single photo (it can only be a negative)
PHOTOS_PER_IDENTITY = {"00001": 3, "00002": 3, "00003": 3, "00004": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prepared(data_dir, detector, tmp_path_factory):
    """A `prepare_faces` folder whose test split holds the identities above (aligned 96x112 PNGs)."""
    celeba = data_dir / "celeba_identities"
    if not celeba.is_dir():
        pytest.skip(f"{celeba} not found")
    src = tmp_path_factory.mktemp("celeba_subset")
    for identity, count in PHOTOS_PER_IDENTITY.items():
        (src / identity).mkdir()
        for photo in sorted((celeba / identity).glob("*.jpg"))[:count]:
            shutil.copy(photo, src / identity / photo.name)
    out = tmp_path_factory.mktemp("prepared")
    manifest = prepare_faces(src, out, detector=detector, fractions={"test": 1.0})
    assert manifest["counts"]["test"]["faces"] == sum(PHOTOS_PER_IDENTITY.values())
    return out


@pytest.fixture(scope="module")
def faces(prepared):
    """(hr [N, 3, 112, 96] in [0, 1], identity names)."""
    batches = list(split_batches(prepared, "test", batch_size=64))
    assert len(batches) == 1
    return batches[0]


@pytest.fixture(scope="module")
def recogniser():
    pytest.importorskip("dlib", reason="the eval extra (dlib-bin) is not installed")
    recogniser = load_recogniser()
    assert recogniser is not None
    return recogniser


def test_psnr_of_identical_faces_is_infinite_and_ssim_one(faces):
    hr, _ = faces
    psnr, ssim = psnr_ssim(hr, hr.clone())
    assert torch.isinf(psnr).all() and torch.allclose(ssim, torch.ones_like(ssim))


def test_bicubic_psnr_matches_a_hand_computation(faces):
    hr, _ = faces
    lr = degrade(hr)
    bicubic = bicubic_upscale(lr)
    psnr, ssim = psnr_ssim(bicubic, hr)
    # PSNR = 10 log10(1 / MSE) per image, images in [0, 1]
    errors = (bicubic.double().numpy() - hr.double().numpy()) ** 2
    by_hand = 10 * np.log10(1 / errors.reshape(len(hr), -1).mean(1))
    assert np.allclose(psnr.numpy(), by_hand, atol=1e-3)
    assert 20 < by_hand.mean() < 30  # x8 bicubic on aligned faces: low 20s dB
    assert ((0.4 < ssim) & (ssim < 0.9)).all()
    # the bicubic baseline: torch bicubic, align_corners False, clamped
    assert bicubic.min() >= 0 and bicubic.max() <= 1
    reference = torch.nn.functional.interpolate(lr, size=(112, 96), mode="bicubic", align_corners=False)
    assert torch.allclose(bicubic, reference.clamp(0, 1))


def test_dlib_tells_same_identity_from_different_ones(faces, recogniser):
    hr, identities = faces
    from keenvision.sicnn.hallucinate import to_uint8_images

    crops = to_uint8_images(hr)
    descriptors = recogniser.descriptors(crops, recogniser.landmarks(crops))
    assert descriptors.shape == (len(crops), 128)
    unit = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    labels = np.array(identities)
    same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    different = labels[:, None] != labels[None]
    assert similarity[same].mean() > similarity[different].mean() + 0.05
    distance = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=-1)
    assert distance[same].mean() < 0.6 <= distance[different].mean()  # dlib's threshold separates them on average


def test_verification_pairs():
    positive, negative = verification_pairs(["a", "a", "a", "b", "b", "c"])
    assert len(positive) == 3 * 2 + 2 * 1  # ordered same-identity pairs, no self pairs
    labels = np.array(["a", "a", "a", "b", "b", "c"])
    assert (labels[positive[:, 0]] == labels[positive[:, 1]]).all() and (positive[:, 0] != positive[:, 1]).all()
    assert (labels[negative[:, 0]] != labels[negative[:, 1]]).all()
    # as many negatives per probe as positives, at least one: the single-photo identity "c" only has negatives
    counts = np.bincount(negative[:, 0], minlength=6)
    assert counts.tolist() == [2, 2, 2, 1, 1, 1]
    assert 5 not in positive
    again = verification_pairs(["a", "a", "a", "b", "b", "c"])
    assert np.array_equal(again[1], negative)  # fixed seed: the same pairs for every method


def test_verification_accuracy_by_hand():
    positive, negative = np.array([0.3, 0.5, 0.7]), np.array([0.55, 0.8, 0.9, 0.95])
    assert verification_accuracy(positive, negative, 0.6) == pytest.approx(5 / 7)  # misses 0.7 and 0.55
    best, threshold = best_threshold_accuracy(positive, negative)
    assert best == pytest.approx(6 / 7)  # two thresholds tie: between 0.5 and 0.55, or between 0.7 and 0.8
    assert 0.5 < threshold <= 0.55 or 0.7 < threshold <= 0.8


def test_identity_stub_scores_like_the_hr_photos(faces, recogniser):
    """Plumbing: a stub method that returns the HR faces must score PSNR inf, identity similarity 1 and exactly
    the verification accuracy of the HR reference row."""
    hr, identities = faces
    result = score_methods([(hr, identities)], {"identity_stub": lambda lr: hr.clone()}, recogniser)
    stub, reference = result["identity_stub"], result["hr"]
    assert set(stub) == set(METHOD_KEYS)
    assert np.isinf(stub["psnr"]) and stub["ssim"] == pytest.approx(1.0)
    assert stub["identity_similarity"] == pytest.approx(1.0) and stub["identity_distance"] == pytest.approx(0.0)
    assert stub["verification_accuracy"] == reference["verification_accuracy"] >= 0.8
    assert result["images"] == 10 and result["identities"] == 4
    assert result["pairs"] == {"positive": 18, "negative": 19}  # 3 x 3 x 2 positives; 00004 adds one negative


def test_evaluate_hallucination_report(prepared, recogniser):
    torch.manual_seed(0)
    tiny = HallucinationNet(stem_channels=8, growth=4, dense_layers=(1, 1, 1, 1), upsample_channels=8)
    result = evaluate_hallucination(prepared, "test", {"sicnn": tiny}, device="cpu", recogniser=recogniser)
    for name in ("bicubic", "sicnn", "hr"):
        assert set(result[name]) == set(METHOD_KEYS)
    assert result["bicubic"]["psnr"] > result["sicnn"]["psnr"]  # an untrained CNN-H is worse than bicubic
    assert result["bicubic"]["identity_similarity"] > 0.8
    assert 0 <= result["bicubic"]["verification_accuracy"] <= 1
    assert result["hr"]["verification_accuracy"] >= result["bicubic"]["verification_accuracy"]
    assert result["recogniser"] == "dlib_face_recognition_resnet_model_v1" and result["threshold"] == 0.6


def test_without_dlib_identity_metrics_are_null(prepared, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dlib", None)  # importing it now raises ImportError
    result = evaluate_hallucination(prepared, "test", {}, device="cpu", limit=4)
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "eval" in note[0] and "dlib" in note[0]
    assert result["bicubic"]["psnr"] > 15 and result["bicubic"]["identity_similarity"] is None
    assert result["bicubic"]["verification_accuracy"] is None and result["recogniser"] is None
    assert result["images"] == 4


def test_split_batches_reads_the_dataset_order(prepared):
    dataset = FaceIdentityDataset(prepared, "test")
    batches = list(split_batches(prepared, "test", batch_size=4))
    assert [len(names) for _, names in batches] == [4, 4, 2]
    first = to_unit_tensor([dataset.read(0)])
    assert torch.equal(batches[0][0][:1], first) and batches[0][1][0] == "00001"


def test_unreadable_or_wrong_size_faces_are_skipped_and_named(prepared, tmp_path):
    import cv2

    from keenvision.core.io import ImageReadError

    folder = tmp_path / "faces"
    shutil.copytree(prepared, folder)
    files = sorted((folder / "test").rglob("*.png"))
    files[1].write_bytes(b"not a png")
    cv2.imwrite(str(files[4]), np.zeros((50, 50, 3), np.uint8))  # a stray file, not an aligned face
    with pytest.raises(ImageReadError, match=files[1].name):
        list(split_batches(folder, "test", batch_size=4))
    skipped: list[str] = []
    batches = list(split_batches(folder, "test", batch_size=4, skipped=skipped))
    assert [len(names) for _, names in batches] == [3, 3, 2]  # batches of 4 less the two bad files
    assert len(skipped) == 2 and files[1].name in skipped[0] and "96x112, got 50x50" in skipped[1]
    result = evaluate_hallucination(folder, "test", {}, device="cpu", recogniser=None)
    assert result["images"] == 8 and result["skipped"] == skipped and result["bicubic"]["psnr"] > 15
    for path in files:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="no readable face"):
        evaluate_hallucination(folder, "test", {}, device="cpu", recogniser=None)
