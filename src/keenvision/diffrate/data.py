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

    def __init__(self, root: str | Path, split: str, preprocessing: Preprocessing, limit_per_class: int | None = None):
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

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        entry, label = self.samples[item]
        try:
            image = self._read(entry)
            image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{entry}: not a readable image ({type(error).__name__})") from None
        return self.preprocessing(image), label

    def __getstate__(self):  # zip handles do not cross process boundaries
        state = dict(self.__dict__)
        state["_zip"] = None
        return state
