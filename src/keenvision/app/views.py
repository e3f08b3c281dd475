"""What each view of ``keen app`` computes, without Gradio: a file or frame in, images, numbers and a JSON record
out, on the shipped weights. Bad inputs raise `AppInputError` with one line the page shows as it is.

Every function here goes through the systems' public APIs (`keenvision.mtcnn`, `.sicnn.hallucinate`,
`.farsee.segment`, `.engagement.predict`, `.diffrate`), so the app shows exactly what the library and ``keen``
commands give. Models are loaded once, on first use.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import ImageReadError, UsageError

MAX_UPLOAD = "100mb"            # Gradio refuses larger uploads before they reach a view
MAX_IMAGE_PIXELS = 80_000_000   # refused outright: an 80 MP image is a decompression bomb or a mistake here
WORK_PIXELS = 4_194_304         # larger photos are reduced (area-averaged) before detection / segmentation
MAX_VIDEO_SECONDS = 600         # engagement: EmotiW clips are ~5 minutes; longer ones belong to the command line
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class AppInputError(UsageError):
    """An upload or a setting the user can fix; its one-line message is shown in the page."""


# --- inputs -------------------------------------------------------------------------------------------------------

def _upload_path(upload, what: str) -> Path:
    if upload is None or (isinstance(upload, str) and not upload):
        raise AppInputError(f"no {what}: upload one first")
    path = Path(upload if isinstance(upload, str | Path) else getattr(upload, "name", upload))
    if not path.is_file():
        raise AppInputError(f"the uploaded {what} is missing on the server; upload it again")
    if path.stat().st_size == 0:
        raise AppInputError(f"{path.name}: the file is empty")
    return path


def read_upload(upload, webcam: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(RGB uint8 pixels, a note) from an uploaded image file, or else a webcam frame. Images above
    `MAX_IMAGE_PIXELS` are refused from their header (before decoding); above `WORK_PIXELS` they are reduced."""
    from ..core.io import read_image

    if upload is None and webcam is not None:
        return read_image(np.asarray(webcam), max_pixels=WORK_PIXELS).pixels, "webcam frame"
    path = _upload_path(upload, "image")
    try:
        Image.MAX_IMAGE_PIXELS = None  # our own limit below, with a message instead of PIL's warning or error
        with Image.open(path) as header:
            width, height = header.size
    except Exception:  # noqa: BLE001 - PIL raises many types for junk; the message names the file
        raise AppInputError(f"{path.name}: not a readable image (JPEG, PNG, BMP, TIFF, WebP ...)") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise AppInputError(f"{path.name}: {width}x{height} is {width * height / 1e6:.0f} MP; the app takes up to "
                            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP (the command line takes any size)")
    try:
        read = read_image(path, max_pixels=WORK_PIXELS)
    except ImageReadError as error:
        raise AppInputError(f"{path.name}: {str(error).split(': ', 1)[-1]}") from None
    note = f"{path.name}, {width}x{height}"
    if read.scale < 1:
        note += f" (reduced to {read.pixels.shape[1]}x{read.pixels.shape[0]})"
    return read.pixels, note


def read_video_frame(upload, second: float = 0.0) -> tuple[np.ndarray, str]:
    """The frame of an uploaded video at ``second`` (the last one when past the end), RGB uint8."""
    import cv2

    path = _upload_path(upload, "video")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise AppInputError(f"{path.name}: cannot open as a video")
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        index = int(max(0.0, float(second or 0)) * fps) if fps > 0 else 0
        if frames > 0:
            index = min(index, frames - 1)
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok and index:  # some containers do not seek: decode from the start instead
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = capture.read()
            index = 0
    finally:
        capture.release()
    if not ok:
        raise AppInputError(f"{path.name}: no decodable frame")
    pixels = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if pixels.shape[0] * pixels.shape[1] > WORK_PIXELS:
        factor = (WORK_PIXELS / (pixels.shape[0] * pixels.shape[1])) ** 0.5
        pixels = cv2.resize(pixels, (int(pixels.shape[1] * factor), int(pixels.shape[0] * factor)),
                            interpolation=cv2.INTER_AREA)
    at = f"{index / fps:.2f} s" if fps > 0 else f"frame {index}"
    return pixels, f"{path.name}, frame {index} ({at})"


def is_video_upload(upload) -> bool:
    return upload is not None and Path(str(upload)).suffix.lower() in VIDEO_SUFFIXES


def png_pixels(write_png) -> np.ndarray:
    """Run ``write_png(path)`` (a plotting function that writes a PNG) in a scratch folder and return the pixels."""
    from ..core.io import read_image

    with tempfile.TemporaryDirectory(prefix="keen-app-") as folder:
        path = Path(folder) / "plot.png"
        write_png(path)
        return read_image(path).pixels


# --- models, loaded once ------------------------------------------------------------------------------------------

@functools.cache
def detector():
    from ..mtcnn import MTCNN

    model = MTCNN(device="cpu")
    model.detect_arrays([np.zeros((64, 64, 3), np.uint8)])  # warm-up, so the first view's time is the steady one
    return model


@functools.cache
def hallucinator():
    from ..sicnn.hallucinate import Hallucinator

    return Hallucinator(device="cpu", detector=detector())


@functools.cache
def segmenter():
    from ..farsee.segment import Segmenter

    return Segmenter(device="cpu", batch_size=1)


@functools.cache
def engagement_model():
    from ..engagement.predict import DEFAULT_MODEL, resolve_model

    return DEFAULT_MODEL, resolve_model(DEFAULT_MODEL)


# --- the five views -----------------------------------------------------------------------------------------------

def detect(upload=None, webcam: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """MTCNN: (image with boxes, scores and landmarks drawn, aligned 112x112 crops, the JSON record)."""
    from ..core.draw import draw_boxes
    from ..mtcnn import align

    pixels, source = read_upload(upload, webcam)
    start = time.perf_counter()
    faces = detector().detect_arrays([pixels])[0]
    elapsed = time.perf_counter() - start
    annotated = draw_boxes(pixels, [f.box for f in faces], [f.score for f in faces], [f.landmarks for f in faces])
    crops = [align(pixels, face.landmarks, (112, 112)) for face in faces]
    record = {"source": source, "width": int(pixels.shape[1]), "height": int(pixels.shape[0]),
              "milliseconds": round(1000 * elapsed, 1),
              "faces": [{"box": [round(float(v), 2) for v in face.box], "score": round(float(face.score), 5),
                         "landmarks": [[round(float(v), 2) for v in point] for point in face.landmarks]}
                        for face in faces]}
    return annotated, crops, record


def hallucinate(upload=None) -> tuple[list[tuple[np.ndarray, str]], dict]:
    """SICNN: per face a strip LR 12x14 | bicubic x8 | SICNN x8 | the aligned photo, and the JSON record. Every
    face is reduced to 12x14 first, so large faces show what the network recovers from 168 pixels."""
    from ..sicnn.hallucinate import side_by_side

    pixels, source = read_upload(upload)
    faces = hallucinator().hallucinate_image(pixels, all_faces=True)
    if not faces:
        raise AppInputError(f"{source}: no face found (MTCNN, smallest face 20 pixels)")
    strips = [(side_by_side(face), f"face {index}: score {face.score:.3f}") for index, face in enumerate(faces)]
    return strips, {"source": source, "faces": [face.to_dict() for face in faces]}


def segment(upload=None, second: float = 0.0) -> tuple[np.ndarray, dict[str, float], str, dict]:
    """FarSee-Net: (overlay, class shares, a line with the speed, the JSON record) for an image or a video frame."""
    from ..farsee.segment import overlay

    pixels, source = read_video_frame(upload, second) if is_video_upload(upload) else read_upload(upload)
    model = segmenter()
    model.segment(pixels)  # warm-up: the first call pays for allocation, not the network
    start = time.perf_counter()
    result = model.segment(pixels)
    elapsed = time.perf_counter() - start
    shares = {name: round(float(share), 4) for name, share in result.class_fractions(model.class_names).items()}
    speed = (f"{1 / elapsed:.1f} fps ({1000 * elapsed:.0f} ms for {pixels.shape[1]}x{pixels.shape[0]}, batch 1, "
             f"CPU, reading and colouring excluded)")
    record = {"source": source, "width": int(pixels.shape[1]), "height": int(pixels.shape[0]),
              "milliseconds": round(1000 * elapsed, 1), "class_shares": shares}
    return overlay(pixels, result.labels, model.palette), shares, f"**{source}**: {speed}", record


def engagement(upload=None) -> tuple[np.ndarray, str, dict]:
    """Engagement intensity of a video (or an OpenFace CSV): (the segment timeline plot, a line, the JSON)."""
    from ..core.io import video_info
    from ..engagement.predict import plot_timeline, predict_file

    path = _upload_path(upload, "video")
    if path.suffix.lower() not in VIDEO_SUFFIXES + (".csv",):
        raise AppInputError(f"{path.name}: expected a video ({', '.join(VIDEO_SUFFIXES)}) or an OpenFace .csv")
    if path.suffix.lower() != ".csv":
        try:
            info = video_info(path)
        except ImageReadError:
            raise AppInputError(f"{path.name}: cannot open as a video") from None
        seconds = info["frames"] / info["fps"] if info["fps"] > 0 else 0.0
        if info["frames"] <= 0:
            raise AppInputError(f"{path.name}: no decodable frames")
        if seconds > MAX_VIDEO_SECONDS:
            raise AppInputError(f"{path.name}: {seconds / 60:.1f} minutes; the app takes up to "
                                f"{MAX_VIDEO_SECONDS // 60} (keen engagement predict takes any length)")
    name, model = engagement_model()
    try:
        prediction = predict_file(path, model)
    except (ImageReadError, ValueError) as error:
        raise AppInputError(f"{path.name}: {str(error).split(': ', 1)[-1]}") from None
    prediction.model = name
    plot = png_pixels(lambda out: plot_timeline(prediction, out))
    record = prediction.to_dict()
    record["source"] = path.name
    summary = (f"**engagement {prediction.intensity:.2f}** (nearest EmotiW level {prediction.level:g}, "
               f"{record['level_name']}) over {len(prediction.per_segment)} segments, model {name}"
               + (" (approximate features)" if prediction.approximate else ""))
    return plot, summary, record


DIFFRATE_MODELS = ("cifar10-vit", "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
                   "eva02_tiny_patch14_224", "vit_small_patch16_rope_224")
UNIFORM = "uniform at the FLOPs target"


def diffrate_schedules() -> list[str]:
    """The schedule choices of the DiffRate view: uniform merging, then every published and shipped schedule."""
    import json
    from importlib import resources

    choices = [UNIFORM]
    for prefix, file in (("published", "published_schedules.json"), ("shipped", "shipped_schedules.json")):
        entries = json.loads(resources.files("keenvision.diffrate").joinpath(file).read_text())
        choices += [f"{prefix}:{model}/{gflops}" for model, by_gflops in entries.items() for gflops in by_gflops]
    return choices


def diffrate(model_name: str = "cifar10-vit", schedule: str = UNIFORM, target_gflops: float | None = None,
             batch: int = 1) -> tuple[np.ndarray, str, dict]:
    """DiffRate: a timm ViT (random weights, or the shipped CIFAR-10 ViT) and a schedule -> (kept tokens plot, a
    line, the JSON with formula FLOPs of both and measured throughput of both in the same run)."""
    from ..diffrate.baseline import uniform_schedule
    from ..diffrate.benchmark import throughput
    from ..diffrate.flops import schedule_gflops, vit_cost_config
    from ..diffrate.models import load_model
    from ..diffrate.plot import plot_kept_tokens
    from ..diffrate.resolve import load_schedule

    model_name = (model_name or "").strip()
    if not model_name or model_name.endswith(".safetensors") or "/" in model_name:
        raise AppInputError(f"{model_name!r}: give a timm ViT name (e.g. deit_small_patch16_224) or cifar10-vit")
    batch = int(batch or 1)
    if not 1 <= batch <= 64:
        raise AppInputError(f"batch {batch}: the app measures batches of 1 to 64")
    try:
        model = load_model(model_name)
        original = schedule_gflops(model)
        if schedule == UNIFORM:
            if target_gflops is None or not 0 < float(target_gflops) < original:
                raise AppInputError(f"uniform merging needs a FLOPs target between 0 and the model's "
                                    f"{original:.3f} GFLOPs")
            chosen = uniform_schedule(model, float(target_gflops))
        else:
            chosen = load_schedule(schedule, model)
    except (ValueError, KeyError) as error:
        if isinstance(error, AppInputError):
            raise
        raise AppInputError(str(error).strip().splitlines()[0]) from None
    compressed = schedule_gflops(model, chosen)
    tokens = vit_cost_config(model).tokens
    speed = throughput(model, chosen, batch=batch, repeats=3, warmup=1)
    plot = png_pixels(lambda out: plot_kept_tokens(chosen, tokens, out, title=f"{model_name}: {schedule}"))
    record = {"model": model_name, "schedule": schedule, "gflops_original": round(original, 4),
              "gflops_compressed": round(compressed, 4), "flops_ratio": round(original / compressed, 3),
              "batch": batch, "images_per_s_original": round(speed["images_per_s_original"], 2),
              "images_per_s_compressed": round(speed["images_per_s_compressed"], 2),
              "speedup": round(speed["speedup"], 3), "threads": speed.get("threads")}
    summary = (f"**{original:.3f} -> {compressed:.3f} GFLOPs** ({original / compressed:.2f}x fewer); measured "
               f"{speed['images_per_s_original']:.1f} -> {speed['images_per_s_compressed']:.1f} images/s at batch "
               f"{batch} ({speed['speedup']:.2f}x), CPU, same run")
    return plot, summary, record
