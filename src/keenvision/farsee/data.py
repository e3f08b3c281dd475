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


def jitter_colour(image: np.ndarray, strength: float) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` with brightness, contrast and saturation each multiplied by a factor drawn uniformly
    from ``[1 - strength, 1 + strength]`` (torch's generator), in a random order, as torchvision's ColorJitter."""
    pixels = image.astype(np.float32)
    factors = 1 + strength * (2 * torch.rand(3).numpy() - 1)
    for operation in torch.randperm(3).tolist():
        if operation == 0:  # brightness
            pixels = pixels * factors[0]
        elif operation == 1:  # contrast, about the mean grey level
            grey = (pixels @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
            pixels = (pixels - grey) * factors[1] + grey
        else:  # saturation, about each pixel's grey
            grey = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
            pixels = (pixels - grey[..., None]) * factors[2] + grey[..., None]
        pixels = np.clip(pixels, 0, 255)
    return pixels.astype(np.uint8)


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
    - flip: left-right with probability ``flip_probability``;
    - colour: brightness, contrast and saturation each scaled by a factor uniform in ``1 +- colour_jitter``
      (`jitter_colour`; 0 = off): an unseen drive is mostly another light and another camera exposure.

    The default ``scale_range`` (0.5, 2.0) is the common Cityscapes choice; the CamVid recipe narrows it (see
    configs/farsee/camvid.yaml). Randomness comes from torch's generator, which DataLoader seeds per worker.
    """

    def __init__(self, crop_size: Sequence[int], ignore_index: int, scale_range: Sequence[float] = (0.5, 2.0),
                 flip_probability: float = 0.5, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, colour_jitter: float = 0.0):
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width), got {crop_size}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.crop_height, self.crop_width = int(crop_size[0]), int(crop_size[1])
        self.ignore_index = int(ignore_index)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip_probability = float(flip_probability)
        if not 0 <= colour_jitter < 1:
            raise ValueError(f"colour_jitter must be in [0, 1), got {colour_jitter}")
        self.colour_jitter = float(colour_jitter)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand(()).item()
        height, width = label.shape
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 takes (width, height)
        if size != (width, height):
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        if self.colour_jitter > 0:
            image = jitter_colour(image, self.colour_jitter)
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
        pairs = []
        for part in split.split("+"):  # "train+val": the frames of both folders
            image_folder = _require_folder(root / part / "images")
            label_folder = _require_folder(root / part / "labels")
            images = sorted(p for p in image_folder.iterdir()
                            if p.suffix.lower() in CAMVID_IMAGE_SUFFIXES and not p.name.startswith("."))
            if not images:
                raise ValueError(f"{image_folder}: no .jpg or .png images")
            labels = {p.stem: p for p in label_folder.glob("*.png")}
            missing = [p for p in images if p.stem not in labels]
            if missing:
                raise _missing_labels_error(missing, label_folder)
            pairs += [(p, labels[p.stem]) for p in images]
        super().__init__(pairs, classes["classes"], classes["ignore_index"], transform)
        self.root, self.split = root, split

    def drives(self) -> dict[str, int]:
        """Frames per drive (`camvid_drive` of each file name), e.g. ``{"0001TP": 62, "0006R0": 101, ...}``."""
        counts: dict[str, int] = {}
        for image, _ in self.pairs:
            counts[camvid_drive(image)] = counts.get(camvid_drive(image), 0) + 1
        return dict(sorted(counts.items()))

    def select_drive(self, drive: str, keep: bool) -> None:
        """Keep only the frames of ``drive`` (``keep``) or all others. ValueError naming the drives there are when
        ``drive`` has no frame here, or when nothing is left."""
        known = self.drives()
        if drive not in known:
            raise ValueError(f"drive {drive!r} has no frame in {self.root / self.split}; its drives are "
                             f"{', '.join(known)}")
        pairs = [pair for pair in self.pairs if (camvid_drive(pair[0]) == drive) == keep]
        if not pairs:
            raise ValueError(f"no frame of {self.root / self.split} is left without drive {drive!r}")
        self.pairs = pairs


def camvid_drive(path: str | Path) -> str:
    """The drive (video sequence) a CamVid frame comes from: the file name up to its first ``_``
    (``0016E5_07959.jpg`` -> ``0016E5``). The SegNet split mixes drives: val is one drive whose other frames are
    in train, so leaving a whole drive out is what measures streets a model has never seen."""
    return Path(path).stem.split("_")[0]


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


def dataset_class(root: str | Path) -> type[SegmentationDataset]:
    """The layout of a dataset root: `CityscapesDataset` where ``<root>/leftImg8bit`` exists, else `CamVidDataset`."""
    return CityscapesDataset if (Path(root) / "leftImg8bit").is_dir() else CamVidDataset


def check_split(root: str | Path, split: str) -> None:
    """FileNotFoundError naming the first folder of ``split`` (CamVid's may be joined, ``train+val``) that is
    missing under ``root``, before anything is loaded."""
    root = Path(root)
    for part in split.split("+"):
        folder = root / "leftImg8bit" / part if dataset_class(root) is CityscapesDataset else root / part
        if not folder.is_dir():
            raise FileNotFoundError(f"split {split}: {folder} does not exist")


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
