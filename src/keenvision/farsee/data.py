"""Segmentation datasets (CamVid, Cityscapes), training augmentation and class statistics for FarSee-Net.

Every dataset yields ``(image, label)``: ``image`` float ``[3, H, W]`` normalised with the ImageNet mean/std,
``label`` int64 ``[H, W]`` holding class indices ``0..K-1`` or the dataset's ``ignore_index``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..core.io import read_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0..1 scale: what timm's ImageNet backbones expect
IMAGENET_STD = (0.229, 0.224, 0.225)

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
CITYSCAPES_IGNORE_INDEX = 255

CAMVID_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

Transform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def normalise(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """RGB uint8 ``[H, W, 3]`` -> float ``[3, H, W]``, ``(x / 255 - mean) / std``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class Normalise:
    """The evaluation transform: normalisation only, full image."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return normalise(image, self.mean, self.std), torch.from_numpy(label.astype(np.int64))


class TrainAugmentation:
    """Random scale, random crop, horizontal flip, then normalisation (the usual real-time segmentation recipe).

    - scale: one factor uniform in ``scale_range`` for both sides (image bilinear, label nearest);
    - crop: ``crop_size`` (height, width) at a uniform position; a scaled image smaller than the crop is padded at
      the bottom/right, the label with ``ignore_index`` (so padding never counts) and the image with the mean colour
      (0 after normalisation);
    - flip: left-right with probability ``flip_probability``.

    The default ``scale_range`` (0.5, 2.0) is the common Cityscapes choice; the CamVid recipe narrows it (see
    configs/farsee/camvid.yaml). Randomness comes from torch's generator, which DataLoader seeds per worker.
    """

    def __init__(self, crop_size: Sequence[int], ignore_index: int, scale_range: Sequence[float] = (0.5, 2.0),
                 flip_probability: float = 0.5, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width), got {crop_size}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.crop_height, self.crop_width = int(crop_size[0]), int(crop_size[1])
        self.ignore_index = int(ignore_index)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip_probability = float(flip_probability)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand(()).item()
        height, width = label.shape
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 takes (width, height)
        if size != (width, height):
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        image_tensor = normalise(image, self.mean, self.std)
        label_tensor = torch.from_numpy(label.astype(np.int64))
        pad_bottom = max(0, self.crop_height - label_tensor.shape[0])
        pad_right = max(0, self.crop_width - label_tensor.shape[1])
        if pad_bottom or pad_right:
            image_tensor = torch.nn.functional.pad(image_tensor, (0, pad_right, 0, pad_bottom))
            label_tensor = torch.nn.functional.pad(label_tensor, (0, pad_right, 0, pad_bottom), value=self.ignore_index)
        top = int(torch.randint(0, label_tensor.shape[0] - self.crop_height + 1, ()))
        left = int(torch.randint(0, label_tensor.shape[1] - self.crop_width + 1, ()))
        image_tensor = image_tensor[:, top:top + self.crop_height, left:left + self.crop_width]
        label_tensor = label_tensor[top:top + self.crop_height, left:left + self.crop_width]
        if torch.rand(()).item() < self.flip_probability:
            image_tensor, label_tensor = image_tensor.flip(-1), label_tensor.flip(-1)
        return image_tensor.contiguous(), label_tensor.contiguous()


def read_label(path: str | Path) -> np.ndarray:
    """A single-channel label PNG as an int64 ``[H, W]`` array of class indices (palette images: their indices)."""
    try:
        with Image.open(path) as label:
            if label.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise ValueError(f"{path}: a label must be a single-channel PNG of class indices, got mode "
                                 f"{label.mode} (colour-coded labels must be converted to indices first)")
            return np.asarray(label, dtype=np.int64)
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: not a readable label image ({type(error).__name__})") from None


class SegmentationDataset(Dataset):
    """Image/label file pairs with class names and an ignore index; reads, checks and transforms one pair per item.

    Checks made when a pair is read (ValueError naming the file): image and label sizes match, and label values are
    in ``[0, K)`` or equal to ``ignore_index``.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], class_names: Sequence[str], ignore_index: int,
                 transform: Transform | None = None):
        self.pairs = [(Path(image), Path(label)) for image, label in pairs]
        self.class_names = tuple(class_names)
        self.ignore_index = int(ignore_index)
        self.transform = transform or Normalise()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``index``-th pair as read and checked: RGB uint8 ``[H, W, 3]`` (grey images made RGB), int64
        ``[H, W]`` label."""
        image_path, label_path = self.pairs[index]
        image = read_image(image_path).pixels
        label = read_label(label_path)
        if image.shape[:2] != label.shape:
            raise ValueError(f"{label_path}: label size {label.shape[1]}x{label.shape[0]} differs from image "
                             f"{image_path.name} size {image.shape[1]}x{image.shape[0]}")
        bad = (label < 0) | ((label >= self.num_classes) & (label != self.ignore_index))
        if bad.any():
            values = sorted(set(np.unique(label[bad]).tolist()))[:5]
            raise ValueError(f"{label_path}: label values {values} outside [0, {self.num_classes}) and not the "
                             f"ignore index {self.ignore_index}")
        return image, label

    def read_label(self, index: int) -> np.ndarray:
        """The ``index``-th label only (class statistics), checked like in `read`."""
        label = read_label(self.pairs[index][1])
        bad = (label < 0) | ((label >= self.num_classes) & (label != self.ignore_index))
        if bad.any():
            raise ValueError(f"{self.pairs[index][1]}: label values {sorted(set(label[bad].tolist()))[:5]} outside "
                             f"[0, {self.num_classes}) and not the ignore index {self.ignore_index}")
        return label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.read(index)
        return self.transform(image, label)

    def drop_bad_pairs(self) -> list[str]:
        """Reads and checks every pair once (as `read` does) and keeps only the good ones, so that one corrupt
        file or bad label cannot stop a training run at whatever step draws it (and again on every resume).

        Returns one message per dropped pair, naming the file and the reason. ValueError if none is left.
        """
        good, dropped = [], []
        for index, pair in enumerate(self.pairs):
            try:
                self.read(index)
            except ValueError as error:  # ImageReadError is a ValueError
                dropped.append(str(error))
            else:
                good.append(pair)
        if not good:
            raise ValueError(f"no usable image/label pair ({len(dropped)} bad): {dropped[0]}")
        self.pairs = good
        return dropped


def _require_folder(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    return path


def _missing_labels_error(images: list[Path], folder: Path) -> ValueError:
    names = ", ".join(p.name for p in images[:10]) + (f" and {len(images) - 10} more" if len(images) > 10 else "")
    return ValueError(f"{len(images)} image(s) have no label in {folder}: {names}")


class CamVidDataset(SegmentationDataset):
    """A CamVid-style folder: ``<root>/<split>/images/*.jpg|*.png`` and ``<root>/<split>/labels/*.png`` (single
    channel, matched to images by file stem) with ``<root>/classes.json`` (``{"classes": [...], "ignore_index": 11}``).

    Any split name works. Images without a label raise ValueError listing them; labels without an image are
    ignored. The shared data holds the SegNet split (367 train, 101 val, 480x360, 11 classes, 11 = ignore).
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None):
        root = _require_folder(Path(root))
        classes_file = root / "classes.json"
        if not classes_file.is_file():
            raise FileNotFoundError(f"{classes_file}: no such file (it names the classes and the ignore index)")
        classes = json.loads(classes_file.read_text())
        if not isinstance(classes.get("classes"), list) or "ignore_index" not in classes:
            raise ValueError(f"{classes_file}: expected keys 'classes' (a list) and 'ignore_index'")
        image_folder = _require_folder(root / split / "images")
        label_folder = _require_folder(root / split / "labels")
        images = sorted(p for p in image_folder.iterdir()
                        if p.suffix.lower() in CAMVID_IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images:
            raise ValueError(f"{image_folder}: no .jpg or .png images")
        labels = {p.stem: p for p in label_folder.glob("*.png")}
        missing = [p for p in images if p.stem not in labels]
        if missing:
            raise _missing_labels_error(missing, label_folder)
        super().__init__([(p, labels[p.stem]) for p in images], classes["classes"], classes["ignore_index"],
                         transform)
        self.root, self.split = root, split


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations: ``<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``<root>/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (the 19 training classes, 255 = ignore; made by the
    official ``cityscapesscripts/preparation/createTrainIdLabelImgs.py``)."""

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None):
        root = _require_folder(Path(root))
        image_folder = _require_folder(root / "leftImg8bit" / split)
        label_folder = _require_folder(root / "gtFine" / split)
        images = sorted(image_folder.glob("*/*_leftImg8bit.png"))
        if not images:
            raise ValueError(f"{image_folder}: no <city>/*_leftImg8bit.png images")
        pairs, missing = [], []
        for image in images:
            stem = image.name[: -len("_leftImg8bit.png")]
            label = label_folder / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"
            (pairs.append((image, label)) if label.is_file() else missing.append(image))
        if missing:
            raise _missing_labels_error(missing, label_folder)
        super().__init__(pairs, CITYSCAPES_CLASSES, CITYSCAPES_IGNORE_INDEX, transform)
        self.root, self.split = root, split


def class_frequencies(dataset: SegmentationDataset) -> np.ndarray:
    """``p_c``: the fraction of labelled (not ignored) pixels of each class over the whole dataset, ``[K]``."""
    counts = np.zeros(dataset.num_classes, np.int64)
    for index in range(len(dataset)):
        label = dataset.read_label(index)
        counts += np.bincount(label[label != dataset.ignore_index].ravel(), minlength=dataset.num_classes)
    total = counts.sum()
    if total == 0:
        raise ValueError("the dataset has no labelled pixels")
    return counts / total
