"""MTCNN inference, following the authors' MATLAB pipeline (``MTCNNv1/detect_face.m``) step for step, batched.

Coordinates: boxes are ``[x1, y1, x2, y2]`` in pixel-edge coordinates (pixel ``i`` spans ``[i, i + 1)``), so
``image[y1:y2, x1:x2]`` is the face. The MATLAB code works in 1-based inclusive pixel indices; its box
``[x1, y1, x2, y2]`` is ours ``[x1 - 1, y1 - 1, x2, y2]``, and its landmark formula ``x1 + w * p - 1`` is already
in edge coordinates. Inside the cascade we keep the MATLAB convention so every rounding (``fix``), ``+1`` width
and NMS overlap is the official one, and convert once at the end.

Batching: all images of a call go through each stage together. P-Net runs once per distinct pyramid-level shape
(video frames share every shape), in launches split only to keep feature maps cache-sized; R-Net and O-Net crops
of all images are classified together, in cache-sized launches on CPU. Pyramid levels and crops are resampled by
OpenCV on CPU, by a batched tensor gather (`resample_crops`) on other devices. On N > 1 CPU threads the cascade
runs in a driver thread that hands its independent pieces (P-Net launches, shares of the crops) to N workers, each
on one intra-op thread (`_workers`).

``pipeline="facenet-pytorch"`` reproduces that popular port's deviations instead (pyramid sizes ``int(h*s + 1)``
shrunk by integer-bin adaptive pooling, crops clipped to the image instead of zero-padded, no ``fix()`` of box
coordinates between stages, NMS areas without ``+1``, no landmark flip-averaging), for users who need its exact
outputs and for our parity benchmark.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Collection
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from ..core.device import resolve_device
from ..core.io import read_image
from ..core.weights import load_into, open_weights
from .model import ONet, PNet, RNet, scratch
from .resample import resample_crops, resample_crops_cv2, shrink_area_from_integral

DEFAULT_NAME = "mtcnn-caffe"  # the authors' converted weights (weights/registry.json)
_CELL_SIZE, _CELL_STRIDE = 12, 2
# facenet-pytorch's departures from the MATLAB pipeline, each switchable for the parity ablation
FACENET_DEVIATIONS = ("pyramid", "crops", "rounding", "nms", "flip")
# O-Net landmark order is left eye, right eye, nose, left mouth, right mouth; mirroring swaps left and right
_MIRRORED_LANDMARKS = [1, 0, 2, 4, 3]


@dataclass
class Face:
    """One detection: ``box`` [x1, y1, x2, y2] and ``landmarks`` [5, 2] (x, y) in pixel-edge coordinates of
    the input image; landmarks are left eye, right eye, nose tip, left and right mouth corner (as seen)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 5),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales ``(12 / min_face_size) * factor**k`` while the short side stays >= 12 (detect_face.m)."""
    scale = _CELL_SIZE / min_face_size
    short_side = min(height, width) * scale
    scales = []
    while short_side >= _CELL_SIZE:
        scales.append(scale * factor ** len(scales))
        short_side *= factor
    return scales


def _nms_union(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float,
               inclusive: bool = True) -> torch.Tensor:
    """IoU NMS with MATLAB's inclusive-pixel areas ``(x2 - x1 + 1) * (y2 - y1 + 1)``: shifting the far corner by
    one pixel makes torchvision's areas and intersections exactly those."""
    return batched_nms(boxes[:, :4] + boxes.new_tensor([0, 0, 1, 1]) * inclusive, scores, groups, threshold)


def _nms_min(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS with the 'Min' overlap (intersection over the smaller area), used after O-Net."""
    order = np.lexsort((-scores, groups))  # by group, then score descending
    keep = []
    for group in np.unique(groups):
        members = order[groups[order] == group]
        x1, y1, x2, y2 = (boxes[members, k] for k in range(4))
        area = (x2 - x1 + 1) * (y2 - y1 + 1)
        inter_w = np.maximum(0.0, np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1) + 1)
        overlap = inter_w * inter_h / np.minimum(area[:, None], area)
        suppressed = np.zeros(len(members), bool)
        for i in range(len(members)):
            if suppressed[i]:
                continue
            keep.append(members[i])
            suppressed |= overlap[i] > threshold
    return np.array(sorted(keep, key=lambda k: (groups[k], -scores[k])), dtype=np.int64)


def _cells_above(probability: torch.Tensor, offsets: torch.Tensor, threshold: float) -> tuple[torch.Tensor, ...]:
    """P-Net's cells whose face probability (``[B, h, w]``) is at least ``threshold``: their member, row and
    column, probability ``[K]`` and box offsets ``[K, 4]`` (from ``[B, h, w, 4]``)."""
    member, row, column = torch.nonzero(probability >= threshold, as_tuple=True)
    return member, row, column, probability[member, row, column], offsets[member, row, column]


def _share_boxes(boxes: list[torch.Tensor], parts: int) -> list[list[torch.Tensor]]:
    """``boxes`` (one tensor per image) cut into at most ``parts`` non-empty shares of about equal size, in order;
    each share holds one tensor per image (empty where the image has none in it)."""
    counts = [len(b) for b in boxes]
    total = sum(counts)
    cuts = sorted({round(total * k / parts) for k in range(parts + 1)})
    starts = np.cumsum([0] + counts[:-1]).tolist()
    return [[b[max(low - start, 0):max(min(high - start, len(b)), 0)] for b, start in zip(boxes, starts)]
            for low, high in zip(cuts[:-1], cuts[1:])]


def _calibrate(boxes: torch.Tensor, offsets: torch.Tensor, inclusive: bool) -> torch.Tensor:
    """Box regression ``x1 += t1 * w`` ...; P-Net's step uses ``w = x2 - x1``, bbreg.m ``w = x2 - x1 + 1``."""
    size = boxes[:, 2:4] - boxes[:, 0:2] + (1 if inclusive else 0)
    return boxes[:, :4] + offsets * size.repeat(1, 2)


def _facenet_crops(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """facenet-pytorch's crops: the box clipped to the image, shrunk/enlarged by adaptive average pooling."""
    height, width = image.shape[1:]
    crops = []
    for x1, y1, x2, y2 in boxes.trunc().long().tolist():
        x1, y1, x2, y2 = max(x1, 1), max(y1, 1), min(x2, width), min(y2, height)
        if x2 < x1 or y2 < y1:  # wholly outside: facenet drops it; keep the rows aligned with a blank crop
            crops.append(image.new_zeros(1, image.shape[0], size, size))
            continue
        crops.append(F.interpolate(image[None, :, y1 - 1:y2, x1 - 1:x2], size=(size, size), mode="area"))
    return torch.cat(crops)


class _InlineExecutor(Executor):
    """Runs each task at once in the calling thread: with one thread, handing work to a worker only adds latency."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # delivered by result(), as a worker's would be
            future.set_exception(error)
        return future


_POOLS: dict[tuple[str, int], Executor] = {}
_POOLS_LOCK = threading.Lock()
_LOCAL = threading.local()  # in our pools' threads: the thread count of the detection they serve


def _one_intra_op_thread(threads: int) -> None:
    torch.get_num_threads()  # ATen sets a thread's count lazily on first use, which would undo the next line
    torch.set_num_threads(1)
    _LOCAL.threads = threads


def _threads() -> int:
    """The threads a detection may use: torch's intra-op count in the caller (that of the call it serves, in one of
    our pools' threads)."""
    return getattr(_LOCAL, "threads", None) or max(1, torch.get_num_threads())


def _pool(kind: str) -> Executor:
    """`_threads()` threads of ``kind`` (``"workers"`` or ``"drivers"``), each running torch ops on one intra-op
    thread of its own; with one thread, the caller itself (`_InlineExecutor`)."""
    threads = _threads()
    if threads == 1:
        return _INLINE
    with _POOLS_LOCK:
        if (kind, threads) not in _POOLS:
            if hasattr(_LOCAL, "threads"):  # created from a thread of ours, the restore below would change it
                return _INLINE
            pool = ThreadPoolExecutor(threads, thread_name_prefix=f"keen-mtcnn-{kind}",
                                      initializer=_one_intra_op_thread, initargs=(threads,))
            start = threading.Barrier(threads)
            for future in [pool.submit(start.wait) for _ in range(threads)]:  # start every thread now
                future.result()
            # torch.set_num_threads in a new thread also sets the count threads started later take: put it back
            torch.set_num_threads(threads)
            _POOLS[kind, threads] = pool
    return _POOLS[kind, threads]


def _workers() -> Executor:
    """Threads for the independent pieces of a detection (pyramid levels, shares of the crops), which then run side
    by side instead of one after another through OpenMP's fork and join per op (OpenCV releases the GIL, and so do
    torch's ops)."""
    return _pool("workers")


_INLINE = _InlineExecutor()


def _from_integral(image_shape: tuple[int, ...], size: tuple[int, int]) -> bool:
    """Whether a pyramid level is cheaper sampled from the integral image than resized: a resize reads every
    source pixel, the integral costs per output pixel about what 55 source pixels cost a resize (measured on
    1920x1080 and 640x360 frames, one CPU thread)."""
    return size[0] * size[1] * 55 < image_shape[0] * image_shape[1]


def _integrals(images: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """Integral images (exact int32 sums of uint8 pixels; None where an image needs none)."""
    return [None if image is None else cv2.integral(image, sdepth=cv2.CV_32S) for image in images]


def _shrink_normalised(images: list[np.ndarray], members: list[tuple[int, int, float]],
                       size: tuple[int, int], out: np.ndarray, integrals: Future | None = None) -> np.ndarray:
    """One pyramid level of each member image into ``out`` ``[members, h, w, 3]``, normalised as the MATLAB
    code: ``(x - 127.5) * 0.0078125``.

    Area-weighted shrinking with fractional end weights is what Piotr's imResample (the MATLAB code's resizer)
    does when downsampling, and what cv2's INTER_AREA computes; small levels of a large image are sampled from
    its integral image instead (``integrals``: a future of `_integrals`), the same numbers at a fraction of the
    cost."""
    for row, (image_index, _, _) in enumerate(members):
        # only the small levels wait for the integral images
        integral = (integrals.result()[image_index]
                    if integrals is not None and _from_integral(images[image_index].shape, size) else None)
        if integral is not None:
            shrink_area_from_integral(integral, size, out[row])
        else:
            cv2.resize(images[image_index], size, dst=out[row], interpolation=cv2.INTER_AREA)
    out -= 127.5
    out *= 0.0078125
    return out


def _as_float32(images: list[np.ndarray]) -> list[np.ndarray]:
    """float32 copies of the images in this thread's `scratch` buffers (valid until its next detection)."""
    floats = []
    for index, image in enumerate(images):
        copy = scratch(f"image{index}", image.shape).numpy()
        np.copyto(copy, image)
        floats.append(copy)
    return floats


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """rerec.m: the square of side max(w, h) with the same centre (w = x2 - x1, no +1)."""
    size = boxes[:, 2:4] - boxes[:, 0:2]
    side = size.max(dim=1, keepdim=True).values
    top_left = boxes[:, 0:2] + size * 0.5 - side * 0.5
    return torch.cat([top_left, top_left + side], dim=1)


class MTCNN(nn.Module):
    """The three-stage cascade with the authors' weights (or your own).

    ``MTCNN().detect(images)`` takes one image or a list of paths, RGB ``uint8`` arrays ``[H, W, 3]``, PIL images
    or tensors, of any sizes, and returns a list of `Face` per image (a single list for a single image).

    Args:
        weights: a safetensors file with ``pnet.*``, ``rnet.*``, ``onet.*`` tensors; default the shipped
            conversion of the authors' det1-3.caffemodel.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        min_face_size: smallest face searched, pixels (sets the first pyramid scale 12 / min_face_size).
        thresholds: P-, R-, O-Net face probabilities to pass (P-Net uses >=, the others >, as the MATLAB).
        factor: pyramid scale step.
        nms_thresholds: P-Net per scale, P-Net across scales, R-Net, O-Net ('Min' overlap).
        flip_landmarks: average landmarks with those of the mirrored crop, as MTCNNv1 does.
        max_image_pixels: larger images are reduced to this many pixels before detection (results are mapped
            back), which bounds memory on huge photos.
        pipeline: ``"official"`` (the MATLAB code), ``"facenet-pytorch"`` (all of that port's deviations, see
            above), or a collection of some of them by name, for ablations: ``"pyramid"``, ``"crops"``,
            ``"rounding"``, ``"nms"``, ``"flip"`` (see `FACENET_DEVIATIONS`).
    """

    def __init__(self, weights: str | Path | None = None, device: str | torch.device | None = None,
                 min_face_size: float = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7),
                 flip_landmarks: bool = True, max_image_pixels: int = 16_000_000,
                 pipeline: str | Collection[str] = "official"):
        super().__init__()
        if isinstance(pipeline, str):
            if pipeline not in ("official", "facenet-pytorch"):
                raise ValueError(f"pipeline must be 'official' or 'facenet-pytorch', got {pipeline!r}")
            pipeline = () if pipeline == "official" else FACENET_DEVIATIONS
        unknown = set(pipeline) - set(FACENET_DEVIATIONS)
        if unknown:
            raise ValueError(f"unknown pipeline deviations {sorted(unknown)}; known: {list(FACENET_DEVIATIONS)}")
        self.deviations = frozenset(pipeline)
        flip_landmarks = flip_landmarks and "flip" not in self.deviations
        if min_face_size < _CELL_SIZE:
            raise ValueError(f"min_face_size must be >= {_CELL_SIZE} (P-Net's window), got {min_face_size}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if len(thresholds) != 3 or not all(0 <= t <= 1 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities, got {thresholds}")
        self.min_face_size, self.factor = float(min_face_size), float(factor)
        self.thresholds, self.nms_thresholds = tuple(thresholds), tuple(nms_thresholds)
        self.flip_landmarks, self.max_image_pixels = flip_landmarks, max_image_pixels
        # tuning knobs, not part of the method: P-Net batch size in pixels, and which crop resampler runs
        # ("auto": OpenCV on CPU, the batched gather elsewhere; "opencv" or "torch" to force one; same numbers)
        self.pnet_pixels_per_launch = 160_000
        # R-Net and O-Net crops per launch on CPU, so a launch's first-layer features (54 and 271 kB a crop) stay
        # cache-sized: a photo's thousand R-Net crops in one launch spend most of their time waiting on memory
        self.crops_per_launch = {"rnet": 64, "onet": 16}
        self.crop_backend = "auto"
        # P-Net's fused inference form (`PNet.cells`) and small pyramid levels from the integral image; False: the
        # layer-by-layer forward and a resize per level (the reference both are tested against)
        self.pnet_cells = True
        self.pyramid_from_integral = True
        weights = open_weights(DEFAULT_NAME if weights is None else weights, "mtcnn", "MTCNN",
                               "`keen mtcnn train` and `keen mtcnn merge`")
        path, state = weights.path, weights.state()
        self.pnet = PNet(landmarks="pnet.landmarks.weight" in state)
        self.rnet = RNet(landmarks="rnet.landmarks.weight" in state)
        self.onet = ONet()
        for name in ("pnet", "rnet", "onet"):
            load_into(getattr(self, name), {k[5:]: v for k, v in state.items() if k.startswith(name + ".")},
                      f"{path} ({name})")
        self.eval()
        self.to(memory_format=torch.channels_last)
        self.to(resolve_device(device))

    @property
    def device(self) -> torch.device:
        return self.onet.face.weight.device

    # ----------------------------------------------------------------------------------------------------------
    # public API
    @torch.inference_mode()
    def detect(self, images) -> list[list[Face]] | list[Face]:
        single = not isinstance(images, list | tuple)
        batch = [images] if single else list(images)
        reads = [read_image(image, self.max_image_pixels) for image in batch]
        faces = self.detect_arrays([r.pixels for r in reads])
        for image_faces, read in zip(faces, reads):
            if read.scale != 1.0:
                for face in image_faces:
                    face.box = face.box / read.scale
                    face.landmarks = face.landmarks / read.scale
        return faces[0] if single else faces

    @torch.inference_mode()
    def detect_arrays(self, images: list[np.ndarray]) -> list[list[Face]]:
        """`detect` on RGB uint8 ``[H, W, 3]`` arrays, without input conversion."""
        if not images:
            return []
        if self.device.type == "cpu" and _threads() > 1 and not hasattr(_LOCAL, "threads"):
            # on several CPU threads the cascade runs in a driver thread that hands its pieces to the workers, all
            # on one intra-op thread each: an op run by OpenMP on two threads here would leave its second thread
            # spinning on the cores the workers need
            _workers()  # created here: a pool started from one of our threads would reset that thread's count
            return _pool("drivers").submit(self._detect_arrays, images).result()
        return self._detect_arrays(images)

    @torch.inference_mode()
    def _detect_arrays(self, images: list[np.ndarray]) -> list[list[Face]]:
        floats = _as_float32(images)  # the MATLAB code works on single(img)
        boxes = self._stage_rnet(floats, self._stage_pnet(floats, images))
        return self._stage_onet(floats, boxes)

    @torch.inference_mode()
    def propose(self, images: list[np.ndarray], last_stage: str = "pnet") -> list[np.ndarray]:
        """Boxes the stage after ``last_stage`` would crop (squared, integer), per image, as ``[N, 5]`` arrays
        of x1, y1, x2, y2, score in pixel-edge coordinates. Used to mine hard samples for training."""
        if last_stage not in ("pnet", "rnet"):
            raise ValueError("last_stage must be 'pnet' or 'rnet'")
        floats = _as_float32(images)
        boxes = self._stage_pnet(floats, images)
        if last_stage == "rnet":
            boxes = self._stage_rnet(floats, boxes)
        out = []
        for candidates in boxes:
            array = candidates.cpu().double().numpy().copy()
            array[:, :4] = np.trunc(array[:, :4])  # the next stage's fix()
            array[:, 0:2] -= 1  # MATLAB 1-based inclusive -> edge coordinates
            out.append(array)
        return out

    # ----------------------------------------------------------------------------------------------------------
    # stages; boxes are float64 [N, 5] (x1, y1, x2, y2, score) per image in MATLAB's 1-based convention
    def _stage_pnet(self, images: list[np.ndarray], originals: list[np.ndarray] | None = None
                    ) -> list[torch.Tensor]:
        """``images``: float32 copies; ``originals``: the uint8 inputs, whose integral images give the small
        pyramid levels of large frames (optional: without them every level is resized)."""
        official = "pyramid" not in self.deviations
        levels: dict[tuple[int, int], list[tuple[int, int, float]]] = defaultdict(list)
        integral_sources: list[np.ndarray | None] = [None] * len(images)
        for image_index, image in enumerate(images):
            height, width = image.shape[:2]
            for level, scale in enumerate(pyramid_scales(height, width, self.min_face_size, self.factor)):
                if official:
                    shape = (int(np.ceil(height * scale)), int(np.ceil(width * scale)))
                    original = originals[image_index] if originals is not None else None
                    if (self.pyramid_from_integral and original is not None and original.dtype == np.uint8
                            and original.shape == image.shape and _from_integral(image.shape, shape[::-1])):
                        integral_sources[image_index] = original
                else:
                    shape = (int(height * scale + 1), int(width * scale + 1))
                levels[shape].append((image_index, level, scale))

        floats = images
        # split big batches (and big levels, `_pnet_strips`) so one launch's feature maps stay cache-sized
        per_launch = max(1, self.pnet_pixels_per_launch)
        chunks = [((h, w), members[i:i + max(1, per_launch // (h * w))])
                  for (h, w), members in levels.items() for i in range(0, len(members), max(1, per_launch // (h * w)))]
        heads = self.pnet.cell_heads() if self.pnet_cells else None
        # on CPU every launch runs whole in a worker (resampling, P-Net, threshold), as many at once as there are
        # threads, each on one thread: no OpenMP region here, whose spinning threads would take the workers' cores
        in_workers = official and self.pnet_cells and self.device.type == "cpu"
        if official:
            # every level before P-Net: overlapping the two put more threads on the cores than
            # torch.get_num_threads() allows, and was slower on as many cores as threads; the integral images are
            # submitted just before the first level that samples them (so a worker takes them before the levels
            # that wait for them); the buffers first: once the workers run, every call here waits for the GIL
            buffers = [scratch(f"level{index}", (len(members), level_height, level_width, 3)).numpy()
                       for index, ((level_height, level_width), members) in enumerate(chunks)]
            task = partial(self._pnet_launch, heads=heads) if in_workers else _shrink_normalised
            pending, integrals = [], None
            for ((level_height, level_width), members), level in zip(chunks, buffers):
                if integrals is None and any(integral_sources[i] is not None and _from_integral(
                        floats[i].shape, (level_width, level_height)) for i, _, _ in members):
                    integrals = _workers().submit(_integrals, integral_sources)
                pending.append(_workers().submit(task, floats, members, (level_width, level_height), level, integrals))
            resampled = [future.result() for future in pending]
        found = resampled if in_workers else []
        for index, ((level_height, level_width), members) in enumerate([] if in_workers else chunks):
            if official:
                batch = torch.from_numpy(resampled[index]).to(self.device).permute(0, 3, 1, 2)
            else:
                batch = torch.cat([F.interpolate(torch.from_numpy(floats[i]).to(self.device).permute(2, 0, 1)[None],
                                                 size=(level_height, level_width), mode="area")
                                   for i, _, _ in members])
                batch = (batch - 127.5) * 0.0078125
            # channels-last runs the 3-channel first convolution about 10x faster on CPU (oneDNN)
            batch = batch.contiguous(memory_format=torch.channels_last)
            if self.pnet_cells:
                probability, offsets = self._pnet_strips(batch, heads)
            else:  # the layer-by-layer forward (the reference the fast form is tested against)
                face_logits, offsets = self.pnet(batch)[:2]
                # softmax over two channels is the sigmoid of their difference
                probability, offsets = torch.sigmoid(face_logits[:, 1] - face_logits[:, 0]), offsets.permute(0, 2, 3, 1)
            found.append(_cells_above(probability, offsets, self.thresholds[0]))
        # the launches' members in one table: member indices of later launches start after earlier launches' own
        first = np.cumsum([0] + [len(members) for _, members in chunks[:-1]]).tolist()
        no_cells = torch.zeros(0, dtype=torch.long, device=self.device)
        member = torch.cat([cells[0] + start for cells, start in zip(found, first)] + [no_cells])
        if member.numel() == 0:
            return [torch.zeros(0, 5, dtype=torch.float64, device=self.device) for _ in images]
        row, column, probability, offsets = (torch.cat([cells[k] for cells in found]) for k in range(1, 5))
        # image, level and scale of each cell's pyramid level
        level = torch.tensor([[i, lv, s] for _, members in chunks for i, lv, s in members], dtype=torch.float64,
                             device=self.device)[member]
        scales = level[:, 2:3]
        # generateBoundingBox.m: the cell's 12x12 window, in 1-based image pixels
        top_left = torch.stack([column, row], 1).double() * _CELL_STRIDE + 1
        boxes = torch.cat([torch.trunc(top_left / scales), torch.trunc((top_left + _CELL_SIZE - 1) / scales),
                           probability.double()[:, None], offsets.double()], dim=1)
        groups = level[:, :2].long()
        group_id = groups[:, 0] * 1000 + groups[:, 1]
        inclusive = "nms" not in self.deviations
        keep = _nms_union(boxes, boxes[:, 4], group_id, self.nms_thresholds[0], inclusive)  # per scale
        boxes, image_ids = boxes[keep], groups[keep, 0]
        keep = _nms_union(boxes, boxes[:, 4], image_ids, self.nms_thresholds[1], inclusive)  # across scales
        boxes, image_ids = boxes[keep], image_ids[keep]
        boxes = torch.cat([_square(_calibrate(boxes, boxes[:, 5:9], inclusive=False)), boxes[:, 4:5]], 1)
        if "rounding" not in self.deviations:
            boxes[:, :4] = torch.trunc(boxes[:, :4])
        return [boxes[image_ids == i] for i in range(len(images))]

    @torch.inference_mode()
    def _pnet_launch(self, images: list[np.ndarray], members: list[tuple[int, int, float]], size: tuple[int, int],
                     out: np.ndarray, integrals: Future | None, heads: tuple[torch.Tensor, torch.Tensor]
                     ) -> tuple[torch.Tensor, ...]:
        """One P-Net launch in a worker: the members' pyramid level resampled into ``out`` (`_shrink_normalised`)
        and its cells that pass the threshold (`_cells_above`)."""
        level = torch.from_numpy(_shrink_normalised(images, members, size, out, integrals)).permute(0, 3, 1, 2)
        return _cells_above(*self._pnet_strips(level.contiguous(memory_format=torch.channels_last), heads),
                            self.thresholds[0])

    def _pnet_strips(self, batch: torch.Tensor, heads: tuple[torch.Tensor, torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """`PNet.cells` on ``batch`` ``[B, 3, H, W]`` in horizontal strips of about `pnet_pixels_per_launch` input
        pixels, the same numbers: output row ``r`` sees input rows ``[2r, 2r + 12)``, and every strip starts at an
        even row, so the 2x2 pool keeps its alignment."""
        height, width = batch.shape[2:]
        rows = max(1, (self.pnet_pixels_per_launch // (len(batch) * width) - 10) // 2)  # output rows per strip
        out_height = (height - 1) // 2 - 4
        if out_height <= rows:
            return self.pnet.cells(batch, heads)
        parts = [self.pnet.cells(batch[:, :, 2 * start:2 * start + 2 * rows + 10], heads)
                 for start in range(0, out_height, rows)]
        return torch.cat([p for p, _ in parts], 1), torch.cat([o for _, o in parts], 1)

    def _crops(self, images: list[np.ndarray], boxes: list[torch.Tensor], size: int) -> torch.Tensor:
        """Crops of the boxes (integer, MATLAB 1-based inclusive) resized to ``size``, normalised."""
        crops = []
        for image, image_boxes in zip(images, boxes):
            if len(image_boxes) == 0:
                continue
            if "crops" in self.deviations:
                tensor = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
                crops.append(_facenet_crops(tensor, image_boxes[:, :4], size))
            elif self.crop_backend == "opencv" or (self.crop_backend == "auto" and self.device.type == "cpu"):
                # OpenCV one crop at a time beats the batched gather on CPU (same numbers)
                resized = resample_crops_cv2(image, image_boxes[:, :4].numpy(), size)
                crops.append(torch.from_numpy(resized).permute(0, 3, 1, 2))
            else:
                tensor = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
                crops.append(resample_crops(tensor, image_boxes[:, :4], size))
        return ((torch.cat(crops) - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)

    def _classify_boxes(self, stage: str, images: list[np.ndarray], boxes: list[torch.Tensor]
                        ) -> tuple[torch.Tensor, ...]:
        """`_crop_and_classify` on ``boxes`` (one tensor per image). On several CPU threads the boxes are shared
        among the workers, each cropping and classifying its share on one thread, and O-Net's mirrored pass runs
        there too, on the crops whose face passes (a launch of its own after NMS would be one more hand-over)."""
        if self.device.type != "cpu" or _threads() == 1:
            return self._crop_and_classify(stage, images, boxes, mirror=False)
        mirror = stage == "onet" and self.flip_landmarks
        futures = [_workers().submit(self._crop_and_classify, stage, images, share, mirror)
                   for share in _share_boxes(boxes, _threads())]
        return tuple(torch.cat(parts) for parts in zip(*[future.result() for future in futures]))

    @torch.inference_mode()
    def _crop_and_classify(self, stage: str, images: list[np.ndarray], boxes: list[torch.Tensor], mirror: bool
                           ) -> tuple[torch.Tensor, ...]:
        """R-Net's or O-Net's (``stage``) outputs on the crops of ``boxes``, for O-Net then the crops (its mirrored
        pass may need them); with ``mirror`` also O-Net's landmarks on the mirrored crops whose face passes its
        threshold (NaN for the others)."""
        crops = self._crops(images, boxes, getattr(self, stage).input_size)
        outputs = (*self._classify(stage, crops), *([crops] if stage == "onet" else []))
        if mirror:
            passed = F.softmax(outputs[0], dim=1)[:, 1].double() > self.thresholds[2]
            mirrored = torch.full_like(outputs[2], float("nan"))
            if passed.any():
                mirrored[passed] = self._classify(stage, crops[passed].flip(-1))[2]
            outputs += (mirrored,)
        return outputs

    @torch.inference_mode()
    def _classify(self, stage: str, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """R-Net or O-Net (``stage``) on ``crops`` ``[N, 3, s, s]``, in launches of `crops_per_launch` on CPU."""
        net = getattr(self, stage)
        per_launch = self.crops_per_launch[stage] if self.device.type == "cpu" else len(crops)
        if len(crops) <= per_launch:
            return net(crops)
        outputs = [net(crops[start:start + per_launch]) for start in range(0, len(crops), per_launch)]
        return tuple(torch.cat(parts) for parts in zip(*outputs))

    def _stage_rnet(self, images: list[np.ndarray], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return boxes
        face_logits, offsets = self._classify_boxes("rnet", images, boxes)[:2]
        scores = F.softmax(face_logits, dim=1)[:, 1].double()
        all_boxes = torch.cat(boxes)
        image_ids = torch.repeat_interleave(torch.arange(len(boxes), device=self.device),
                                            torch.tensor(counts, device=self.device))
        passed = scores > self.thresholds[1]
        all_boxes = torch.cat([all_boxes[passed, :4], scores[passed, None]], 1)
        offsets, image_ids = offsets[passed].double(), image_ids[passed]
        keep = _nms_union(all_boxes, all_boxes[:, 4], image_ids, self.nms_thresholds[2], "nms" not in self.deviations)
        all_boxes, offsets, image_ids = all_boxes[keep], offsets[keep], image_ids[keep]
        squared = _square(_calibrate(all_boxes, offsets, inclusive=True))
        if "rounding" not in self.deviations:
            squared = torch.trunc(squared)  # stage 3 starts with fix()
        all_boxes = torch.cat([squared, all_boxes[:, 4:5]], 1)
        return [all_boxes[image_ids == i] for i in range(len(boxes))]

    def _stage_onet(self, images: list[np.ndarray], boxes: list[torch.Tensor]) -> list[list[Face]]:
        counts = [len(b) for b in boxes]
        results: list[list[Face]] = [[] for _ in boxes]
        if sum(counts) == 0:
            return results
        face_logits, offsets, points, crops, *mirrored = self._classify_boxes("onet", images, boxes)
        scores = F.softmax(face_logits, dim=1)[:, 1].double()
        input_boxes = torch.cat(boxes)[:, :4]
        image_ids = torch.repeat_interleave(torch.arange(len(boxes), device=self.device),
                                            torch.tensor(counts, device=self.device))
        passed = torch.nonzero(scores > self.thresholds[2]).flatten()
        if passed.numel() == 0:
            return results
        calibrated = _calibrate(input_boxes[passed], offsets[passed].double(), inclusive=True)
        keep = _nms_min(calibrated.cpu().numpy(), scores[passed].cpu().numpy(), image_ids[passed].cpu().numpy(),
                        self.nms_thresholds[3])
        keep = torch.from_numpy(keep).to(self.device)
        chosen = passed[keep]
        points = points[chosen].double()
        if self.flip_landmarks:
            mirrored = (mirrored[0][chosen] if mirrored else self._classify("onet", crops[chosen].flip(-1))[2]).double()
            mirrored = torch.cat([1 - mirrored[:, _MIRRORED_LANDMARKS],
                                  mirrored[:, [5 + k for k in _MIRRORED_LANDMARKS]]], 1)
            points = (points + mirrored) / 2
        # landmarks on the O-Net input box: x = x1 + w * p - 1 (already edge coordinates)
        source = input_boxes[chosen]
        size = source[:, 2:4] - source[:, 0:2] + 1
        xs = source[:, 0:1] - 1 + size[:, 0:1] * points[:, :5]
        ys = source[:, 1:2] - 1 + size[:, 1:2] * points[:, 5:]
        landmarks = torch.stack([xs, ys], dim=2).cpu().numpy()
        final = calibrated[keep].cpu().numpy()
        final[:, 0:2] -= 1  # MATLAB 1-based inclusive -> edge coordinates
        final_scores = scores[chosen].cpu().numpy()
        for row, image in enumerate(image_ids[chosen].cpu().numpy()):
            results[image].append(Face(final[row].astype(np.float32), float(final_scores[row]),
                                       landmarks[row].astype(np.float32)))
        return results


def load(name_or_path: str | Path | None = None, device: str | torch.device | None = None) -> MTCNN:
    """The system contract's loader: an `MTCNN` on ``"mtcnn-caffe"`` (the default) or a weights file."""
    return MTCNN(weights=name_or_path, device=device)
