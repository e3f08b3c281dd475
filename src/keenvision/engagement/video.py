"""Our own per-frame face pipeline for engagement: decode, detect (MTCNN) every k-th frame, track in between, head
pose from the 5 landmarks, per-segment features.

    track = track_face("lecture.mp4")                    # FaceTrack: per-frame presence, box, 5 landmarks, pose
    ours = video_segment_features(track, n_segments=15)  # [15, 25] "keenvision-video" features
    openface = video_openface_features(track, 15)        # [15, 60] the shipped models' layout, approximated

Detection and tracking. Frames are reduced to at most ``detect_width`` pixels wide (default 640) for all image work;
results are mapped back to the video's pixels. MTCNN (`keenvision.mtcnn.MTCNN`, ``min_face_size`` 40 px of the
reduced frame by default: a webcam learner's face is large) runs on every ``detect_every``-th frame (default 5), on
``keyframes_per_call`` keyframes at once (batched). Between keyframes the face is tracked: the 5 landmarks plus up
to 30 corner points found in the face box at the keyframe (``cv2.goodFeaturesToTrack``) follow pyramidal
Lucas-Kanade optical flow (``cv2.calcOpticalFlowPyrLK``); points failing a forward-backward check (error above 2 %
of the face width) are dropped; a similarity transform fitted to the rest (``cv2.estimateAffinePartial2D``, RANSAC)
moves the box and the landmarks that failed the check, the others take their own flow (so pose can change between
keyframes); with fewer than 4 points left, the face counts as lost until the next keyframe. On the shared 640x360
videos, k = 5 keeps the landmarks within 1.7 % of the eye distance of per-frame detection (k = 1) on average, and
the pose within 0.6-1.6 degrees (benchmarks/engagement_video_bench.py). A keyframe's detection always replaces the
tracked face (the detection nearest the tracked box, else the largest), and a keyframe without a detection ends the
track. So presence can lag by up to k - 1 frames when a face appears or leaves.

Head pose. ``cv2.solvePnP`` of the 5 landmarks against `FACE_MODEL_MM`, a generic 3D face in OpenFace's head frame
(mm; x to the image right, y down, z away from the camera; origin at the centre of OpenFace's 68-point model):

    eye (image left)   (-32.6, -37.1,   7.6)      eye (image right)   (32.6, -37.1,  7.6)
    nose tip           (  0.0,  -9.9, -30.0)
    mouth (left)       (-24.5,  36.6,  -2.8)      mouth (right)       (24.5,  36.6, -2.8)

These are OpenFace's own 3D landmarks of the shared ``OpenFace_Test.csv`` face, rotated back into its head frame
(eye centres = mean of points 36-41 / 42-47, nose tip 30, mouth corners 48 / 54; averaged over its 100 frames and
made symmetric), with the eyes moved 2.5 mm up and the nose 1.2 mm down: on the 42 dlib example faces, MTCNN's eye
points lie 0.038 eye distances above the eyelid centres and its nose 0.019 below point 30. Camera: pinhole, focal
length = the video's width in pixels (about 53 degrees horizontal field of view, a typical webcam), principal point
at the centre, no distortion. Angles follow OpenFace (``R = Rx(pitch) Ry(yaw) Rz(roll)``, radians; pitch > 0 is
head down). Each frame's solve starts from the previous frame's pose (else a frontal pose at the distance the eye
distance implies) and a solution behind the camera or facing away is replaced by EPnP's.

Gaze proxy. Five points do not show where the eyes look. ``gaze_proxy_x`` is the nose tip's horizontal offset from
the centre of the eyes and mouth corners, in eye distances, and ``gaze_proxy_y`` the nose tip's height between the
eye line (0) and the mouth line (1): both follow where the head points (they are what OpenFace's gaze would add to
head pose only when the eyes follow the head), not OpenFace's gaze estimate.

Features. `video_segment_features` ("keenvision-video", 25-d per segment): presence ratio; mean and std over the
frames with a face of pitch, yaw, roll, head distance (m), gaze_proxy_x, gaze_proxy_y, face centre x, y and face
width (fractions of the frame); and the EmotiW baseline's gaze deviation (variance of the 6 gaze-vector components
below). The baseline's head-pose std is the std of pitch, yaw and roll. Frames without a face are all zeros and left
out of the statistics (presence 0); nothing is NaN.

`video_openface_frames` maps the track into OpenFace's quantities so the shipped OpenFace models can score a video:
pose (translation re-scaled to OpenFace's default focal length ``500 * (w / 640 + h / 480) / 2``), eye centres (2D:
MTCNN's eye points; 3D: the model's eyes posed), eye depth, gaze vectors from each eye to a point on the head's
forward ray at the camera's distance (so gaze = head direction plus vergence; no eye rotation), gaze angles by
OpenFace's formula, and the 10 iris chords replaced by the eye distance in pixels. An approximation, not OpenFace:
the notes of the result say so.

Bad input: a missing file raises FileNotFoundError; a file OpenCV cannot open or decode (zero bytes, garbage,
truncated before the first frame) raises `ImageReadError`; a truncated file yields the frames that decode. Videos
shorter than the segmenting needs are handled by `keenvision.engagement.features.segment_frames` (frames repeated).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..core.boxes import box_iou
from ..core.io import ImageReadError, video_frames, video_info
from ..core.progress import progress_bar
from .features import (
    DEFAULT_OVERLAP,
    DEFAULT_SEGMENTS,
    SegmentFeatures,
    masked_mean_std,
    mean_std_features,
    per_segment,
    presence_ratio,
    segment_frames,
)
from .openface import GazeHeadFrames, gaze_angles, openface_segment_features

if TYPE_CHECKING:  # annotations only: MTCNN is imported where it is made
    from ..mtcnn import MTCNN

# generic 5-point face in OpenFace's head frame, mm (see the module docstring): MTCNN's landmark order
FACE_MODEL_MM = np.array([[-32.6, -37.1, 7.6], [32.6, -37.1, 7.6], [0.0, -9.9, -30.0],
                          [-24.5, 36.6, -2.8], [24.5, 36.6, -2.8]], dtype=np.float64)
MODEL_EYE_DISTANCE_MM = 65.2
VIDEO_SIGNAL_NAMES = ("pitch", "yaw", "roll", "head_distance_m", "gaze_proxy_x", "gaze_proxy_y", "face_x", "face_y",
                      "face_width")
VIDEO_FEATURE_SET = "keenvision-video"
VIDEO_FEATURE_NAMES: tuple[str, ...] = (
    "presence", *(f"{name}_mean" for name in VIDEO_SIGNAL_NAMES), *(f"{name}_std" for name in VIDEO_SIGNAL_NAMES),
    *(f"gaze_{eye}_{axis}_deviation" for eye in (0, 1) for axis in "xyz"))
DEFAULT_DETECT_EVERY = 5
DEFAULT_MIN_FACE_SIZE = 40.0
DEFAULT_DETECT_WIDTH = 640
_MAX_CORNERS = 30
_MIN_TRACKED_POINTS = 4
_LK_PARAMETERS = {"winSize": (15, 15), "maxLevel": 2,
                  "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}


@dataclass
class FaceTrack:
    """The main face of every frame of a video (T frames), in the video's pixel coordinates.

    ``present`` [T] bool; ``detected`` [T] bool (MTCNN found it on this frame, else tracked or absent); ``box``
    [T, 4] x1, y1, x2, y2; ``landmarks`` [T, 5, 2] (MTCNN order: eyes, nose, mouth corners, image-left first);
    ``score`` [T] the last detection's probability; ``rotation`` [T, 3] pitch, yaw, roll (rad, OpenFace's Rx, Ry,
    Rz); ``translation`` [T, 3] head position (mm, camera coordinates, focal = ``focal``). Absent frames hold zeros.
    """

    present: np.ndarray
    detected: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    score: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    width: int
    height: int
    fps: float
    focal: float
    detect_every: int
    path: str = ""

    def __len__(self) -> int:
        return len(self.present)

    def signals(self) -> np.ndarray:
        """Per-frame signals ``[T, 9]`` of `VIDEO_SIGNAL_NAMES` (zeros where no face)."""
        landmarks = self.landmarks.astype(np.float64)
        eyes_mid = (landmarks[:, 0] + landmarks[:, 1]) / 2
        mouth_mid = (landmarks[:, 3] + landmarks[:, 4]) / 2
        eye_distance = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)
        centre = landmarks[:, [0, 1, 3, 4]].mean(1)
        nose = landmarks[:, 2]
        face_height = mouth_mid[:, 1] - eyes_mid[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            proxy_x = np.where(eye_distance > 0, (nose[:, 0] - centre[:, 0]) / eye_distance, 0.0)
            proxy_y = np.where(face_height != 0, (nose[:, 1] - eyes_mid[:, 1]) / face_height, 0.0)
        box = self.box.astype(np.float64)
        signals = np.column_stack([
            self.rotation, self.translation[:, 2] / 1000.0, proxy_x, proxy_y,
            (box[:, 0] + box[:, 2]) / 2 / max(self.width, 1), (box[:, 1] + box[:, 3]) / 2 / max(self.height, 1),
            (box[:, 2] - box[:, 0]) / max(self.width, 1)])
        signals = np.nan_to_num(signals, nan=0.0, posinf=0.0, neginf=0.0)
        return np.where(self.present[:, None], signals, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# head pose
def camera_matrix(width: int, height: int, focal: float | None = None) -> np.ndarray:
    """Pinhole intrinsics: focal length ``focal`` (default the image width) in pixels, centre principal point."""
    focal = float(width) if focal is None else float(focal)
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)


def rotation_to_euler(rotation: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rotation -> (pitch, yaw, roll) with ``R = Rx(pitch) Ry(yaw) Rz(roll)`` (OpenFace's convention)."""
    pitch = np.arctan2(-rotation[1, 2], rotation[2, 2])
    yaw = np.arcsin(np.clip(rotation[0, 2], -1.0, 1.0))
    roll = np.arctan2(-rotation[0, 1], rotation[0, 0])
    return np.array([pitch, yaw, roll])


def euler_to_rotation(angles: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) -> ``Rx(pitch) @ Ry(yaw) @ Rz(roll)``."""
    (s1, s2, s3), (c1, c2, c3) = np.sin(angles), np.cos(angles)
    return np.array([[c2 * c3, -c2 * s3, s2],
                     [c1 * s3 + c3 * s1 * s2, c1 * c3 - s1 * s2 * s3, -c2 * s1],
                     [s1 * s3 - c1 * c3 * s2, c3 * s1 + c1 * s2 * s3, c1 * c2]])


def _plausible(rvec: np.ndarray, tvec: np.ndarray) -> bool:
    rotation = cv2.Rodrigues(rvec)[0]
    # in front of the camera, and the face's front (-z of the head) pointing towards it
    return bool(tvec[2, 0] > 0 and rotation[2, 2] > 0 and np.isfinite(rvec).all() and np.isfinite(tvec).all())


def head_pose(landmarks: np.ndarray, camera: np.ndarray,
              previous: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rvec [3, 1], tvec [3, 1])`` of `FACE_MODEL_MM` seen at ``landmarks`` [5, 2], or None if no plausible pose.

    Starts from ``previous`` (the last frame's pose) when given, else from a frontal pose at the distance the eye
    distance implies; falls back to EPnP when the iterative solution is implausible."""
    points = np.ascontiguousarray(landmarks, dtype=np.float64).reshape(5, 1, 2)
    if previous is None:
        eye_distance = float(np.linalg.norm(landmarks[1] - landmarks[0]))
        if eye_distance <= 0:
            return None
        depth = camera[0, 0] * MODEL_EYE_DISTANCE_MM / eye_distance
        centre = landmarks.mean(0)
        tvec = np.array([[(centre[0] - camera[0, 2]) * depth / camera[0, 0]],
                         [(centre[1] - camera[1, 2]) * depth / camera[1, 1]], [depth]])
        rvec = np.zeros((3, 1))
    else:
        rvec, tvec = previous[0].copy(), previous[1].copy()
    ok, rvec, tvec = cv2.solvePnP(FACE_MODEL_MM, points, camera, None, rvec, tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if ok and _plausible(rvec, tvec):
        return rvec, tvec
    ok, rvec, tvec = cv2.solvePnP(FACE_MODEL_MM, points, camera, None, flags=cv2.SOLVEPNP_EPNP)
    return (rvec, tvec) if ok and _plausible(rvec, tvec) else None


# ----------------------------------------------------------------------------------------------------------------
# tracking
def _corners(grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Up to 30 trackable corner points inside the central 80 % of the face box, ``[N, 2]`` float32."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    left, top = int(max(0, x1 + 0.1 * width)), int(max(0, y1 + 0.1 * height))
    right, bottom = int(min(grey.shape[1], x2 - 0.1 * width)), int(min(grey.shape[0], y2 - 0.1 * height))
    if right - left < 8 or bottom - top < 8:
        return np.zeros((0, 2), np.float32)
    found = cv2.goodFeaturesToTrack(grey[top:bottom, left:right], _MAX_CORNERS, 0.01, max(3.0, width / 15))
    if found is None:
        return np.zeros((0, 2), np.float32)
    return found.reshape(-1, 2) + np.array([left, top], np.float32)


def _track_step(previous_grey: np.ndarray, grey: np.ndarray, corners: np.ndarray, landmarks: np.ndarray,
                box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Follow the face from ``previous_grey`` to ``grey``: returns (landmarks [5, 2], box, surviving corners) or None
    when the face is lost. Landmarks that pass the forward-backward check take their own flow; the others, and the
    box, move by the similarity transform fitted to all surviving points."""
    points = np.concatenate([landmarks, corners]).astype(np.float32)
    start = points.reshape(-1, 1, 2)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(previous_grey, grey, start, None, **_LK_PARAMETERS)
    back, back_status, _ = cv2.calcOpticalFlowPyrLK(grey, previous_grey, moved, None, **_LK_PARAMETERS)
    face_width = float(box[2] - box[0])
    error = np.linalg.norm((back - start).reshape(-1, 2), axis=1)
    good = (status.ravel() == 1) & (back_status.ravel() == 1) & (error < max(1.0, 0.02 * face_width))
    if good.sum() < _MIN_TRACKED_POINTS:
        return None
    source, target = points[good], moved.reshape(-1, 2)[good]
    transform, _ = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                               ransacReprojThreshold=max(1.0, 0.03 * face_width))
    if transform is None or not np.isfinite(transform).all():
        return None

    def apply(xy: np.ndarray) -> np.ndarray:
        return xy @ transform[:, :2].T + transform[:, 2]

    box_corners = apply(np.array([[box[0], box[1]], [box[2], box[3]]], np.float64))
    new_box = np.array([*box_corners.min(0), *box_corners.max(0)])
    centre = (new_box[:2] + new_box[2:]) / 2
    if not (0 <= centre[0] < grey.shape[1] and 0 <= centre[1] < grey.shape[0]):
        return None  # tracked out of the picture
    landmark_count = len(landmarks)
    new_landmarks = np.where(good[:landmark_count, None], moved.reshape(-1, 2)[:landmark_count],
                             apply(landmarks.astype(np.float64)))
    return new_landmarks.astype(np.float64), new_box, moved.reshape(-1, 2)[landmark_count:][good[landmark_count:]]


def _choose_face(faces: list, tracked_box: np.ndarray | None):
    """The detection overlapping the tracked face (IoU > 0.3), else the largest."""
    if not faces:
        return None
    boxes = np.stack([np.asarray(face.box, np.float64) for face in faces])
    if tracked_box is not None:
        overlap = box_iou(tracked_box, boxes)[0]
        if overlap.max() > 0.3:
            return faces[int(overlap.argmax())]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return faces[int(areas.argmax())]


def _reduced_frames(path: str | Path, detect_width: int, max_frames: int | None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    """(rgb, grey, scale) per frame, reduced to at most ``detect_width`` wide; scale = reduced / original."""
    for index, rgb in video_frames(path):
        if max_frames is not None and index >= max_frames:
            break
        scale = min(1.0, detect_width / rgb.shape[1]) if detect_width else 1.0
        if scale < 1.0:
            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        yield rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), scale


def make_detector(min_face_size: float = DEFAULT_MIN_FACE_SIZE, device: str | None = "cpu"):
    """The MTCNN our pipeline uses: the authors' weights and thresholds, the given smallest face (pixels of the
    reduced frame)."""
    from ..mtcnn import MTCNN

    return MTCNN(device=device, min_face_size=min_face_size)


def track_face(path: str | Path, detect_every: int = DEFAULT_DETECT_EVERY, detector: MTCNN | None = None,
               min_face_size: float = DEFAULT_MIN_FACE_SIZE, detect_width: int = DEFAULT_DETECT_WIDTH,
               focal: float | None = None, max_frames: int | None = None, keyframes_per_call: int = 4,
               progress: bool = False) -> FaceTrack:
    """Run the pipeline of the module docstring on a video file -> `FaceTrack` (one entry per decoded frame).

    Args:
        detect_every: run MTCNN on every k-th frame (1 = every frame, no tracking).
        detector: an `keenvision.mtcnn.MTCNN` (default: `make_detector(min_face_size)` on the CPU).
        min_face_size: smallest face MTCNN searches, pixels of the reduced frame.
        detect_width: frames wider than this are reduced to it for detection and tracking (0: never).
        focal: focal length in the video's pixels for the head pose (default the video's width).
        max_frames: stop after this many frames.
        keyframes_per_call: keyframes batched into one MTCNN call.
        progress: a bar over the frames on stderr (`keenvision.core.progress`).
    """
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    if keyframes_per_call < 1:
        raise ValueError(f"keyframes_per_call must be >= 1, got {keyframes_per_call}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file, not a video")
    info = video_info(path)
    detector = detector if detector is not None else make_detector(min_face_size)
    frames = _reduced_frames(path, detect_width, max_frames)
    rows: list[tuple] = []  # per frame: present, detected, box, landmarks, score (reduced-frame coordinates), scale
    state = {"grey": None, "points": np.zeros((0, 2), np.float32), "box": None, "landmarks": None, "score": 0.0}
    index = 0
    chunk_length = detect_every * keyframes_per_call
    total = min(info["frames"], max_frames or info["frames"]) if info["frames"] > 0 else None
    # leave=None: the final line stays unless the bar is nested under a folder bar (tqdm position > 0)
    bar = progress_bar(desc=path.name, unit="frame", total=total, enabled=progress, leave=None)
    while True:
        chunk = []
        for item in frames:
            chunk.append(item)
            if len(chunk) == chunk_length:
                break
        if not chunk:
            break
        keyframes = [k for k in range(len(chunk)) if (index + k) % detect_every == 0]
        detections = dict(zip(keyframes, detector.detect_arrays([chunk[k][0] for k in keyframes])))
        for offset, (_, grey, scale) in enumerate(chunk):
            rows.append(_advance(state, grey, detections.get(offset), offset in detections) + (scale,))
        index += len(chunk)
        bar.update(len(chunk))
    bar.close()
    if not rows:
        raise ImageReadError(f"{path}: no decodable frames")
    return _assemble(rows, info, focal, detect_every, str(path))


def _advance(state: dict, grey: np.ndarray, faces: list | None, keyframe: bool) -> tuple:
    """One frame of the detect/track loop; updates ``state``; returns (present, detected, box, landmarks, score)."""
    if keyframe:
        face = _choose_face(faces or [], state["box"])
        if face is None:
            state.update(box=None, landmarks=None, points=np.zeros((0, 2), np.float32))
        else:
            box, landmarks = np.asarray(face.box, np.float64), np.asarray(face.landmarks, np.float64)
            state.update(box=box, landmarks=landmarks, points=_corners(grey, box), score=float(face.score))
        state["grey"] = grey
        if state["box"] is None:
            return False, False, None, None, 0.0
        return True, True, state["box"], state["landmarks"], state["score"]
    if state["box"] is None:
        state["grey"] = grey
        return False, False, None, None, 0.0
    step = _track_step(state["grey"], grey, state["points"], state["landmarks"], state["box"])
    state["grey"] = grey
    if step is None:
        state.update(box=None, landmarks=None, points=np.zeros((0, 2), np.float32))
        return False, False, None, None, 0.0
    state["landmarks"], state["box"], state["points"] = step
    return True, False, state["box"], state["landmarks"], state["score"]


def _assemble(rows: list[tuple], info: dict, focal: float | None, detect_every: int, path: str) -> FaceTrack:
    count = len(rows)
    present = np.array([row[0] for row in rows], bool)
    detected = np.array([row[1] for row in rows], bool)
    box = np.zeros((count, 4), np.float32)
    landmarks = np.zeros((count, 5, 2), np.float32)
    score = np.zeros(count, np.float32)
    rotation = np.zeros((count, 3), np.float32)
    translation = np.zeros((count, 3), np.float32)
    width, height = int(info.get("width") or 0), int(info.get("height") or 0)
    camera = camera_matrix(width, height, focal)
    previous = None
    for frame, (is_present, _, frame_box, frame_landmarks, frame_score, scale) in enumerate(rows):
        if not is_present:
            previous = None
            continue
        box[frame] = np.asarray(frame_box) / scale
        landmarks[frame] = np.asarray(frame_landmarks) / scale
        score[frame] = frame_score
        pose = head_pose(landmarks[frame].astype(np.float64), camera, previous)
        if pose is None:  # no plausible pose: keep the face, with the pose of the last frame (or frontal)
            if previous is not None:
                pose = previous
            else:
                continue
        previous = pose
        rotation[frame] = rotation_to_euler(cv2.Rodrigues(pose[0])[0])
        translation[frame] = pose[1].ravel()
    return FaceTrack(present, detected, box, landmarks, score, rotation, translation, width, height,
                     float(info.get("fps") or 0.0), float(camera[0, 0]), detect_every, path)


# ----------------------------------------------------------------------------------------------------------------
# features
def _gaze_vectors(rotation: np.ndarray, eyes_3d: np.ndarray) -> np.ndarray:
    """Unit gaze vectors ``[T, 6]`` of both eyes: towards the point on the head's forward ray (from the eyes'
    midpoint) at the camera's distance, i.e. the head's direction plus vergence (see the module docstring)."""
    forward = np.stack([-euler_to_rotation(angles)[:, 2] for angles in rotation]) if len(rotation) else \
        np.zeros((0, 3))
    midpoint = eyes_3d.mean(1)
    target = midpoint + forward * np.linalg.norm(midpoint, axis=1, keepdims=True)
    vectors = target[:, None, :] - eyes_3d
    norms = np.linalg.norm(vectors, axis=2, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return vectors.reshape(-1, 6)


def video_openface_frames(track: FaceTrack) -> GazeHeadFrames:
    """The track as OpenFace quantities (an approximation; see the module docstring)."""
    present = track.present
    openface_focal = 500.0 * (track.width / 640 + track.height / 480) / 2 if track.width and track.height else \
        track.focal
    translation = track.translation.astype(np.float64) * [1.0, 1.0, openface_focal / max(track.focal, 1e-9)]
    rotations = [euler_to_rotation(angles) for angles in track.rotation.astype(np.float64)]
    eyes_3d = np.stack([FACE_MODEL_MM[:2] @ rotation.T + shift for rotation, shift in zip(rotations, translation)]) \
        if len(rotations) else np.zeros((0, 2, 3))
    gaze = _gaze_vectors(track.rotation.astype(np.float64), eyes_3d)
    landmarks = track.landmarks.astype(np.float64)
    eye_distance = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)
    frames = GazeHeadFrames(
        gaze=gaze, gaze_angle=gaze_angles(gaze),
        eye_location_2d=np.column_stack([landmarks[:, 0, 0], landmarks[:, 1, 0], landmarks[:, 0, 1],
                                         landmarks[:, 1, 1]]),
        eye_location_3d=np.column_stack([eyes_3d[:, 0, 0], eyes_3d[:, 1, 0], eyes_3d[:, 0, 1], eyes_3d[:, 1, 1],
                                         eyes_3d[:, 0, 2], eyes_3d[:, 1, 2]]),
        iris_chords=np.repeat(eye_distance[:, None], 10, axis=1),
        eye_depth=eyes_3d[:, :, 2].mean(1),
        pose=np.column_stack([translation, track.rotation.astype(np.float64)]),
        valid=present.copy(), fps=track.fps)
    for name in ("gaze", "gaze_angle", "eye_location_2d", "eye_location_3d", "iris_chords", "pose"):
        setattr(frames, name, np.where(present[:, None], getattr(frames, name), 0.0))
    frames.eye_depth = np.where(present, frames.eye_depth, 0.0)
    return frames


OPENFACE_APPROXIMATION_NOTE = ("video features mapped to the OpenFace layout: head pose from MTCNN's 5 points, "
                               "gaze = head direction plus vergence (no eye tracking), iris chords = eye distance; "
                               "an approximation of the features the model was trained on")


def video_openface_features(track: FaceTrack, n_segments: int = DEFAULT_SEGMENTS,
                            overlap: float = DEFAULT_OVERLAP) -> SegmentFeatures:
    """``[S, 60]`` features in the shipped models' OpenFace layout, approximated from the track."""
    return openface_segment_features(video_openface_frames(track), n_segments, overlap,
                                     [OPENFACE_APPROXIMATION_NOTE])


def video_segment_features(track: FaceTrack, n_segments: int = DEFAULT_SEGMENTS,
                           overlap: float = DEFAULT_OVERLAP) -> SegmentFeatures:
    """Our ``[S, 25]`` "keenvision-video" features (`VIDEO_FEATURE_NAMES`; see the module docstring)."""
    segmentation = segment_frames(len(track), n_segments, overlap)
    valid = track.present
    presence = presence_ratio(valid, segmentation)
    statistics = mean_std_features(track.signals(), valid, segmentation)
    gaze = video_openface_frames(track).gaze

    def deviation(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return masked_mean_std(values, mask)[1] ** 2  # the baseline's mean squared deviation from the mean

    gaze_deviation = per_segment(gaze, valid, segmentation, deviation)
    features = np.concatenate([presence[:, None], statistics, gaze_deviation], axis=1).astype(np.float32)
    notes = [f"{len(track)} frames, face in {int(valid.sum())}, MTCNN every {track.detect_every} frame(s)"]
    return SegmentFeatures(features, VIDEO_FEATURE_NAMES, VIDEO_FEATURE_SET, segmentation, presence, track.fps, notes)


def file_features(path: str | Path, n_segments: int = DEFAULT_SEGMENTS, overlap: float = DEFAULT_OVERLAP,
                  layout: str = "video", detector: MTCNN | None = None, progress: bool = False,
                  **video_options) -> SegmentFeatures:
    """Per-segment features of one input: an OpenFace CSV gives its 60-d ``openface`` features; a video our face
    pipeline's, ``layout`` ``"video"`` (our 25-d features) or ``"openface"`` (their 60-d approximation).
    ``video_options`` go to `track_face`. ValueError for anything else."""
    from ..core.io import is_video
    from .openface import openface_csv_features

    path = Path(path)
    if path.suffix.lower() == ".csv":
        return openface_csv_features(path, n_segments, overlap)
    if not is_video(path):
        raise ValueError(f"{path}: expected a video (.mp4, .mov, ...) or an OpenFace .csv file")
    track = track_face(path, detector=detector, progress=progress, **video_options)
    build = video_segment_features if layout == "video" else video_openface_features
    return build(track, n_segments, overlap)
