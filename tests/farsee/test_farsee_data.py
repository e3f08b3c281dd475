"""FarSee-Net data: the real CamVid files, a synthetic Cityscapes tree, augmentation, class frequencies, and each
bad-input error (bad files written into tmp_path)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from keenvision.farsee import IMAGENET_MEAN, IMAGENET_STD, CamVidDataset, CityscapesDataset, TrainAugmentation
from keenvision.farsee.data import CITYSCAPES_CLASSES, camvid_drive, class_frequencies, jitter_colour


@pytest.fixture(scope="module")
def camvid_root(data_dir):
    root = data_dir / "camvid"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


def test_real_camvid_splits(camvid_root):
    train, val = CamVidDataset(camvid_root, "train"), CamVidDataset(camvid_root, "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.num_classes == 11 and train.class_names[3] == "Road" and train.ignore_index == 11
    image, label = val[0]
    assert image.shape == (3, 360, 480) and image.dtype == torch.float32
    assert label.shape == (360, 480) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= set(range(12)) and len(label.unique()) > 3
    # normalised with the ImageNet statistics: undoing it gives the decoded JPEG back
    raw = np.asarray(Image.open(val.pairs[0][0]).convert("RGB"))
    restored = image * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert np.abs(restored.permute(1, 2, 0).numpy() * 255 - raw).max() < 1e-3
    assert all(i.stem == l.stem for i, l in train.pairs)


def test_real_camvid_class_frequencies(camvid_root):
    frequencies = class_frequencies(CamVidDataset(camvid_root, "val"))
    names = CamVidDataset(camvid_root, "val").class_names
    share = dict(zip(names, frequencies))
    assert frequencies.sum() == pytest.approx(1.0)
    assert share["Road"] > 0.15 and share["Building"] > 0.1 and share["Sky"] > 0.05
    assert all(share[rare] < 0.03 for rare in ("Pole", "SignSymbol", "Pedestrian", "Bicyclist"))


def test_augmentation_on_a_real_image(camvid_root):
    dataset = CamVidDataset(camvid_root, "train")
    image, label = dataset.read(0)
    # scale 0.5: the 180x240 image sits in a 256x320 crop, padded with the ignore index / the mean colour
    augment = TrainAugmentation((256, 320), ignore_index=11, scale_range=(0.5, 0.5), flip_probability=0.0)
    crop_image, crop_label = augment(image, label)
    assert crop_image.shape == (3, 256, 320) and crop_label.shape == (256, 320)
    assert (crop_label[180:] == 11).all() and (crop_label[:, 240:] == 11).all()
    assert (crop_image[:, 180:] == 0).all()
    assert (crop_label[:180, :240] != 11).float().mean() > 0.5
    # the same random draws with a certain flip give the mirror image
    flip = TrainAugmentation((256, 320), 11, (0.5, 0.5), flip_probability=1.0)
    torch.manual_seed(3)
    plain = augment(image, label)
    torch.manual_seed(3)
    flipped = flip(image, label)
    assert torch.equal(flipped[1], plain[1].flip(-1)) and torch.allclose(flipped[0], plain[0].flip(-1))
    # scaled up: a crop of real content only, labels still valid class indices
    big = TrainAugmentation((200, 200), 11, (1.5, 2.0))
    for _ in range(3):
        crop_image, crop_label = big(image, label)
        assert crop_image.shape == (3, 200, 200) and int(crop_label.max()) <= 11
    with pytest.raises(ValueError, match="scale_range"):
        TrainAugmentation((10, 10), 11, (2.0, 1.0))


def _write_camvid(root, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], split="train"):
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "labels").mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps({"classes": ["a", "b", "c"], "ignore_index": 3}))
    for name, pixels in images.items():
        Image.fromarray(pixels).save(root / split / "images" / name)
    for name, values in labels.items():
        Image.fromarray(values.astype(np.uint8)).save(root / split / "labels" / name)


def test_grey_images_become_rgb_and_any_split_name_works(tmp_path):
    label = np.array([[0, 1, 2, 3]] * 4)
    _write_camvid(tmp_path, {"g.png": np.full((4, 4), 77, np.uint8)}, {"g.png": label}, split="holdout")
    image, read_label = CamVidDataset(tmp_path, "holdout")[0]
    assert image.shape == (3, 4, 4)
    assert torch.allclose(image[0], image[0, 0, 0].expand(4, 4))  # grey copied into the three channels
    assert read_label.tolist() == label.tolist()


def test_camvid_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        CamVidDataset(tmp_path / "absent", "train")
    (tmp_path / "train" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="classes.json"):
        CamVidDataset(tmp_path, "train")
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a", "b", "c"], "ignore_index": 3}))
    with pytest.raises(FileNotFoundError, match="labels"):
        CamVidDataset(tmp_path, "train")
    rgb = np.zeros((6, 8, 3), np.uint8)
    good = np.zeros((6, 8), np.uint8)
    _write_camvid(tmp_path, {"a.jpg": rgb, "b.jpg": rgb, "c.png": rgb}, {"a.png": good})
    with pytest.raises(ValueError, match=r"2 image\(s\) have no label.*b\.jpg, c\.png"):
        CamVidDataset(tmp_path, "train")


@pytest.mark.parametrize("label, message", [
    (np.full((6, 8), 7, np.uint8), r"bad\.png: label values \[7\] outside \[0, 3\)"),
    (np.zeros((5, 8), np.uint8), r"bad\.png: label size 8x5 differs from image bad\.jpg size 8x6"),
    (np.zeros((6, 8, 3), np.uint8), r"bad\.png: a label must be a single-channel PNG"),
])
def test_bad_labels_name_the_file(tmp_path, label, message):
    _write_camvid(tmp_path, {"bad.jpg": np.zeros((6, 8, 3), np.uint8)}, {})
    Image.fromarray(label).save(tmp_path / "train" / "labels" / "bad.png")
    dataset = CamVidDataset(tmp_path, "train")
    with pytest.raises(ValueError, match=message):
        dataset[0]


def test_ignore_index_is_allowed_in_labels(tmp_path):
    _write_camvid(tmp_path, {"x.png": np.zeros((2, 3, 3), np.uint8)}, {"x.png": np.array([[3, 0, 1], [2, 3, 3]])})
    assert CamVidDataset(tmp_path, "train")[0][1].tolist() == [[3, 0, 1], [2, 3, 3]]


def _write_cityscapes(root, split, files: dict[str, np.ndarray | None]):
    for name, label in files.items():
        city = name.split("_")[0]
        image_dir, label_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 16, 3), 100, np.uint8)).save(image_dir / f"{name}_leftImg8bit.png")
        if label is not None:
            Image.fromarray(label.astype(np.uint8)).save(label_dir / f"{name}_gtFine_labelTrainIds.png")
            Image.fromarray(np.zeros((8, 16), np.uint8)).save(label_dir / f"{name}_gtFine_labelIds.png")


def test_cityscapes_synthetic_tree(tmp_path):
    label = np.full((8, 16), 255)
    label[:4] = 18
    label[4:, :8] = 0
    _write_cityscapes(tmp_path, "val", {"aachen_000000_000019": label, "aachen_000001_000019": label,
                                        "bremen_000000_000019": np.zeros((8, 16))})
    dataset = CityscapesDataset(tmp_path, "val")
    assert len(dataset) == 3 and dataset.num_classes == 19 == len(CITYSCAPES_CLASSES)
    assert dataset.ignore_index == 255 and dataset.class_names[-1] == "bicycle"
    assert [p[1].name for p in dataset.pairs][2] == "bremen_000000_000019_gtFine_labelTrainIds.png"
    image, read = dataset[0]
    assert image.shape == (3, 8, 16) and sorted(read.unique().tolist()) == [0, 18, 255]
    frequencies = class_frequencies(dataset)  # 32 + 32 + 128 pixels of class 0, 64 + 64 of class 18
    assert frequencies[0] == pytest.approx(192 / 320) and frequencies[18] == pytest.approx(128 / 320)

    _write_cityscapes(tmp_path, "train", {"zurich_000000_000019": None})
    with pytest.raises(ValueError, match=r"1 image\(s\) have no label.*zurich_000000_000019_leftImg8bit\.png"):
        CityscapesDataset(tmp_path, "train")
    shutil.rmtree(tmp_path / "gtFine" / "train")
    with pytest.raises(FileNotFoundError, match="gtFine"):
        CityscapesDataset(tmp_path, "train")


def test_drop_bad_pairs_keeps_the_good_ones_and_names_the_bad(tmp_path):
    rgb, good = np.zeros((6, 8, 3), np.uint8), np.zeros((6, 8), np.uint8)
    _write_camvid(tmp_path, {"a.jpg": rgb, "b.jpg": rgb, "c.jpg": rgb}, {"a.png": good, "c.png": good})
    Image.fromarray(np.full((6, 8), 9, np.uint8)).save(tmp_path / "train" / "labels" / "b.png")
    (tmp_path / "train" / "images" / "c.jpg").write_bytes(b"not a jpeg")
    dataset = CamVidDataset(tmp_path, "train")
    dropped = dataset.drop_bad_pairs()
    assert [image.name for image, _ in dataset.pairs] == ["a.jpg"] and len(dataset) == 1
    assert len(dropped) == 2 and "b.png: label values [9]" in dropped[0] and "c.jpg" in dropped[1]
    (tmp_path / "train" / "images" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no usable image/label pair"):
        CamVidDataset(tmp_path, "train").drop_bad_pairs()


class _AlwaysClassZero(torch.nn.Module):
    num_classes = 19

    def forward(self, images):
        logits = torch.zeros(images.shape[0], self.num_classes, *images.shape[-2:])
        logits[:, 0] = 1.0
        return logits


def test_eval_reads_the_cityscapes_layout(tmp_path):
    from keenvision.farsee.evaluate import evaluate_segmentation

    label = np.full((8, 16), 255)
    label[:4] = 18
    label[4:, :8] = 0
    _write_cityscapes(tmp_path, "val", {"aachen_000000_000019": label, "bremen_000000_000019": np.zeros((8, 16))})
    result = evaluate_segmentation(_AlwaysClassZero(), tmp_path, "val")
    # class 0: 32 + 128 true pixels, all predicted right; class 18: 64 pixels, all predicted as 0
    assert result["dataset"] == "cityscapes" and result["images"] == 2 and result["skipped"] == []
    assert result["per_class_iou"]["road"] == pytest.approx(160 / 224) and result["per_class_iou"]["bicycle"] == 0
    assert result["per_class_iou"]["car"] is None and result["miou"] == pytest.approx(160 / 224 / 2)
    assert result["pixel_accuracy"] == pytest.approx(160 / 224)


def test_drives_and_leaving_one_out_on_the_real_split(camvid_root):
    both = CamVidDataset(camvid_root, "train+val")
    assert len(both) == 367 + 101
    assert both.drives() == {"0001TP": 62, "0006R0": 101, "0016E5": 305}  # val's drive also fills 204 train frames
    assert camvid_drive(both.pairs[0][0]) == both.pairs[0][0].name.split("_")[0]
    train, held_out = CamVidDataset(camvid_root, "train+val"), CamVidDataset(camvid_root, "train+val")
    train.select_drive("0006R0", keep=False)
    held_out.select_drive("0006R0", keep=True)
    assert set(train.drives()) == {"0001TP", "0016E5"} and set(held_out.drives()) == {"0006R0"}
    assert not {p[0] for p in train.pairs} & {p[0] for p in held_out.pairs}
    with pytest.raises(ValueError, match="drive 'Seq05VD' has no frame .* its drives are 0001TP, 0006R0, 0016E5"):
        both.select_drive("Seq05VD", keep=True)
    only_val = CamVidDataset(camvid_root, "val")
    with pytest.raises(ValueError, match="no frame .* is left without drive '0016E5'"):
        only_val.select_drive("0016E5", keep=False)


def test_colour_jitter_on_a_real_image(camvid_root):
    image, _ = CamVidDataset(camvid_root, "val").read(0)
    assert np.array_equal(jitter_colour(image, 0.0), image)
    torch.manual_seed(0)
    jittered = [jitter_colour(image, 0.4) for _ in range(4)]
    means = [float(j.mean()) for j in jittered]
    assert all(j.shape == image.shape and j.dtype == np.uint8 for j in jittered)
    assert max(abs(m - float(image.mean())) for m in means) > 5  # the light changes ...
    # ... but the scene does not: each jittered image stays strongly correlated with the original
    assert all(np.corrcoef(j.reshape(-1), image.reshape(-1))[0, 1] > 0.8 for j in jittered)
    with pytest.raises(ValueError, match="colour_jitter"):
        TrainAugmentation((64, 64), 11, colour_jitter=1.5)
