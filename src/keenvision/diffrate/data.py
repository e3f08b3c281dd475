"""Image-classification data for search, evaluation and fine-tuning, in the layouts users have.

``DIR`` may be: a folder with ``<split>/<class>/<image>`` (ImageNet style), a folder with ``<split>.zip`` holding
``<split>/<class>/<image>`` (the shared CIFAR-10), or, with no split folder, ``<class>/<image>`` directly. Classes
are the sorted folder names. Images are decoded on access, resized (shorter side to ``size / crop_pct``) and
centre-cropped as timm's evaluation transform does, then normalised with the model's mean and std.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm")
# the class folders of the shared CIFAR-10 (sorted, so the labels of `ImageClassificationData` are CIFAR-10's own)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# per-channel statistics of the CIFAR-10 training set (0..1 scale)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: square input ``size``, ``crop_pct`` of the resized image kept, mean and std (0..1)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> Preprocessing:
        """From timm's ``pretrained_cfg`` (set on every timm model and on our shipped ones)."""
        from timm.data import resolve_data_config

        config = resolve_data_config({}, model=model)
        return cls(int(config["input_size"][-1]), tuple(config["mean"]), tuple(config["std"]),
                   float(config.get("crop_pct", 0.875)))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> float ``[3, size, size]``."""
        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            short = round(self.size / self.crop_pct)
            width, height = image.size
            scale = short / min(width, height)
            image = image.resize((max(short, round(width * scale)), max(short, round(height * scale))),
                                 Image.BICUBIC)
            left, top = (image.size[0] - self.size) // 2, (image.size[1] - self.size) // 2
            image = image.crop((left, top, left + self.size, top + self.size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        mean, std = torch.tensor(self.mean).view(3, 1, 1), torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std


class ImageClassificationData(Dataset):
    """``(image [3, size, size], label)`` pairs from ``root`` in any of the layouts above."""

    def __init__(self, root: str | Path, split: str, preprocessing: Preprocessing | None,
                 limit_per_class: int | None = None):
        self.root, self.split, self.preprocessing = Path(root), split, preprocessing
        self._zip_path: Path | None = None
        self._zip: zipfile.ZipFile | None = None
        if (self.root / split).is_dir():
            base = self.root / split
            entries = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            self._folder = base
        elif (self.root / f"{split}.zip").is_file():
            self._zip_path = self.root / f"{split}.zip"
            with zipfile.ZipFile(self._zip_path) as bundle:
                entries = sorted(n for n in bundle.namelist() if n.lower().endswith(IMAGE_SUFFIXES))
            self._folder = None
        elif self.root.is_dir() and any(p.is_dir() for p in self.root.iterdir()):
            base = self.root
            entries = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            self._folder = base
        else:
            raise FileNotFoundError(f"{self.root}: no '{split}/' folder, '{split}.zip' or class folders found")
        class_of = [Path(e).parent.name for e in entries]
        self.classes = sorted(set(class_of))
        if not entries:
            raise ValueError(f"{self.root}: no images for split '{split}'")
        index = {name: i for i, name in enumerate(self.classes)}
        kept, counts = [], {}
        for entry, name in zip(entries, class_of):
            counts[name] = counts.get(name, 0) + 1
            if limit_per_class is None or counts[name] <= limit_per_class:
                kept.append((entry, index[name]))
        self.samples = kept

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, entry: str) -> Image.Image:
        if self._zip_path is not None:
            if self._zip is None:  # opened lazily, once per DataLoader worker
                self._zip = zipfile.ZipFile(self._zip_path)
            return Image.open(io.BytesIO(self._zip.read(entry)))
        return Image.open(self._folder / entry)

    def image(self, item: int) -> Image.Image:
        """The decoded image of sample ``item``, before preprocessing."""
        entry = self.samples[item][0]
        try:
            image = self._read(entry)
            image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{entry}: not a readable image ({type(error).__name__})") from None
        return image

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        return self.preprocessing(self.image(item)), self.samples[item][1]

    def __getstate__(self):  # zip handles do not cross process boundaries
        state = dict(self.__dict__)
        state["_zip"] = None
        return state


def load_cifar10(split: str, cache_dir: str | Path, root: str | Path | None = None,
                 images_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 ``split`` ("train" or "test") as uint8 images ``[N, 32, 32, 3]`` and int64 labels ``[N]``, read by
    `ImageClassificationData` from ``<root>/cifar10`` (default root: the shared data) once and cached as .npz;
    ``images_per_class`` keeps the first so many of each class (quick runs and tests)."""
    from ..core.data import data_root

    suffix = f"_{images_per_class}" if images_per_class else ""
    cache = Path(cache_dir) / f"cifar10_{split}{suffix}.npz"
    if cache.is_file():
        with np.load(cache) as stored:
            return stored["images"], stored["labels"]
    folder = Path(root or data_root()) / "cifar10"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found (set KEEN_DATA to the shared data folder)")
    dataset = ImageClassificationData(folder, split, None, limit_per_class=images_per_class)
    if tuple(dataset.classes) != CIFAR10_CLASSES:
        raise ValueError(f"{folder}: classes {dataset.classes} are not CIFAR-10's")
    images = np.stack([np.asarray(dataset.image(index).convert("RGB")) for index in range(len(dataset))])
    labels = np.asarray([label for _, label in dataset.samples], np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=images, labels=labels)
    return images, labels
