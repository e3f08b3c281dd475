"""Engagement video pipeline: end-to-end frames/s (decode + MTCNN every k frames + optical-flow tracking + head
pose + per-segment features) by detection interval k, and how far tracking strays from per-frame detection.

    python benchmarks/engagement_video_bench.py [--videos a.mp4 ...] [--every 1 2 5 10] [--threads 1]
                                                [--repeats 3] [--json] [--save]

Default videos: the 640x360 clips of the shared data (video_samples/single_face.mp4, WolfgangLanger_Pexels.mp4).
Per k: frames/s = decoded frames / wall time of `track_face` + both per-segment feature sets (15 segments), median
of ``--repeats`` runs per video, videos pooled (total frames / total time); the MTCNN model is built once, outside
the timing. Decode-only frames/s is the ceiling. Agreement with k = 1: the share of frames whose face presence
matches, the mean landmark distance in eye distances and the mean absolute pose difference (degrees) over frames
with a face in both. ``--save`` writes the table and the JSON to benchmarks/results/engagement_video_cpu.txt.

On a CPU shared with other work, keep --threads at or below the idle cores and read the load averages printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from keenvision.core.bench import format_table
from keenvision.core.data import data_root
from keenvision.core.io import video_frames, video_info
from keenvision.engagement.video import make_detector, track_face, video_openface_features, video_segment_features

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_VIDEOS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4")


def time_pipeline(path: Path, every: int, detector, repeats: int):
    """(median seconds, frames, last track) of the full pipeline on one video."""
    times, track = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        track = track_face(path, detect_every=every, detector=detector)
        video_segment_features(track, 15)
        video_openface_features(track, 15)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(track), track


def decode_seconds(path: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in video_frames(path):
            pass
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def agreement(track, reference) -> dict:
    both = track.present & reference.present
    result = {"presence_agreement": float((track.present == reference.present).mean())}
    if both.any():
        eye_distance = np.linalg.norm(reference.landmarks[both, 1] - reference.landmarks[both, 0], axis=1)
        distance = np.linalg.norm(track.landmarks[both] - reference.landmarks[both], axis=2).mean(1)
        result["landmark_error_eye_distances"] = float((distance / np.maximum(eye_distance, 1e-6)).mean())
        result["pose_error_degrees"] = np.degrees(np.abs(track.rotation[both] - reference.rotation[both])
                                                  ).mean(0).round(3).tolist()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", type=Path, help="video files (default: the shared 640x360 clips)")
    parser.add_argument("--every", nargs="+", type=int, default=[1, 2, 5, 10], help="detection intervals k")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/engagement_video_cpu.txt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    videos = args.videos or [data_root() / "video_samples" / name for name in DEFAULT_VIDEOS]
    missing = [str(v) for v in videos if not Path(v).is_file()]
    if missing:
        raise SystemExit(f"videos not found: {missing} (set KEEN_DATA or give --videos)")
    load_before = os.getloadavg()
    detector = make_detector()
    track_face(videos[0], detect_every=1, detector=detector, max_frames=8)  # warm-up
    infos = {str(v): video_info(v) for v in videos}
    decode_total = sum(decode_seconds(v, args.repeats) for v in videos)
    frames_total = 0
    rows, records, references = [], [], {}
    for every in sorted(set([1, *args.every])):
        seconds, frames, checks = 0.0, 0, []
        for video in videos:
            elapsed, count, track = time_pipeline(video, every, detector, args.repeats)
            seconds += elapsed
            frames += count
            if every == 1:
                references[str(video)] = track
            checks.append(agreement(track, references[str(video)]))
        frames_total = frames
        presence = float(np.mean([c["presence_agreement"] for c in checks]))
        landmark = float(np.mean([c.get("landmark_error_eye_distances", 0.0) for c in checks]))
        pose = np.mean([c.get("pose_error_degrees", [0, 0, 0]) for c in checks], axis=0).round(2).tolist()
        record = {"detect_every": every, "frames": frames, "seconds": seconds, "fps": frames / seconds,
                  "presence_agreement_vs_k1": presence, "landmark_error_vs_k1": landmark,
                  "pose_error_vs_k1_degrees": pose, "per_video": checks}
        records.append(record)
        if every in args.every:
            rows.append([every, frames, f"{1000 * seconds / frames:.2f}", f"{frames / seconds:.1f}",
                         "yes" if frames / seconds >= 30 else "no", f"{presence:.3f}", f"{landmark:.4f}",
                         " / ".join(f"{v:.2f}" for v in pose)])
        print(f"done: k={every}", flush=True)
    decode_fps = frames_total / decode_total
    sizes = ", ".join(f"{Path(p).name} {i['width']}x{i['height']} ({i['frames']} frames)" for p, i in infos.items())
    load_after = os.getloadavg()
    header = (f"Engagement video pipeline, end to end (decode + MTCNN every k frames + LK tracking + solvePnP + "
              f"15-segment features, both layouts), {platform.processor() or platform.machine()}, {args.threads} "
              f"torch/OpenCV thread(s), median of {args.repeats} runs per video; videos: {sizes}; decode only: "
              f"{decode_fps:.0f} frames/s. {os.cpu_count()} CPUs, load average (1/5 min) {load_before[0]:.1f}/"
              f"{load_before[1]:.1f} before and {load_after[0]:.1f}/{load_after[1]:.1f} after")
    table = format_table(["k", "frames", "ms/frame", "frames/s", ">= 30 fps", "presence = k1", "landmarks vs k1",
                          "pose vs k1 (pitch/yaw/roll deg)"], rows)
    result = {"benchmark": "engagement_video", "threads": args.threads, "decode_fps": decode_fps,
              "load_average_before": load_before[:2], "load_average_after": load_after[:2],
              "videos": infos, "results": [r for r in records if r["detect_every"] in args.every]}
    print(f"\n{header}\n\n{table}")
    if args.save:
        path = RESULTS / "engagement_video_cpu.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{header}\n\n{table}\n{json.dumps(result, separators=(',', ':'))}\n")
        print(f"wrote {path}")
    if args.json:
        print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
