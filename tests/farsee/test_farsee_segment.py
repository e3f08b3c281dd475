"""Segmenter on real CamVid images and a real video: label maps of the input size for any size and colour mode,
batching that does not change results, palettes, overlays, label PNGs, and a corrupt file skipped. Random-weight
tiny networks (shipped weights are not needed for any of this)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from keenvision.core.io import read_image
from keenvision.farsee.data import read_label
from keenvision.farsee.model import FarSeeNet
from keenvision.farsee.segment import (
    CAMVID_CLASSES,
    CAMVID_COLOURS,
    Segmenter,
    class_palette,
    colourise,
    generated_palette,
    overlay,
    read_labels,
    write_labels,
    write_outputs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def camvid_images(data_dir):
    folder = data_dir / "camvid" / "val" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return sorted(folder.glob("*.jpg"))[:3]


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    model = FarSeeNet(len(CAMVID_CLASSES), width=16, input_scale=0.5)
    model.class_names = CAMVID_CLASSES
    return Segmenter(model=model, device="cpu", batch_size=2)


def test_real_images_give_label_maps_of_their_own_size(segmenter, camvid_images):
    images = [read_image(path).pixels for path in camvid_images]
    assert images[0].shape == (360, 480, 3)
    odd = cv2.resize(images[0], (401, 301))  # odd sizes, not multiples of 32
    grey = cv2.cvtColor(images[1], cv2.COLOR_RGB2GRAY)  # 2-D: read_image makes it RGB
    results = segmenter.segment_arrays([images[0], images[1], odd, grey, images[2]])
    assert [r.labels.shape for r in results] == [(360, 480), (360, 480), (301, 401), (360, 480), (360, 480)]
    for result in results:
        assert result.labels.dtype == np.uint8
        assert result.labels.max() < len(CAMVID_CLASSES)
        assert result.probabilities is None


def test_batching_does_not_change_the_result(segmenter, camvid_images):
    images = [read_image(path).pixels for path in camvid_images]
    batched = segmenter.segment_arrays(images, probabilities=True)  # batches of 2 + 1
    for image, result in zip(images, batched):
        alone = segmenter.segment(image, probabilities=True)
        np.testing.assert_allclose(result.probabilities, alone.probabilities, atol=1e-5)
    probabilities = batched[0].probabilities
    assert probabilities.shape == (len(CAMVID_CLASSES), 360, 480)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(0), batched[0].labels)


def test_grey_and_rgba_files_and_huge_images(segmenter, camvid_images, tmp_path):
    image = read_image(camvid_images[0]).pixels
    Image.fromarray(image).convert("L").save(tmp_path / "grey.png")
    rgba = np.dstack([image, np.full(image.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    for name in ("grey.png", "rgba.png"):
        assert segmenter.segment(tmp_path / name).labels.shape == (360, 480)
    small_budget = Segmenter(model=segmenter.model, device="cpu", max_pixels=120 * 160)  # 360x480 runs at 1/3
    labels = small_budget.segment(image).labels
    assert labels.shape == (360, 480)
    blocks = labels.reshape(120, 3, 160, 3)  # nearest-resized back by 3: constant 3x3 blocks
    assert (blocks == blocks[:, :1, :, :1]).all()
    np.testing.assert_array_equal(blocks[:, 0, :, 0], small_budget.segment(cv2.resize(image, (160, 120),
                                                                                     interpolation=cv2.INTER_AREA)).labels)


def test_palettes():
    np.testing.assert_array_equal(class_palette(CAMVID_CLASSES), CAMVID_COLOURS)
    np.testing.assert_array_equal(class_palette([name.lower() for name in CAMVID_CLASSES]), CAMVID_COLOURS)
    assert tuple(CAMVID_COLOURS[CAMVID_CLASSES.index("Road")]) == (128, 64, 128)
    generated = generated_palette(40)
    assert len({tuple(c) for c in generated}) == 40  # all distinct
    assert not (generated == 0).all(axis=1).any()  # none black
    np.testing.assert_array_equal(class_palette(5), generated_palette(5))
    np.testing.assert_array_equal(class_palette(["a", "b"]), generated_palette(2))


def test_overlay_and_colourise():
    image = np.full((4, 5, 3), 200, np.uint8)
    labels = np.array([[0, 1, 2, 11, 255]] * 4, np.uint8)  # 11 and 255: outside the 11-colour palette
    colours = colourise(labels, CAMVID_COLOURS)
    np.testing.assert_array_equal(colours[0, 1], CAMVID_COLOURS[1])
    np.testing.assert_array_equal(colours[0, 3], [0, 0, 0])
    np.testing.assert_array_equal(overlay(image, labels, CAMVID_COLOURS, alpha=0.0), image)
    full = overlay(image, labels, CAMVID_COLOURS, alpha=1.0)
    np.testing.assert_array_equal(full[:, :3], colours[:, :3])
    np.testing.assert_array_equal(full[:, 3:], image[:, 3:])  # unknown labels keep the image
    half = overlay(image, labels, CAMVID_COLOURS, alpha=0.5)
    np.testing.assert_allclose(half[0, 0].astype(float), (200 + CAMVID_COLOURS[0].astype(float)) / 2, atol=1)
    with pytest.raises(ValueError, match="do not match"):
        overlay(image, labels[:2], CAMVID_COLOURS)


def test_label_png_round_trip_through_the_dataset_reader(segmenter, camvid_images, tmp_path):
    labels = segmenter.segment(camvid_images[0]).labels
    write_labels(tmp_path / "x_labels.png", labels)
    np.testing.assert_array_equal(read_label(tmp_path / "x_labels.png"), labels)
    np.testing.assert_array_equal(read_labels(tmp_path / "x_labels.png"), labels)
    with pytest.raises(ValueError, match=".png"):
        write_labels(tmp_path / "x.jpg", labels)


def test_folder_with_a_corrupt_file_and_a_video(segmenter, camvid_images, data_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in camvid_images[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    video = data_dir / "video_samples" / "single_face.mp4"
    results = list(segmenter.segment_files([folder, video], every=30))
    errors = [r for r, _ in results if r.error is not None]
    good = [(r, image) for r, image in results if r.error is None]
    assert [r.path.name for r in errors] == ["broken.jpg"]
    assert "not a readable image" in errors[0].error
    assert [r.frame for r, _ in good] == [None, None, 0, 30, 60]  # 72 frames, every 30th
    assert all(r.segmentation.labels.shape == image.shape[:2] for r, image in good)
    assert good[2][0].segmentation.labels.shape == (360, 640)
    written = write_outputs(good[2][0], good[2][1], tmp_path / "out", segmenter.palette)
    assert [p.name for p in written] == ["single_face_f000000_overlay.png", "single_face_f000000_labels.png"]
    assert read_image(written[0]).pixels.shape == (360, 640, 3)
    with pytest.raises(ValueError, match="every"):
        next(segmenter.segment_files([folder], every=0))


def test_demo_section_with_and_without_shipped_weights(camvid_images, tmp_path, monkeypatch):
    from keenvision.farsee import demo, model

    without = demo.demo_section(tmp_path, "cpu")
    if not (tmp_path / "farsee_overlay.png").exists():  # the shipped weights are not there yet: speed only
        assert without.images == [] and "not in this install" in without.paragraphs[1]
        assert "fps" in without.paragraphs[0]

    def random_camvid_model(name, device):
        torch.manual_seed(0)
        network = FarSeeNet(len(CAMVID_CLASSES), width=16)
        network.class_names = CAMVID_CLASSES
        return network.to(device).eval()

    monkeypatch.setattr(model, "load_farsee", random_camvid_model)
    section = demo.demo_section(tmp_path, "cpu")
    assert [name for name, _ in section.images] == ["farsee_overlay.png", "farsee_labels.png"]
    assert read_image(tmp_path / "farsee_overlay.png").pixels.shape == (360, 480, 3)
    assert demo.DEMO_IMAGE.stem == "camvid_street" and "0016E5_08039" in section.images[0][1]
    assert (camvid_images[0].parent / "0016E5_08039.jpg").is_file()  # a validation frame: never trained on
    assert sum(float(row[2].rstrip("%")) for row in section.table[1]) == pytest.approx(100, abs=0.5)
