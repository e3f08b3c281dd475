"""Training samples for MTCNN: annotation formats, crop generation, hard-sample mining, the Lightning data module.

Coordinates are pixel-edge coordinates throughout (pixel ``i`` spans ``[i, i + 1)``), as in the detector, so a box
``[x1, y1, x2, y2]`` is ``image[y1:y2, x1:x2]`` and its width is ``x2 - x1``.

Annotation formats read here:

* **WIDER FACE** ``wider_face_train_bbx_gt.txt``: per image a line with the image path (relative to an images
  folder), a line with the face count, then one line per face ``x y w h blur expression illumination invalid
  occlusion pose`` (``x, y`` the top-left pixel, so the edge box is ``[x, y, x + w, y + h]``). An image with no
  face has count 0 followed by one line of zeros, as in the official files.
* **5-point landmark list** (the format of the LFW/Net training list most MTCNN training code reads): one face per
  line, ``path left right top bottom x1 y1 x2 y2 x3 y3 x4 y4 x5 y5``; the box is ``[left, top, right, bottom]``
  and the points are left eye, right eye, nose tip, left and right mouth corner *as seen in the image*, all in
  pixel-edge coordinates (a pixel-index point ``(i, j)`` is ``(i + 0.5, j + 0.5)``). The path is everything before
  the last 14 numbers, relative to an images folder.

Sample categories (the paper's): negatives IoU < 0.3 with every face, positives > 0.65, part faces 0.4 to 0.65
(the zone 0.3 to 0.4 is left out), landmark faces are crops of a face with 5 annotated points. Box targets are
offsets of the matched face relative to the crop, ``(gx1 - x1) / w, (gy1 - y1) / h, (gx2 - x2) / w,
(gy2 - y2) / h``, which is what the detector's calibration ``x1 += t1 * w`` inverts; landmark targets are
``(px - x1) / w`` (five) then ``(py - y1) / h`` (five), which is what ``_stage_onet`` decodes with
``x = x1 + w * p``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core.boxes import box_iou
from ..core.io import read_image
from .annotations import five_points_from_ibug, read_imglab
from .resample import resample_crops

NEGATIVE, POSITIVE, PART, LANDMARK = 0, 1, 2, 3
CATEGORIES = ("negative", "positive", "part", "landmark")
NEGATIVE_MAX_IOU, PART_MIN_IOU, POSITIVE_MIN_IOU = 0.3, 0.4, 0.65
IGNORED = -1  # IoU between 0.3 and 0.4: neither a clear negative nor a part face

# iBUG 68-point indices of the 5 MTCNN points, as seen: eye on the image's left (the subject's right eye), eye on
# the right, nose tip, mouth corner on the left, mouth corner on the right
_MIRRORED_POINTS = [1, 0, 2, 4, 3]  # horizontal flip swaps left and right eyes and mouth corners


# ----------------------------------------------------------------------------------------------------------------
# annotations
@dataclass
class ImageFaces:
    """The faces of one image: ``boxes`` ``[N, 4]`` edge coordinates; ``valid`` False for faces WIDER marks
    invalid (they still keep negatives away, but give no positives)."""

    path: Path
    boxes: np.ndarray
    valid: np.ndarray


@dataclass
class LandmarkFace:
    """One face with 5 points: ``box`` ``[4]`` and ``points`` ``[5, 2]`` (x, y), edge coordinates."""

    path: Path
    box: np.ndarray
    points: np.ndarray


def read_wider_boxes(annotation_file: str | Path, images_root: str | Path) -> list[ImageFaces]:
    """Parse a WIDER FACE ``*_bbx_gt.txt`` file; faces with zero width or height are dropped."""
    lines = [line.strip() for line in Path(annotation_file).read_text().splitlines()]
    lines = [line for line in lines if line]
    images, cursor = [], 0
    while cursor < len(lines):
        path, count = lines[cursor], int(lines[cursor + 1])
        rows = [line.split() for line in lines[cursor + 2: cursor + 2 + max(count, 1)]]
        cursor += 2 + max(count, 1)  # an empty image still has one line of zeros
        rows = [[float(v) for v in row[:10]] + [0.0] * (10 - len(row)) for row in rows[:count]]
        values = np.array(rows, dtype=np.float64).reshape(-1, 10)
        keep = (values[:, 2] > 0) & (values[:, 3] > 0)
        values = values[keep]
        boxes = np.concatenate([values[:, 0:2], values[:, 0:2] + values[:, 2:4]], axis=1)
        images.append(ImageFaces(Path(images_root) / path, boxes, values[:, 7] == 0))
    return images


def write_wider_boxes(images: list[ImageFaces], annotation_file: str | Path, images_root: str | Path) -> Path:
    """Write faces in the WIDER FACE format (blur, expression... written as 0; invalid from ``valid``)."""
    out = []
    for image in images:
        out += [str(Path(image.path).relative_to(images_root)), str(len(image.boxes))]
        for (x1, y1, x2, y2), valid in zip(image.boxes, image.valid):
            out.append(f"{x1:g} {y1:g} {x2 - x1:g} {y2 - y1:g} 0 0 0 {0 if valid else 1} 0 0")
        if len(image.boxes) == 0:
            out.append("0 0 0 0 0 0 0 0 0 0")
    annotation_file = Path(annotation_file)
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    annotation_file.write_text("\n".join(out) + "\n")
    return annotation_file


def read_landmark_faces(annotation_file: str | Path, images_root: str | Path) -> list[LandmarkFace]:
    """Parse the 5-point list ``path left right top bottom x1 y1 ... x5 y5`` (one face per line)."""
    faces = []
    for number, line in enumerate(Path(annotation_file).read_text().splitlines(), 1):
        if not line.strip():
            continue
        tokens = line.split()
        if len(tokens) < 15:
            raise ValueError(f"{annotation_file}:{number}: expected a path and 14 numbers, got {len(tokens)} fields")
        numbers = np.array([float(v) for v in tokens[-14:]])
        left, right, top, bottom = numbers[:4]
        faces.append(LandmarkFace(Path(images_root) / " ".join(tokens[:-14]),
                                  np.array([left, top, right, bottom]), numbers[4:].reshape(5, 2)))
    return faces


def write_landmark_faces(faces: list[LandmarkFace], annotation_file: str | Path, images_root: str | Path) -> Path:
    lines = []
    for face in faces:
        left, top, right, bottom = face.box
        values = [left, right, top, bottom, *face.points.reshape(-1)]
        lines.append(" ".join([str(Path(face.path).relative_to(images_root))] + [f"{v:.2f}" for v in values]))
    annotation_file = Path(annotation_file)
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    annotation_file.write_text("\n".join(lines) + "\n")
    return annotation_file


def dlib_xml_to_wider(xml_file: str | Path, annotation_file: str | Path) -> Path:
    """Convert a dlib imglab XML (``<box top left width height [ignore]>``) to the WIDER FACE txt format; image
    paths stay relative to the XML's folder, which is the images root to read it with."""
    xml_file = Path(xml_file)
    images = []
    for name, faces in read_imglab(xml_file).items():
        coordinates = np.array([f["box"] for f in faces]).reshape(-1, 4)
        valid = np.array([not f["ignore"] for f in faces], dtype=bool)
        images.append(ImageFaces(xml_file.parent / name, coordinates, valid))
    return write_wider_boxes(images, annotation_file, xml_file.parent)


def dlib_xml_to_landmarks(xml_file: str | Path, annotation_file: str | Path) -> Path:
    """Convert a dlib imglab XML with 68 iBUG points per box to the 5-point list (`five_points_from_ibug`)."""
    xml_file = Path(xml_file)
    faces = []
    for name, boxes in read_imglab(xml_file).items():
        for face in boxes:
            if face["parts"] is None or len(face["parts"]) < 68 or face["ignore"]:
                continue
            faces.append(LandmarkFace(xml_file.parent / name, face["box"], five_points_from_ibug(face["parts"])))
    return write_landmark_faces(faces, annotation_file, xml_file.parent)


def pseudo_label_faces(image_paths: list[Path], images_root: str | Path, boxes_file: str | Path,
                       landmarks_file: str | Path, detector=None, min_score: float = 0.9,
                       batch_size: int = 64) -> tuple[Path, Path]:
    """Label unannotated face photos (e.g. CelebA's aligned crops) with a detector: the most confident face per
    image, if its score reaches ``min_score``, is written as a WIDER box and as a 5-point landmark face. The
    labels are the detector's, not human ones; images without a confident face are left out."""
    if detector is None:
        from .detector import MTCNN

        detector = MTCNN()
    boxed, landmarked = [], []
    for start in range(0, len(image_paths), batch_size):
        paths = image_paths[start:start + batch_size]
        for path, faces in zip(paths, detector.detect([str(p) for p in paths])):
            best = max(faces, key=lambda f: f.score, default=None)
            if best is None or best.score < min_score:
                continue
            box = best.box.astype(np.float64)
            boxed.append(ImageFaces(Path(path), box[None], np.ones(1, bool)))
            landmarked.append(LandmarkFace(Path(path), box, best.landmarks.astype(np.float64)))
    return (write_wider_boxes(boxed, boxes_file, images_root),
            write_landmark_faces(landmarked, landmarks_file, images_root))


# ----------------------------------------------------------------------------------------------------------------
# geometry
def label_by_iou(iou: np.ndarray) -> np.ndarray:
    """NEGATIVE below 0.3, PART in [0.4, 0.65], POSITIVE above 0.65, IGNORED otherwise."""
    labels = np.full(np.shape(iou), IGNORED, dtype=np.int8)
    labels[iou < NEGATIVE_MAX_IOU] = NEGATIVE
    labels[(iou >= PART_MIN_IOU) & (iou <= POSITIVE_MIN_IOU)] = PART
    labels[iou > POSITIVE_MIN_IOU] = POSITIVE
    return labels


def box_offsets(crop_boxes: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Regression targets ``(face - crop) / crop size`` per corner, the inverse of ``x1 += t1 * w``."""
    size = np.concatenate([crop_boxes[:, 2:4] - crop_boxes[:, 0:2]] * 2, axis=1)
    return (faces - crop_boxes) / size


def crop_resized(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crops of integer edge-coordinate ``boxes`` resized to ``size`` as ``uint8 [N, size, size, 3]``, zero
    outside the image.

    Uses the detector's own resampler (`resample_crops`, the MATLAB code's imResample: area averaging when
    shrinking, bilinear when enlarging), so training crops look exactly like the crops the cascade classifies."""
    if len(boxes) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    inclusive = torch.as_tensor(np.asarray(boxes, np.float64)) + torch.tensor([1.0, 1.0, 0.0, 0.0])  # 1-based
    crops = resample_crops(torch.from_numpy(image).permute(2, 0, 1).float(), inclusive, size)
    return crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------------------------------------------
# samples
@dataclass
class Samples:
    """Crops and their targets. ``crop_boxes`` and ``image_ids`` (into ``image_paths``) say where each crop was
    cut; ``mined`` marks crops proposed by an earlier stage. Targets that do not apply to a category are 0."""

    crops: np.ndarray  # uint8 [N, S, S, 3] RGB
    labels: np.ndarray  # int8 [N], NEGATIVE / POSITIVE / PART / LANDMARK
    box_targets: np.ndarray  # float32 [N, 4]
    landmark_targets: np.ndarray  # float32 [N, 10], x1..x5, y1..y5
    crop_boxes: np.ndarray  # float32 [N, 4]
    image_ids: np.ndarray  # int32 [N]
    mined: np.ndarray  # bool [N]
    image_paths: list[str] = field(default_factory=list)

    _ARRAYS = ("crops", "labels", "box_targets", "landmark_targets", "crop_boxes", "image_ids", "mined")

    @classmethod
    def empty(cls, size: int) -> Samples:
        return cls(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int8), np.zeros((0, 4), np.float32),
                   np.zeros((0, 10), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.int32),
                   np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {name: int((np.asarray(self.labels) == k).sum()) for k, name in enumerate(CATEGORIES)}

    @classmethod
    def concatenate(cls, parts: list[Samples], size: int) -> Samples:
        """One set from several, with image ids re-pointed into the union of their image paths."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(size)
        paths: list[str] = []
        index: dict[str, int] = {}
        image_ids = []
        for part in parts:
            mapping = np.array([index.setdefault(path, len(index)) for path in part.image_paths], np.int32)
            paths += [path for path in part.image_paths if index[path] >= len(paths)]
            image_ids.append(mapping[np.asarray(part.image_ids)])
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in cls._ARRAYS}
        arrays["image_ids"] = np.concatenate(image_ids)
        return cls(**arrays, image_paths=paths)

    def save(self, folder: str | Path, metadata: dict | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name))
        # meta.json last: its presence marks a complete cache
        (folder / "meta.json").write_text(json.dumps({"image_paths": self.image_paths, "counts": self.counts(),
                                                      **(metadata or {})}, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> Samples:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in cls._ARRAYS}
        return cls(**arrays, image_paths=meta["image_paths"])


@dataclass
class CropSettings:
    """How many random crops to draw (the usual MTCNN data-generation recipe, counts per image / face)."""

    negatives_per_image: int = 50  # random squares anywhere, kept when IoU < 0.3 with every face
    negatives_near_face: int = 5  # squares overlapping each face's neighbourhood, kept when IoU < 0.3
    shifted_per_face: int = 20  # squares of 0.8..1.25x the face, centre moved up to 20%: positives / part faces
    landmark_crops_per_face: int = 10  # the same around landmark faces, kept when IoU > 0.65, points inside
    min_face_size: float = 20  # faces smaller than this give no positives / part faces (too blurry to learn)
    min_crop_size: int = 12


def _labelled(image: np.ndarray, crop_boxes: np.ndarray, faces: ImageFaces, size: int, mined: bool,
              max_negatives: int | None, rng: np.random.Generator) -> Samples:
    """Label crop boxes by their best IoU with the faces, drop the ignored zone, cut and resize them."""
    if len(crop_boxes) == 0:
        return Samples.empty(size)
    if len(faces.boxes):
        iou = box_iou(crop_boxes, faces.boxes)
        best = iou.argmax(axis=1)
        labels = label_by_iou(iou[np.arange(len(crop_boxes)), best])
        # a crop matching an invalid face best is no usable positive or part face
        labels[(labels != NEGATIVE) & ~faces.valid[best]] = IGNORED
        targets = box_offsets(crop_boxes, faces.boxes[best])
    else:
        labels = np.full(len(crop_boxes), NEGATIVE, np.int8)
        targets = np.zeros((len(crop_boxes), 4))
    keep = np.flatnonzero(labels != IGNORED)
    negatives = keep[labels[keep] == NEGATIVE]
    if max_negatives is not None and len(negatives) > max_negatives:
        keep = np.setdiff1d(keep, rng.choice(negatives, len(negatives) - max_negatives, replace=False))
    labels, targets, crop_boxes = labels[keep], targets[keep], crop_boxes[keep]
    targets[labels == NEGATIVE] = 0
    count = len(keep)
    return Samples(crop_resized(image, crop_boxes, size), labels, targets.astype(np.float32),
                   np.zeros((count, 10), np.float32), crop_boxes.astype(np.float32), np.zeros(count, np.int32),
                   np.full(count, mined), [str(faces.path)])


def _shifted_squares(box: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Squares of side 0.8 min(w, h) .. 1.25 max(w, h) with the centre moved by up to 20% of w and h."""
    width, height = box[2] - box[0], box[3] - box[1]
    sides = rng.integers(int(0.8 * min(width, height)), math.ceil(1.25 * max(width, height)) + 1, count)
    centres = (box[0:2] + box[2:4]) / 2 + rng.uniform(-0.2, 0.2, (count, 2)) * [width, height]
    top_left = np.floor(centres - sides[:, None] / 2)
    return np.concatenate([top_left, top_left + sides[:, None]], axis=1)


def random_crop_boxes(faces: ImageFaces, width: int, height: int, settings: CropSettings,
                      rng: np.random.Generator) -> np.ndarray:
    """Candidate squares ``[N, 4]`` for one image: random ones anywhere (mostly negatives), ones near each face
    (hard negatives: a bit of face, mostly context) and shifted ones on each face (positives, part faces)."""
    candidates = [np.zeros((0, 4))]
    largest = min(width, height) // 2
    if largest >= settings.min_crop_size:
        # draw twice the count since some hit faces, then keep the count asked for
        count = settings.negatives_per_image * 2
        sides = rng.integers(settings.min_crop_size, largest + 1, count)
        x1 = np.floor(rng.uniform(0, 1, count) * (width - sides + 1))
        y1 = np.floor(rng.uniform(0, 1, count) * (height - sides + 1))
        anywhere = np.stack([x1, y1, x1 + sides, y1 + sides], axis=1)
        iou = box_iou(anywhere, faces.boxes).max(axis=1) if len(faces.boxes) else np.zeros(count)
        candidates.append(anywhere[iou < NEGATIVE_MAX_IOU][:settings.negatives_per_image])
        for box in faces.boxes:
            count = settings.negatives_near_face
            sides = rng.integers(settings.min_crop_size, largest + 1, count)
            top_left = np.floor(box[0:2] - sides[:, None] + (box[2:4] - box[0:2] + sides[:, None])
                                * rng.uniform(0, 1, (count, 2)))
            near = np.concatenate([top_left, top_left + sides[:, None]], axis=1)
            inside = (near[:, 0] >= 0) & (near[:, 1] >= 0) & (near[:, 2] <= width) & (near[:, 3] <= height)
            candidates.append(near[inside])
    for box, valid in zip(faces.boxes, faces.valid):
        if valid and min(box[2] - box[0], box[3] - box[1]) >= settings.min_face_size:
            candidates.append(_shifted_squares(box, settings.shifted_per_face, rng))
    boxes = np.concatenate(candidates)
    return boxes[boxes[:, 2] - boxes[:, 0] >= settings.min_crop_size]


def random_crop_samples(images: list[ImageFaces], size: int, settings: CropSettings,
                        rng: np.random.Generator) -> Samples:
    """Negatives, positives and part faces from `random_crop_boxes`, labelled by IoU (`label_by_iou`)."""
    parts = []
    for faces in images:
        image = read_image(faces.path).pixels
        crop_boxes = random_crop_boxes(faces, image.shape[1], image.shape[0], settings, rng)
        parts.append(_labelled(image, crop_boxes, faces, size, False, None, rng))
    return Samples.concatenate(parts, size)


def landmark_samples(faces: list[LandmarkFace], size: int, settings: CropSettings,
                     rng: np.random.Generator) -> Samples:
    """Landmark faces: squares around each face (the centred square of side max(w, h) and shifted ones) with
    IoU > 0.65 and all five points inside; targets are the points as fractions of the square."""
    by_image: dict[Path, list[LandmarkFace]] = defaultdict(list)
    for face in faces:
        by_image[Path(face.path)].append(face)
    parts = []
    for path, image_faces in by_image.items():
        image = read_image(path).pixels
        for face in image_faces:
            side = max(face.box[2] - face.box[0], face.box[3] - face.box[1])
            centred = np.round(np.concatenate([(face.box[0:2] + face.box[2:4] - side) / 2] * 2) + [0, 0, side, side])
            squares = np.concatenate([centred[None],
                                      _shifted_squares(face.box, settings.landmark_crops_per_face * 2, rng)])
            squares = squares[box_iou(squares, face.box)[:, 0] > POSITIVE_MIN_IOU]
            sides = squares[:, 2:3] - squares[:, 0:1]
            targets = np.concatenate([(face.points[None, :, 0] - squares[:, 0:1]) / sides,
                                      (face.points[None, :, 1] - squares[:, 1:2]) / sides], axis=1)
            inside = np.flatnonzero(((targets >= 0) & (targets <= 1)).all(axis=1))[:settings.landmark_crops_per_face]
            squares, targets, count = squares[inside], targets[inside], len(inside)
            parts.append(Samples(crop_resized(image, squares, size), np.full(count, LANDMARK, np.int8),
                                 np.zeros((count, 4), np.float32), targets.astype(np.float32),
                                 squares.astype(np.float32), np.zeros(count, np.int32), np.zeros(count, bool),
                                 [str(path)]))
    return Samples.concatenate(parts, size)


def mined_samples(images: list[ImageFaces], size: int, detector, last_stage: str, rng: np.random.Generator,
                  max_negatives_per_image: int | None = 100, images_per_call: int = 8) -> Samples:
    """Hard samples for R-Net (``last_stage="pnet"``) or O-Net (``"rnet"``): the boxes the earlier stage(s) of
    ``detector`` (an `MTCNN`) would pass on, labelled by IoU with the annotated faces into negatives, positives
    and part faces, with box targets relative to the proposal. Negatives are capped per image at random."""
    parts = []
    for start in range(0, len(images), images_per_call):
        chunk = images[start:start + images_per_call]
        pixels = [read_image(faces.path).pixels for faces in chunk]
        for faces, image, proposals in zip(chunk, pixels, detector.propose(pixels, last_stage)):
            boxes = proposals[:, :4]
            boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
            parts.append(_labelled(image, boxes, faces, size, True, max_negatives_per_image, rng))
    return Samples.concatenate(parts, size)


# ----------------------------------------------------------------------------------------------------------------
# torch side
class CropDataset(Dataset):
    """``(image [3, S, S] normalised as the detector's input, label, box_targets [4], landmark_targets [10])``;
    with ``flip`` a random horizontal mirror, with the targets mirrored to match."""

    def __init__(self, samples: Samples, flip: bool = False):
        self.samples, self.flip = samples, flip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        crop = torch.from_numpy(np.array(self.samples.crops[index])).permute(2, 0, 1).float()
        box = torch.from_numpy(np.array(self.samples.box_targets[index]))
        points = torch.from_numpy(np.array(self.samples.landmark_targets[index]))
        label = int(self.samples.labels[index])
        if self.flip and torch.rand(()) < 0.5:
            crop = crop.flip(-1)
            if label in (POSITIVE, PART):
                # mirrored, the left edge is where the right one was: t1' = -t3, t3' = -t1
                box = torch.stack([-box[2], box[1], -box[0], box[3]])
            elif label == LANDMARK:
                points = torch.cat([1 - points[:5][_MIRRORED_POINTS], points[5:][_MIRRORED_POINTS]])
        return (crop - 127.5) * 0.0078125, label, box, points


def batch_composition(batch_size: int, ratio: dict[str, float]) -> dict[int, int]:
    """Samples per category in a batch of ``batch_size`` for the ratio (largest remainders round up)."""
    weights = np.array([max(0.0, float(ratio.get(name, 0))) for name in CATEGORIES])
    if weights.sum() <= 0:
        raise ValueError(f"sample_ratio must give some category a positive share, got {ratio}")
    exact = batch_size * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts))[: batch_size - counts.sum()]:
        counts[k] += 1
    return {k: int(c) for k, c in enumerate(counts) if c > 0}


class RatioSampler(Sampler[int]):
    """Indices in blocks of ``batch_size`` mixing the categories in a fixed ratio (3:1:1:2 in the paper); feed
    it to a DataLoader with the same ``batch_size``. Each category is walked in a fresh random order per pass
    (smaller categories are repeated within an epoch). Categories without samples drop out of the ratio. Each
    rank (``rank`` of ``world_size``) draws its own stream, so DDP needs no DistributedSampler."""

    def __init__(self, labels: np.ndarray, batch_size: int, ratio: dict[str, float], batches_per_epoch: int,
                 seed: int = 0, rank: int = 0):
        labels = np.asarray(labels)
        present = {name: share for name, share in ratio.items()
                   if name in CATEGORIES and (labels == CATEGORIES.index(name)).any()}
        self.composition = batch_composition(batch_size, present)
        self.members = {k: np.flatnonzero(labels == k) for k in self.composition}
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.rank, self.epoch])
        streams = {}
        for category, members in self.members.items():
            needed = self.composition[category] * self.batches_per_epoch
            passes = math.ceil(needed / len(members))
            streams[category] = np.concatenate([rng.permutation(members) for _ in range(passes)])[:needed]
        for batch in range(self.batches_per_epoch):
            block = np.concatenate([streams[c][batch * n:(batch + 1) * n] for c, n in self.composition.items()])
            yield from rng.permutation(block).tolist()


class SampleDataModule(L.LightningDataModule):
    """Cached training and validation samples (``Samples`` folders) as DataLoaders: training batches mixed by
    `RatioSampler`, validation in order. ``generate`` (optional) is called by ``prepare_data`` on one process
    to build missing caches."""

    def __init__(self, train_dir: str | Path, val_dir: str | Path | None, batch_size: int,
                 sample_ratio: dict[str, float], batches_per_epoch: int, flip: bool = True, num_workers: int = 0,
                 seed: int = 0, generate=None):
        super().__init__()
        self.train_dir, self.val_dir = Path(train_dir), Path(val_dir) if val_dir else None
        self.batch_size, self.sample_ratio, self.batches_per_epoch = batch_size, sample_ratio, batches_per_epoch
        self.flip, self.num_workers, self.seed, self.generate = flip, num_workers, seed, generate
        self.train_samples: Samples | None = None
        self.val_samples: Samples | None = None

    def prepare_data(self) -> None:
        if self.generate is not None:
            self.generate()

    def setup(self, stage: str | None = None) -> None:
        self.train_samples = Samples.load(self.train_dir)
        if self.val_dir is not None and (self.val_dir / "meta.json").is_file():
            self.val_samples = Samples.load(self.val_dir)

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        sampler = RatioSampler(self.train_samples.labels, self.batch_size, self.sample_ratio,
                               self.batches_per_epoch, self.seed, rank)
        return DataLoader(CropDataset(self.train_samples, self.flip), batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, drop_last=True,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_samples is None or len(self.val_samples) == 0:
            return []
        return DataLoader(CropDataset(self.val_samples), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)
