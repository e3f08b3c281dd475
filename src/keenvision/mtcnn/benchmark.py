"""Detector throughput on this machine (the ``keen mtcnn bench`` command; peers are compared in benchmarks/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.bench import measure
from ..core.data import data_root
from ..core.io import is_video, read_image, video_frames
from .detector import MTCNN


def sample_image() -> np.ndarray:
    """The embedded demo photo: scikit-image's astronaut (public domain, NASA)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def load_frames(source: str | Path | None, count: int) -> tuple[list[np.ndarray], str]:
    """Up to ``count`` frames of a video (or copies of one image); default: the shared sample video if present,
    else the embedded astronaut photo."""
    if source is None:
        video = data_root() / "video_samples" / "WolfgangLanger_Pexels.mp4"
        source = video if video.is_file() else None
    if source is None:
        return [sample_image()] * count, "astronaut (embedded)"
    if is_video(source):
        frames = []
        for _, frame in video_frames(source):
            frames.append(frame)
            if len(frames) == count:
                break
        return frames, str(source)
    return [read_image(source).pixels] * count, str(source)


def benchmark_detector(detector: MTCNN, source: str | Path | None = None, batch: int = 8, frames: int = 32,
                       repeats: int = 3) -> dict:
    """Frames per second one at a time and ``batch`` at a time, median of ``repeats`` passes over ``frames``."""
    images, name = load_frames(source, frames)
    if batch < 1 or not images:
        raise ValueError("need at least one frame and --batch >= 1")
    single = measure(lambda: [detector.detect_arrays([image]) for image in images], repeats, 1, detector.device)
    batched = measure(lambda: [detector.detect_arrays(images[i:i + batch]) for i in range(0, len(images), batch)],
                      repeats, 1, detector.device)
    height, width = images[0].shape[:2]
    return {"input": name, "width": width, "height": height, "frames": len(images), "device": str(detector.device),
            "threads": torch.get_num_threads(), "fps_single": len(images) / single.median_s,
            "fps_batched": len(images) / batched.median_s, "batch": batch}
