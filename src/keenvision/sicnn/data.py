"""SICNN data: the value range and LR degradation, aligning identity photo folders to 96x112 faces with MTCNN, and
the dataset that reads them back.

Value range: RGB ``x / 127.5 - 1``, exactly [-1, 1], so CNN-H's tanh output and the HR target share one range. The
Caffe sample uses ``(x - 127.5) / 128`` ([-0.996, 0.996]); the 0.4 % scale difference does not matter for
training from scratch and keeps 0 and 255 reachable.

Degradation: the 12x14 LR face is the 8x8 average pooling (stride 8) of the 96x112 HR face, as the Caffe sample
does in-graph (``pooldata``) and the paper describes; not bicubic (SirLPS/Face-Hallucination uses bicubic).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..core.io import ImageReadError, is_image, read_image, write_atomic, write_image

if TYPE_CHECKING:  # annotations only: MTCNN is imported where it is made
    from ..mtcnn import MTCNN

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def normalise(images) -> torch.Tensor:
    """uint8 RGB ``[..., H, W, 3]`` (numpy or tensor) -> float ``[..., 3, H, W]`` in [-1, 1] (``x / 127.5 - 1``)."""
    tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    return tensor.movedim(-1, -3).float() / 127.5 - 1


def denormalise(faces: torch.Tensor) -> np.ndarray:
    """float ``[..., 3, H, W]`` in [-1, 1] -> uint8 RGB ``[..., H, W, 3]`` (rounded, clipped)."""
    scaled = ((faces.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
    return scaled.movedim(-3, -1).to(torch.uint8).numpy()


def degrade(high_resolution: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """The paper's LR face: ``factor`` x ``factor`` average pooling, stride ``factor``.

    ``[B, 3, 112, 96] -> [B, 3, 14, 12]`` (also ``[3, H, W] -> [3, H/8, W/8]``); H and W must be multiples of
    ``factor``. Each LR pixel is exactly the mean of its 8x8 HR block.
    """
    if high_resolution.dim() not in (3, 4):
        raise ValueError(f"expected [B, C, H, W] or [C, H, W], got {list(high_resolution.shape)}")
    height, width = high_resolution.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"{height}x{width} is not a multiple of the degradation factor {factor}")
    return F.avg_pool2d(high_resolution, factor, factor)


# ------------------------------------------------------------------------------------------------------------------
# preparing aligned faces


def split_identities(identities: Sequence[str], fractions: dict[str, float] | None = None,
                     seed: int = 0) -> dict[str, str]:
    """Assign whole identities to train/val/test (a seeded shuffle, then cut by ``fractions``), so no identity
    of val or test is seen in training. Each split with a positive fraction gets at least one identity when
    there are enough identities; train gets the rest."""
    fractions = {**{name: 0.0 for name in SPLITS}, **(fractions or DEFAULT_FRACTIONS)}
    unknown = set(fractions) - set(SPLITS)
    if unknown or any(v < 0 for v in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"fractions must be non-negative values for {SPLITS} with a positive sum, got {fractions}")
    total = sum(fractions.values())
    order = sorted(identities)
    random.Random(seed).shuffle(order)
    count = len(order)
    wanted = {name: fractions[name] / total for name in SPLITS}
    sizes = {name: int(round(wanted[name] * count)) for name in ("val", "test")}
    positive = [name for name in SPLITS if wanted[name] > 0]
    for name in ("val", "test"):
        if wanted[name] > 0 and sizes[name] == 0 and count >= len(positive):
            sizes[name] = 1
    if wanted["train"] > 0:  # train keeps at least one identity
        while sizes["val"] + sizes["test"] >= count and sizes["val"] + sizes["test"] > 0:
            larger = "val" if sizes["val"] >= sizes["test"] else "test"
            sizes[larger] -= 1
    assignment = {}
    for index, identity in enumerate(order):
        if index < sizes["test"]:
            assignment[identity] = "test"
        elif index < sizes["test"] + sizes["val"]:
            assignment[identity] = "val"
        else:
            assignment[identity] = "train" if wanted["train"] > 0 else ("val" if wanted["val"] > 0 else "test")
    return assignment


def _largest_face(faces):
    """The face with the largest box (the subject of an identity photo), ties broken by score."""
    return max(faces, key=lambda face: ((face.box[2] - face.box[0]) * (face.box[3] - face.box[1]), face.score))


def _detect_with_retry(detector, pixels: np.ndarray, min_side_for_detection: int):
    """Detect in ``pixels``; if nothing is found, retry on a padded (and, for small photos, upscaled) copy.

    Why: MTCNN's P-Net needs some context around a face, and in photos where the face fills the frame (ORL /
    AT&T: 92x112 grey head shots) the face box runs off the image and the cascade rejects it. Padding 25 % of the
    size on each side with the edge pixels, and upscaling so the short side reaches ``min_side_for_detection``,
    gives it that context. Returns ``(face, how)`` with landmarks mapped back to ``pixels``, or ``(None, why)``.
    """
    faces = detector.detect_arrays([pixels])[0]
    if faces:
        return _largest_face(faces), "direct"
    height, width = pixels.shape[:2]
    scale = max(1.0, min_side_for_detection / min(height, width))
    resized = cv2.resize(pixels, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC) \
        if scale > 1 else pixels
    pad_y, pad_x = resized.shape[0] // 4, resized.shape[1] // 4
    padded = cv2.copyMakeBorder(resized, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    faces = detector.detect_arrays([padded])[0]
    if not faces:
        return None, "no face found (also after padding/upscaling)"
    face = _largest_face(faces)
    offset = np.array([pad_x, pad_y], np.float64)
    face.box = (face.box.reshape(2, 2) - offset).reshape(4) / scale
    face.landmarks = (face.landmarks - offset) / scale
    return face, "padded"


def _align_with_border(pixels: np.ndarray, landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`keenvision.mtcnn.align` on an edge-padded copy, so template corners that fall outside a tight photo get
    the nearest pixels rather than black."""
    from keenvision.mtcnn import align

    pad = max(pixels.shape[:2]) // 2
    padded = cv2.copyMakeBorder(pixels, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return align(padded, np.asarray(landmarks, np.float64) + pad, size)


def prepare_faces(src: str | Path | Sequence[str | Path], out: str | Path, size: tuple[int, int] = (96, 112),
                  detector: MTCNN | None = None, fractions: dict[str, float] | None = None, seed: int = 0,
                  max_identities: int | None = None, overwrite: bool = False, min_side_for_detection: int = 160,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Detect, align and split a folder of identity photos for SICNN.

    Reads ``<src>/<identity>/<image>`` (any format `keenvision.core.io.read_image` reads: grey, RGBA, 16-bit are
    converted to RGB), detects faces with MTCNN (the largest one per photo; photos where none is found are retried
    padded/upscaled, see `_detect_with_retry`), aligns it with the 5 points onto the 96x112 template, and writes
    ``<out>/<split>/<identity>/<name>.png`` and ``<out>/manifest.json``.

    ``src`` may be several folders (``celeba_identities`` and ``celeba_identities_more``): each is split on its own
    with ``seed``, so adding a folder leaves the first one's split as it was (and gives the second its own test
    identities); an identity name found in two folders is an error naming them. Each identity's ``origin`` in the
    manifest is its folder's name.

    The split is by identity (``fractions`` of train/val/test, default 0.8/0.1/0.1, shuffled with ``seed``): test
    and val identities never appear in train. Unreadable files and photos without a face are listed under
    ``failures`` with a reason and skipped; identities left with one usable photo are kept and flagged
    ``single_photo`` (verification needs two), identities with none are dropped.

    Args:
        detector: a `keenvision.mtcnn.MTCNN` (default: one on the CPU, min_face_size 20).
        max_identities: use only the first so many identities (sorted by name).
        overwrite: replace an earlier preparation in ``out`` (its split folders are deleted first).
        progress: optional callable ``(done, total)`` called after each identity.

    Returns the manifest (also written as ``manifest.json``).
    """
    sources = [Path(src)] if isinstance(src, (str, Path)) else [Path(folder) for folder in src]
    out = Path(out)
    for folder in sources:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
    if (out / "manifest.json").exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a preparation (manifest.json); pass overwrite=True")
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
    if detector is None:
        from keenvision.mtcnn import MTCNN

        detector = MTCNN(device="cpu")
    folder_of: dict[str, Path] = {}
    assignment: dict[str, str] = {}
    for folder in sources:
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if max_identities:
            names = names[:max_identities]
        if not names:
            raise ValueError(f"{folder} has no identity folders (<src>/<identity>/<image>)")
        shared = sorted(set(names) & set(folder_of))
        if shared:
            raise ValueError(f"identities {', '.join(shared[:10])}{' ...' if len(shared) > 10 else ''} are in both "
                             f"{folder_of[shared[0]]} and {folder}: a person in two sources could straddle splits")
        folder_of.update({name: folder for name in names})
        assignment.update(split_identities(names, fractions, seed))
    identities = list(folder_of)
    faces, failures, per_identity = [], [], {}
    for done, identity in enumerate(identities, 1):
        split, src = assignment[identity], folder_of[identity]
        photos = sorted(p for p in (src / identity).iterdir() if p.is_file() and not p.name.startswith("."))
        written = 0
        used_names: set[str] = set()
        for photo in photos:
            source = str(photo.relative_to(src))
            if not is_image(photo):
                failures.append({"source": source, "identity": identity, "reason": "not an image file type"})
                continue
            try:
                pixels = read_image(photo).pixels
            except ImageReadError as error:
                failures.append({"source": source, "identity": identity, "reason": f"unreadable: {error}"})
                continue
            face, how = _detect_with_retry(detector, pixels, min_side_for_detection)
            if face is None:
                failures.append({"source": source, "identity": identity, "reason": how})
                continue
            name = photo.stem if photo.stem not in used_names else f"{photo.stem}_{photo.suffix.lstrip('.')}"
            used_names.add(name)
            relative = Path(split) / identity / f"{name}.png"
            write_image(out / relative, _align_with_border(pixels, face.landmarks, size))
            faces.append({"file": relative.as_posix(), "source": source, "identity": identity, "split": split,
                          "detection": how, "score": round(float(face.score), 5),
                          "box": [round(float(v), 2) for v in face.box],
                          "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks]})
            written += 1
        if written:
            per_identity[identity] = {"split": split, "faces": written, "single_photo": written == 1,
                                      "origin": src.name}
        else:
            failures.append({"source": identity, "identity": identity, "reason": "identity dropped: no usable photo"})
        if progress:
            progress(done, len(identities))
    manifest = {
        "source": str(sources[0]) if len(sources) == 1 else [str(folder) for folder in sources],
        "size": list(size), "seed": seed,
        "fractions": fractions or DEFAULT_FRACTIONS,
        "normalisation": "x / 127.5 - 1", "template": "SphereFace/CosFace 5-point 96x112",
        "counts": {split: {"identities": sum(1 for v in per_identity.values() if v["split"] == split),
                           "faces": sum(1 for f in faces if f["split"] == split)} for split in SPLITS},
        "identities": per_identity, "faces": faces, "failures": failures,
    }
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest


# ------------------------------------------------------------------------------------------------------------------
# reading prepared faces


class FaceIdentityDataset(Dataset):
    """Aligned faces of one split of a `prepare_faces` folder: ``(hr [3, 112, 96] float in [-1, 1], identity
    index)``.

    Identity indices are positions in ``identities``, the split's identity names sorted, so two datasets of the
    same folder and split agree (a margin head trained on one classifies the other). With ``flip`` (training
    augmentation, as the Caffe sample's ``mirror: true``) faces are mirrored with probability 1/2.
    ``min_faces_per_identity`` keeps only identities with at least that many faces (e.g. 2 for verification);
    ``origin`` only those prepared from that source folder (e.g. the second test split, ``celeba_identities_more``).
    """

    def __init__(self, root: str | Path, split: str = "train", flip: bool = False, min_faces_per_identity: int = 1,
                 origin: str | None = None):
        self.root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found (prepare faces first: `keen sicnn prepare --src ... "
                                    f"--out {self.root}`)")
        files: dict[str, list[Path]] = {}
        wanted = self.origin_identities(origin) if origin is not None else None
        for identity_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if wanted is not None and identity_dir.name not in wanted:
                continue
            images = sorted(p for p in identity_dir.iterdir() if p.suffix.lower() == ".png")
            if len(images) >= max(1, min_faces_per_identity):
                files[identity_dir.name] = images
        if not files:
            at_least = f" of an identity with at least {min_faces_per_identity}" if min_faces_per_identity > 1 else ""
            of_origin = f" from source {origin!r}" if origin is not None else ""
            raise ValueError(f"{folder} holds no faces{at_least}{of_origin}")
        self.split, self.flip = split, flip
        self.identities = sorted(files)
        self.samples = [(path, index) for index, identity in enumerate(self.identities) for path in files[identity]]
        self.labels = torch.tensor([label for _, label in self.samples])

    def origin_identities(self, origin: str) -> set[str]:
        """The identities the preparation took from the source folder named ``origin`` (its manifest's
        ``origin``); ValueError naming the origins there are when none is."""
        manifest = json.loads((self.root / "manifest.json").read_text())
        origins = {entry.get("origin") for entry in manifest["identities"].values()}
        if origin not in origins:
            raise ValueError(f"{self.root} has no identities from source {origin!r}; its sources are "
                             f"{', '.join(sorted(str(o) for o in origins))}")
        return {name for name, entry in manifest["identities"].items() if entry.get("origin") == origin}

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> np.ndarray:
        """The aligned face as uint8 RGB ``[112, 96, 3]``."""
        path, _ = self.samples[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageReadError(f"{path}: not a readable image")
        if image.shape[:2] != (112, 96):  # a stray file in a prepared folder would otherwise fail in collation
            raise ImageReadError(f"{path}: an aligned face is 96x112, got {image.shape[1]}x{image.shape[0]} "
                                 f"(make the folder with `keen sicnn prepare`)")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        face = normalise(self.read(index))
        if self.flip and torch.rand(()) < 0.5:
            face = face.flip(-1)
        return face, self.samples[index][1]
