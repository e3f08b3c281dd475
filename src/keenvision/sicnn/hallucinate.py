"""SICNN inference: x8 face hallucination of aligned 12x14 faces, and of the small faces found in any photo.

How a face in a photo becomes the network's 12x14 input (our decision; the paper only uses aligned benchmark
crops): MTCNN finds the face and its 5 points; the similarity transform onto the 96x112 SphereFace template
gives the *alignment scale* ``s`` (pixels of the 96x112 crop per pixel of the photo). The photo is warped onto
the template at 96x112 (bilinear; when ``s < 1`` the photo is first area-reduced by ``s`` so that the warp never
skips pixels) and then reduced by 8x8 average pooling, `data.degrade`, the same degradation the network was
trained on. For a face with ``1 < s <= 8`` (between 12x14 and 96x112 in the photo) each LR pixel is then the mean
of the photo's pixels under its 8x8 block of the bilinear up-sampling, that is the photo area-resampled onto the
12x14 template grid (up to the bilinear kernel's slight blur): no detail is invented and none of the photo's own
pixels are skipped. Faces with ``s > 8`` (smaller than 12x14; MTCNN's default 20-pixel minimum makes these rare)
are up-sampled on the way and their LR is blurrier than the training data. A face is *small*, and is
hallucinated, when ``s > 1``: its 96x112 aligned crop would need up-sampling, which is the same as its MTCNN box
being smaller than about 85x110 pixels. Larger faces already have the resolution SICNN would produce and are
passed through (reported, not hallucinated) unless ``all_faces=True``, which degrades them to 12x14 too (for
demonstrations and comparisons with the real face).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.device import resolve_device
from ..core.io import input_frames, read_image, write_image
from ..mtcnn import MTCNN, TEMPLATES, align, similarity_transform

HR_SIZE_WH = (96, 112)  # the SphereFace template SICNN works at (width, height)
LR_SIZE_WH = (12, 14)
UPSCALE = 8
DEFAULT_WEIGHTS = "sicnn-celeba"


def bicubic_upscale(lr: torch.Tensor, factor: int = UPSCALE) -> torch.Tensor:
    """The bicubic baseline: ``[B, 3, h, w]`` in [0, 1] -> ``[B, 3, factor*h, factor*w]`` in [0, 1] (torch bicubic,
    ``align_corners=False``, clamped: bicubic overshoots at edges)."""
    return F.interpolate(lr, scale_factor=factor, mode="bicubic", align_corners=False).clamp_(0, 1)


def to_uint8_images(batch: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` in [0, 1] -> uint8 ``[B, H, W, 3]`` (rounded)."""
    return (batch.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_unit_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` (or a list of ``[H, W, 3]``) -> float ``[B, 3, H, W]`` in [0, 1]."""
    array = np.ascontiguousarray(np.stack(list(images)) if not isinstance(images, np.ndarray) else images)
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255)


def alignment_scale(landmarks: np.ndarray) -> float:
    """Pixels of the 96x112 aligned crop per pixel of the photo, for a face with these 5 landmarks (> 1: the
    crop would be up-sampled, the face is smaller than the template)."""
    matrix = similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2) - 0.5, TEMPLATES[HR_SIZE_WH])
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def align_face(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(aligned 96x112 RGB uint8 crop, alignment scale). Only the part of the photo the crop covers is used;
    where it runs off the photo the edge pixels are repeated (as `data.prepare_faces` does for the training
    faces), and faces larger than the template are area-reduced to the template's scale before the bilinear warp
    (a bilinear warp that shrinks would skip pixels and alias)."""
    landmarks = np.asarray(landmarks, np.float64).reshape(5, 2)
    matrix = similarity_transform(landmarks - 0.5, TEMPLATES[HR_SIZE_WH])  # edge -> pixel-centre coordinates
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    # the crop's corners mapped back into the photo, with a margin for the warp's kernel
    inverse = cv2.invertAffineTransform(matrix)
    width, height = HR_SIZE_WH
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64) @ inverse.T
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 3
    image_height, image_width = image.shape[:2]
    inside = image[max(y0, 0):max(min(y1, image_height), 0), max(x0, 0):max(min(x1, image_width), 0)]
    if inside.size == 0:  # the face lies outside the photo: nothing to repeat, plain warp (black)
        return align(image, landmarks, HR_SIZE_WH), scale
    region = cv2.copyMakeBorder(np.ascontiguousarray(inside), max(-y0, 0), max(y1 - image_height, 0),
                                max(-x0, 0), max(x1 - image_width, 0), cv2.BORDER_REPLICATE)
    local = landmarks - [x0, y0]
    if scale < 1:
        size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
        factors = np.array([size[0] / region.shape[1], size[1] / region.shape[0]])
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        local = local * factors
    return align(region, local, HR_SIZE_WH), scale


def degrade_unit(hr: torch.Tensor) -> torch.Tensor:
    """`data.degrade` (8x8 average pooling, 96x112 -> 12x14) on ``[B, 3, 112, 96]`` in [0, 1]."""
    from .data import degrade

    return degrade(hr)


def is_grey(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def to_grey(images: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[..., 3]`` -> the same with R = G = B = luma (ITU-R BT.601, as OpenCV)."""
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat((luma + 0.5).clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def colour_note(path: str | Path) -> str | None:
    """What reading the file as RGB changed, for the user: grey replicated, alpha dropped; None for RGB files or
    when the file cannot be opened (the reader reports that)."""
    try:
        with Image.open(path) as image:
            mode, transparency = image.mode, "transparency" in image.info
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_image
        return None
    notes = []
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        notes.append(f"grey image ({mode}): channels replicated to RGB and the outputs kept grey")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or transparency:
        notes.append(f"{mode} image with transparency: alpha channel dropped")
    return "; ".join(notes) or None


@dataclass
class HallucinatedFace:
    """One detected face. ``aligned`` is the photo warped onto the 96x112 template (up-sampled when
    ``alignment_scale > 1``, so a true high-resolution reference only when it is <= 1). ``lr`` (14x12),
    ``bicubic`` and ``sicnn`` (112x96) are RGB uint8, None for a face passed through."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray = field(repr=False)
    alignment_scale: float
    aligned: np.ndarray = field(repr=False)
    lr: np.ndarray | None = field(default=None, repr=False)
    bicubic: np.ndarray | None = field(default=None, repr=False)
    sicnn: np.ndarray | None = field(default=None, repr=False)

    @property
    def hallucinated(self) -> bool:
        return self.sicnn is not None

    @property
    def small(self) -> bool:
        """Smaller than the 96x112 template in the photo (its aligned crop is up-sampled)."""
        return self.alignment_scale > 1

    @property
    def status(self) -> str:
        return "hallucinated" if self.hallucinated else "passed_through"

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 5),
                "landmarks": [[round(float(v), 2) for v in point] for point in self.landmarks],
                "alignment_scale": round(self.alignment_scale, 4), "small": self.small, "status": self.status}


def side_by_side(face: HallucinatedFace) -> np.ndarray:
    """One RGB uint8 strip: LR (nearest x8) | bicubic | SICNN | the aligned photo, with a caption row. The last
    panel is captioned "original" when the photo had the template's resolution, else "photo xS" (the photo
    up-sampled S times by the alignment, for reference only)."""
    if not face.hallucinated:
        raise ValueError("the face was passed through, there is nothing to compare")
    width, height = HR_SIZE_WH
    nearest = cv2.resize(face.lr, (width, height), interpolation=cv2.INTER_NEAREST)
    original = "original" if not face.small else f"photo x{face.alignment_scale:.1f}"
    panels = [(nearest, "LR 12x14"), (face.bicubic, "bicubic"), (face.sicnn, "SICNN"), (face.aligned, original)]
    gap, caption = 4, 14
    strip = np.full((caption + height, len(panels) * width + (len(panels) - 1) * gap, 3), 255, np.uint8)
    for index, (pixels, label) in enumerate(panels):
        left = index * (width + gap)
        strip[caption:, left:left + width] = pixels
        cv2.putText(strip, label, (left + 2, caption - 3), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


@dataclass
class HallucinatedFile:
    """The result for one input file of `Hallucinator.hallucinate_files`: its faces, or the error that stopped
    it (unreadable, or no face). ``note`` says what reading it changed (grey, alpha)."""

    path: Path
    faces: list[HallucinatedFace] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    size: tuple[int, int] | None = None  # (width, height)

    def to_dict(self) -> dict:
        record: dict = {"path": str(self.path)}
        if self.note:
            record["note"] = self.note
        if self.error is not None:
            record["error"] = self.error
            return record
        record["width"], record["height"] = self.size
        record["faces"] = [face.to_dict() for face in self.faces]
        return record


class Hallucinator:
    """SICNN's CNN-H: 12x14 aligned faces -> 96x112, and the small faces of any photo.

    Args:
        weights: ``"sicnn-celeba"`` (shipped weights) or a ``.safetensors`` export of `keenvision.sicnn.train`;
            ignored when ``model`` is given.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        model: a ready module mapping ``[B, 3, 14, 12]`` in [-1, 1] to ``[B, 3, 112, 96]`` in [-1, 1].
        detector: the face detector for `hallucinate_image` (default ``MTCNN(device, min_face_size)``, made on
            first use).
        min_face_size: smallest face searched in photos, pixels (MTCNN's default 20; 12 is its floor).
        batch_size: faces per network call.
    """

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, device: str | torch.device | None = None,
                 model: torch.nn.Module | None = None, detector: MTCNN | None = None, min_face_size: float = 20,
                 batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.weights = str(weights) if model is None else "(given model)"
        if model is None:
            from .model import load_cnn_h

            model = load_cnn_h(weights, self.device)
        self.model = model.to(self.device).eval()
        self._detector = detector
        self.min_face_size = min_face_size
        self.batch_size = batch_size

    @property
    def detector(self) -> MTCNN:
        if self._detector is None:
            self._detector = MTCNN(device=self.device, min_face_size=self.min_face_size)
        return self._detector

    @torch.inference_mode()
    def hallucinate_aligned(self, lr_batch: torch.Tensor) -> torch.Tensor:
        """Aligned LR faces ``[B, 3, 14, 12]`` in [0, 1] -> ``[B, 3, 112, 96]`` in [0, 1] (any device; the
        result is on the input's device), in chunks of ``batch_size``."""
        if lr_batch.dim() != 4 or tuple(lr_batch.shape[1:]) != (3, LR_SIZE_WH[1], LR_SIZE_WH[0]):
            raise ValueError(f"expected LR faces [B, 3, {LR_SIZE_WH[1]}, {LR_SIZE_WH[0]}], got "
                             f"{list(lr_batch.shape)}")
        outputs = []
        for chunk in lr_batch.split(self.batch_size):
            network_input = chunk.to(self.device, torch.float32) * 2 - 1  # the network works in [-1, 1]
            outputs.append(((self.model(network_input).float() + 1) / 2).clamp_(0, 1).to(lr_batch.device))
        if not outputs:
            return lr_batch.new_zeros((0, 3, HR_SIZE_WH[1], HR_SIZE_WH[0]))
        return torch.cat(outputs)

    def hallucinate_crops(self, aligned: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Aligned 96x112 RGB uint8 faces -> ``{"lr", "bicubic", "sicnn"}`` uint8 batches: each face degraded
        to 12x14 (`data.degrade`) and brought back x8 by bicubic and by CNN-H."""
        hr = to_unit_tensor(aligned)
        if tuple(hr.shape[2:]) != (HR_SIZE_WH[1], HR_SIZE_WH[0]):
            raise ValueError(f"expected aligned {HR_SIZE_WH[0]}x{HR_SIZE_WH[1]} faces, got {list(hr.shape)}")
        lr = degrade_unit(hr)
        return {"lr": to_uint8_images(lr), "bicubic": to_uint8_images(bicubic_upscale(lr)),
                "sicnn": to_uint8_images(self.hallucinate_aligned(lr))}

    def hallucinate_image(self, image, all_faces: bool = False) -> list[HallucinatedFace]:
        """Find the faces of a photo (a path, RGB/grey/RGBA array, PIL image or tensor; any size) and hallucinate
        the small ones (alignment scale > 1, see the module docstring); with ``all_faces`` the larger ones too,
        from their 12x14 reduction. Faces in detection order; a grey photo gives grey outputs."""
        pixels = read_image(image).pixels
        detections = self.detector.detect([pixels])[0]
        faces = []
        for detection in detections:
            aligned, scale = align_face(pixels, detection.landmarks)
            faces.append(HallucinatedFace(np.asarray(detection.box, np.float64), float(detection.score),
                                          np.asarray(detection.landmarks, np.float64), scale, aligned))
        chosen = [face for face in faces if all_faces or face.small]
        if chosen:
            results = self.hallucinate_crops([face.aligned for face in chosen])
            if is_grey(pixels):  # no colour the photo never had
                results = {name: to_grey(batch) for name, batch in results.items()}
            for index, face in enumerate(chosen):
                face.lr, face.bicubic, face.sicnn = (results[name][index] for name in ("lr", "bicubic", "sicnn"))
        return faces

    def hallucinate_files(self, paths: Sequence[str | Path], all_faces: bool = False
                          ) -> Iterator[HallucinatedFile]:
        """`hallucinate_image` per image file (folders expanded, videos ignored), in order. An unreadable file
        or one without a face gives a result with ``error`` set, and the rest carry on."""
        for item in input_frames(list(paths), videos=False):
            path = item.path
            if item.error is not None:
                yield HallucinatedFile(path, error=item.error)
                continue
            note = colour_note(path)
            pixels = item.pixels
            faces = self.hallucinate_image(pixels, all_faces=all_faces)
            size = (pixels.shape[1], pixels.shape[0])
            if not faces:
                yield HallucinatedFile(path, error=f"{path}: no face found", note=note, size=size)
                continue
            yield HallucinatedFile(path, faces, note=note, size=size)


def write_comparisons(result: HallucinatedFile, out_dir: str | Path, stem: str | None = None) -> list[Path | None]:
    """``<stem>_face<k>.png`` (`side_by_side`) per hallucinated face, written atomically; None for faces passed
    through. Returns one entry per face."""
    out_dir, stem = Path(out_dir), stem or result.path.stem
    written: list[Path | None] = []
    for index, face in enumerate(result.faces):
        if not face.hallucinated:
            written.append(None)
            continue
        path = out_dir / f"{stem}_face{index}.png"
        write_image(path, side_by_side(face))
        written.append(path)
    return written


def load(name_or_path: str | Path = DEFAULT_WEIGHTS, device: str | torch.device | None = None) -> torch.nn.Module:
    """The system contract's loader: the CNN-H or the CNN-R an export holds (its ``network`` metadata), on
    ``device`` (default: CUDA when available)."""
    from .model import load_cnn_h, load_cnn_r, read_metadata

    device = resolve_device(device)
    if read_metadata(name_or_path).get("network") == "cnn_r":
        return load_cnn_r(name_or_path, device)
    return load_cnn_h(name_or_path, device)
