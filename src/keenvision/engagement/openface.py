"""Readers for OpenFace 2.x CSV files and OpenPose JSON keypoints, and the 60-d OpenFace per-segment features.

The 60-d layout (``feature_set = "openface"``) is the one of the EmotiW 2019 NPZ files the shipped models are trained
on. Their source repository (``littleZY/SML_EW_EmotiW2019``, ``utils.py``, ``get_gaze_features``) computes it per
segment from OpenFace 2.x FeatureExtraction columns; its order, which we reproduce (`OPENFACE_FEATURE_NAMES`):

    0-5    std of gaze_0_x..gaze_1_z                       (gaze direction unit vectors, camera coordinates)
    6-11   mean of gaze_0_x..gaze_1_z
    12-13  mean of gaze_angle_x, gaze_angle_y              (radians)
    14-15  std of gaze_angle_x, gaze_angle_y
    16-25  coefficient of variation (std / mean) of 10 iris chords: |eye_lmk_y_k - eye_lmk_y_(28-k)|, k = 9..13
           (eye 0) and |eye_lmk_y_(28+k) - eye_lmk_y_(56-k)| (eye 1): vertical iris extents, pixels
    26-29  mean of the eye centres in the image: eye 0 x, eye 1 x, eye 0 y, eye 1 y (mean of each eye's 28
           eye_lmk points, pixels)
    30-33  std of the same
    34-39  mean of the eye centres in 3D: eye 0 X, eye 1 X, eye 0 Y, eye 1 Y, eye 0 Z, eye 1 Z (mm)
    40-45  std of the same
    46-47  eye depth d = (eye_lmk_Z_8 + eye_lmk_Z_42) / 2: std(d) / mean(d) and min(d) / max(d)
    48-53  mean of pose_Tx, pose_Ty, pose_Tz (mm), pose_Rx, pose_Ry, pose_Rz (radians)
    54-59  std of the same

The shared training NPZ has no description key; we matched this reading against its numbers (e.g. dims 8 and 11 are
~ -0.97, the gaze z components; dims 12-13 equal atan2 of the mean gaze; dims 26-29 are pixel positions of two eyes;
dims 38-39 and 50 are depths of ~450-530 mm; the ten chord dims correlate 0.9-1.0 with each other).

Two CSV layouts are read (columns are found by name, so order and extra columns do not matter; header names are
stripped, so ``"frame, face_id, ..."`` with spaces after the commas works):

* ``"2.x"`` -- OpenFace 2.0.x-2.2 FeatureExtraction / FaceLandmarkVidMulti: ``face_id``, ``gaze_angle_*`` and the
  56 ``eye_lmk_*`` eye landmarks are present: the 60 features are computed exactly as the 2019 code.
* ``"legacy"`` -- files without ``eye_lmk_*`` columns (e.g. the shared ``OpenFace_Test.csv``: ``frame, timestamp,
  confidence, success, gaze_*, pose_*, x_0..Z_67, p_*, AU*``, the layout of OpenFace before its eye-landmark
  outputs). Then: gaze angles are derived exactly as OpenFace does (``atan2(g_x, -g_z)``, ``atan2(g_y, -g_z)`` of the
  mean of both eyes' gaze vectors); eye centres (2D, 3D) are the means of the six 68-point eyelid landmarks
  (36-41, 42-47) instead of the 28 eye-model points; the eye depth is the mean Z of those six points; and the iris
  chords, which need the iris points, are replaced by the eye's eyelid opening (mean of ``|y_37 - y_41|`` and
  ``|y_38 - y_40|``, resp. 43/47 and 44/46) for all five chords of that eye. So dims 16-47 are approximations; the
  chord dims are the weakest (they also follow blinks).

Rows with ``success`` 0, or with a non-finite value in a needed column, are missing faces: they are left out of
the statistics (the 2019 code used every row, including OpenFace's zero rows of failed frames;
``include_failed_frames=True`` reproduces that). With several faces per frame (``face_id``), the successful row of
highest confidence is used.

OpenPose: `read_openpose` reads ``people[].pose_keypoints_2d`` of BODY_25 or COCO JSON files (one file, or a folder
of per-frame ``*_keypoints.json``); `openpose_body_signals` turns them into per-frame upper-body features. No shipped
model takes them (the 2019 winners' 14-d OpenPose features are not documented); they are for training your own.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import (
    DEFAULT_OVERLAP,
    DEFAULT_SEGMENTS,
    SegmentFeatures,
    finite,
    masked_mean_std,
    mean_std_features,
    per_segment,
    presence_ratio,
    safe_ratio,
    segment_frames,
)

_AXES = ("x", "y", "z")
GAZE_COLUMNS = tuple(f"gaze_{eye}_{axis}" for eye in (0, 1) for axis in _AXES)
GAZE_ANGLE_COLUMNS = ("gaze_angle_x", "gaze_angle_y")
POSE_COLUMNS = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
EYE_LANDMARKS = 56  # OpenFace 2.x eye model: per eye 8 eyelid, 12 iris and 8 pupil points
EYE_LMK_COLUMNS = tuple(f"eye_lmk_{axis}_{k}" for axis in ("x", "y", "X", "Y", "Z") for k in range(EYE_LANDMARKS))
EYE_68 = (tuple(range(36, 42)), tuple(range(42, 48)))  # eyelid points of the 68-point scheme, image-left eye first
LEGACY_EYE_COLUMNS = tuple(f"{axis}_{k}" for axis in ("x", "y", "X", "Y", "Z") for k in EYE_68[0] + EYE_68[1])
# the 2019 code's iris chords: eye-model points k and 28 - k (k = 9..13) of eye 0, 28 + k and 56 - k of eye 1
IRIS_CHORD_PAIRS = tuple((k, 28 - k) for k in range(9, 14)) + tuple((28 + k, 56 - k) for k in range(9, 14))
EYE_DEPTH_POINTS = (8, 42)  # eye_lmk_Z of these two iris points, averaged: the 2019 code's eye distance

OPENFACE_FEATURE_NAMES: tuple[str, ...] = (
    *(f"{name}_std" for name in GAZE_COLUMNS), *(f"{name}_mean" for name in GAZE_COLUMNS),
    "gaze_angle_x_mean", "gaze_angle_y_mean", "gaze_angle_x_std", "gaze_angle_y_std",
    *(f"iris_chord_{eye}_{k}_cov" for eye in (0, 1) for k in range(5)),
    *(f"eye_{eye}_{axis}_mean" for axis in ("x", "y") for eye in (0, 1)),
    *(f"eye_{eye}_{axis}_std" for axis in ("x", "y") for eye in (0, 1)),
    *(f"eye_{eye}_{axis}_mean" for axis in ("X", "Y", "Z") for eye in (0, 1)),
    *(f"eye_{eye}_{axis}_std" for axis in ("X", "Y", "Z") for eye in (0, 1)),
    "eye_depth_cov", "eye_depth_min_max_ratio",
    *(f"{name}_mean" for name in POSE_COLUMNS), *(f"{name}_std" for name in POSE_COLUMNS),
)
OPENFACE_FEATURE_SET = "openface"
assert len(OPENFACE_FEATURE_NAMES) == 60


class OpenFaceFormatError(ValueError):
    """A file that is not a usable OpenFace CSV / OpenPose JSON; the message is one line naming the file."""


# ----------------------------------------------------------------------------------------------------------------
# per-frame quantities the 60 features are statistics of
@dataclass
class GazeHeadFrames:
    """Per-frame OpenFace quantities (T frames), from a CSV or approximated from our video pipeline.

    ``gaze`` [T, 6] gaze_0 xyz, gaze_1 xyz (unit vectors); ``gaze_angle`` [T, 2] (rad); ``eye_location_2d`` [T, 4]
    eye 0 x, eye 1 x, eye 0 y, eye 1 y (px); ``eye_location_3d`` [T, 6] X0, X1, Y0, Y1, Z0, Z1 (mm);
    ``iris_chords`` [T, 10] (px); ``eye_depth`` [T] (mm); ``pose`` [T, 6] Tx, Ty, Tz (mm), Rx, Ry, Rz (rad);
    ``valid`` [T] bool (a face was found); ``fps`` frames per second (0 if unknown)."""

    gaze: np.ndarray
    gaze_angle: np.ndarray
    eye_location_2d: np.ndarray
    eye_location_3d: np.ndarray
    iris_chords: np.ndarray
    eye_depth: np.ndarray
    pose: np.ndarray
    valid: np.ndarray
    fps: float = 0.0

    def __len__(self) -> int:
        return len(self.valid)


def gaze_angles(gaze: np.ndarray) -> np.ndarray:
    """OpenFace's gaze angles ``[T, 2]`` from both eyes' gaze vectors ``[T, 6]``: with g the mean of the two vectors,
    ``(atan2(g_x, -g_z), atan2(g_y, -g_z))``; (0, 0) when looking straight at the camera."""
    mean = (np.asarray(gaze[:, 0:3], np.float64) + np.asarray(gaze[:, 3:6], np.float64)) / 2
    return np.stack([np.arctan2(mean[:, 0], -mean[:, 2]), np.arctan2(mean[:, 1], -mean[:, 2])], axis=1)


def _segment_statistics(block: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The 60 features of one segment from its rows of the packed per-frame block (see `_pack`)."""
    gaze, angle, chords = block[:, 0:6], block[:, 6:8], block[:, 8:18]
    location_2d, location_3d, depth, pose = block[:, 18:22], block[:, 22:28], block[:, 28], block[:, 29:35]
    gaze_mean, gaze_std = masked_mean_std(gaze, valid)
    angle_mean, angle_std = masked_mean_std(angle, valid)
    chord_mean, chord_std = masked_mean_std(chords, valid)
    location_2d_mean, location_2d_std = masked_mean_std(location_2d, valid)
    location_3d_mean, location_3d_std = masked_mean_std(location_3d, valid)
    depth_mean, depth_std = masked_mean_std(depth[:, None], valid)
    chosen_depth = depth[valid]
    depth_ratio = safe_ratio(chosen_depth.min(), chosen_depth.max()) if len(chosen_depth) else np.zeros(())
    pose_mean, pose_std = masked_mean_std(pose, valid)
    return np.concatenate([gaze_std, gaze_mean, angle_mean, angle_std, safe_ratio(chord_std, chord_mean),
                           location_2d_mean, location_2d_std, location_3d_mean, location_3d_std,
                           safe_ratio(depth_std, depth_mean), np.atleast_1d(depth_ratio), pose_mean, pose_std])


def _pack(frames: GazeHeadFrames) -> np.ndarray:
    return np.concatenate([frames.gaze, frames.gaze_angle, frames.iris_chords, frames.eye_location_2d,
                           frames.eye_location_3d, frames.eye_depth[:, None], frames.pose], axis=1).astype(np.float64)


def openface_segment_features(frames: GazeHeadFrames, n_segments: int = DEFAULT_SEGMENTS,
                              overlap: float = DEFAULT_OVERLAP, notes: list[str] | None = None) -> SegmentFeatures:
    """The 60-d OpenFace features ``[S, 60]`` of `OPENFACE_FEATURE_NAMES` over the 2019 segmenting
    (`keenvision.engagement.features.segment_frames`); frames without a face are left out, segments without any
    get zeros."""
    segmentation = segment_frames(len(frames), n_segments, overlap)
    valid = np.asarray(frames.valid, bool)
    block = np.where(valid[:, None], finite(_pack(frames)), 0.0)
    features = per_segment(block, valid, segmentation, _segment_statistics)
    return SegmentFeatures(features, OPENFACE_FEATURE_NAMES, OPENFACE_FEATURE_SET, segmentation,
                           presence_ratio(valid, segmentation), frames.fps, list(notes or []))


# ----------------------------------------------------------------------------------------------------------------
# OpenFace CSV
@dataclass
class OpenFaceCsv:
    """An OpenFace CSV as read: one row per frame (the best face of each frame), ``columns`` name -> float64 [T]
    (non-finite values kept as NaN here; `GazeHeadFrames` marks such frames invalid), ``success`` [T] bool,
    ``layout`` ``"2.x"`` or ``"legacy"`` (see the module docstring)."""

    path: Path
    layout: str
    frames: np.ndarray  # [T] frame numbers
    timestamps: np.ndarray  # [T] seconds (zeros without a timestamp column)
    confidence: np.ndarray  # [T]
    success: np.ndarray  # [T] bool
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def fps(self) -> float:
        """Frame rate from the timestamps (median step), 0 when unknown."""
        steps = np.diff(self.timestamps)
        steps = steps[np.isfinite(steps) & (steps > 0)]
        return float(1.0 / np.median(steps)) if len(steps) else 0.0

    def block(self, names) -> np.ndarray:
        return np.stack([self.columns[name] for name in names], axis=1)


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # e.g. "-nan(ind)" from the Windows build, or an empty cell
        return float("nan")


def _missing_columns_message(path: Path, missing: list[str]) -> str:
    shown = ", ".join(missing[:16]) + (f" (and {len(missing) - 16} more)" if len(missing) > 16 else "")
    return f"{path}: not a usable OpenFace CSV: missing column(s) {shown}"


def read_openface_csv(path: str | Path) -> OpenFaceCsv:
    """Read an OpenFace 2.x (or legacy-layout) CSV; raises `OpenFaceFormatError` (one line) for an unreadable or
    empty file or missing required columns (named)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as error:
        raise OpenFaceFormatError(f"{path}: not a readable text CSV ({type(error).__name__})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise OpenFaceFormatError(f"{path}: empty file, expected an OpenFace CSV header")
    names = [name.strip() for name in header]
    index = {name: position for position, name in enumerate(names)}
    full = all(name in index for name in EYE_LMK_COLUMNS)
    layout = "2.x" if full else "legacy"
    required = ["success", *GAZE_COLUMNS, *POSE_COLUMNS] + list(EYE_LMK_COLUMNS if full else LEGACY_EYE_COLUMNS)
    missing = [name for name in required if name not in index]
    if missing:
        if any(name.startswith("eye_lmk_") for name in index):  # a 2.x file with some eye columns missing
            missing = [name for name in ["success", *GAZE_COLUMNS, *POSE_COLUMNS, *EYE_LMK_COLUMNS]
                       if name not in index]
        elif all(name not in index for name in LEGACY_EYE_COLUMNS):  # neither kind of eye landmarks
            missing = [name for name in missing if name not in LEGACY_EYE_COLUMNS]
            missing.append("eye landmarks (eye_lmk_x_0..eye_lmk_Z_55, or x_36..x_47, y_, X_, Y_, Z_)")
        raise OpenFaceFormatError(_missing_columns_message(path, missing))
    optional = [name for name in ("frame", "face_id", "timestamp", "confidence", *GAZE_ANGLE_COLUMNS) if name in index]
    wanted = list(dict.fromkeys(required + optional))
    positions = [index[name] for name in wanted]
    rows = []
    for line_number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(names):
            raise OpenFaceFormatError(f"{path}: line {line_number} has {len(row)} values, the header {len(names)}")
        rows.append([_parse_float(row[position]) for position in positions])
    if not rows:
        raise OpenFaceFormatError(f"{path}: no data rows after the header")
    table = np.asarray(rows, dtype=np.float64)
    columns = {name: table[:, k] for k, name in enumerate(wanted)}
    frame_numbers = columns["frame"] if "frame" in columns else np.arange(1, len(table) + 1, dtype=np.float64)
    success = np.nan_to_num(columns["success"]) > 0.5
    confidence = np.nan_to_num(columns["confidence"]) if "confidence" in columns else success.astype(np.float64)
    keep = _best_row_per_frame(frame_numbers, success, confidence) if "face_id" in columns else np.arange(len(table))
    timestamps = columns["timestamp"][keep] if "timestamp" in columns else np.zeros(len(keep))
    return OpenFaceCsv(path, layout, frame_numbers[keep].astype(np.int64), np.nan_to_num(timestamps),
                       confidence[keep], success[keep], {name: values[keep] for name, values in columns.items()})


def _best_row_per_frame(frames: np.ndarray, success: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Row indices, one per frame number (in frame order): the successful row of highest confidence."""
    order = np.lexsort((-confidence, ~success, frames))  # by frame, successful first, then confidence descending
    first = np.ones(len(order), bool)
    first[1:] = frames[order][1:] != frames[order][:-1]
    return order[first]


def openface_frames(table: OpenFaceCsv, include_failed_frames: bool = False) -> GazeHeadFrames:
    """Per-frame quantities of the 60 features from a read CSV (exact for the 2.x layout, partly approximated for
    the legacy one, see the module docstring)."""
    gaze = table.block(GAZE_COLUMNS)
    pose = table.block(POSE_COLUMNS)
    if all(name in table.columns for name in GAZE_ANGLE_COLUMNS):
        angle = table.block(GAZE_ANGLE_COLUMNS)
    else:
        angle = gaze_angles(gaze)
    if table.layout == "2.x":
        eye = {axis: table.block([f"eye_lmk_{axis}_{k}" for k in range(EYE_LANDMARKS)]) for axis in "xyXYZ"}
        halves = (slice(0, 28), slice(28, 56))
        location_2d = np.stack([eye[axis][:, half].mean(1) for axis in "xy" for half in halves], 1)
        location_3d = np.stack([eye[axis][:, half].mean(1) for axis in "XYZ" for half in halves], 1)
        chords = np.stack([np.abs(eye["y"][:, a] - eye["y"][:, b]) for a, b in IRIS_CHORD_PAIRS], 1)
        depth = 0.5 * (eye["Z"][:, EYE_DEPTH_POINTS[0]] + eye["Z"][:, EYE_DEPTH_POINTS[1]])
    else:
        def eye_mean(axis: str, points: tuple[int, ...]) -> np.ndarray:
            return table.block([f"{axis}_{k}" for k in points]).mean(1)

        location_2d = np.stack([eye_mean(axis, points) for axis in "xy" for points in EYE_68], 1)
        location_3d = np.stack([eye_mean(axis, points) for axis in "XYZ" for points in EYE_68], 1)

        def opening(upper: tuple[int, int], lower: tuple[int, int]) -> np.ndarray:
            """Mean vertical distance of two upper-lid points and the lower-lid points below them (px)."""
            y = table.columns
            return 0.5 * sum(np.abs(y[f"y_{top}"] - y[f"y_{bottom}"]) for top, bottom in zip(upper, lower))

        openings = (opening((37, 38), (41, 40)), opening((43, 44), (47, 46)))
        chords = np.stack([openings[eye] for eye in (0, 1) for _ in range(5)], 1)
        depth = 0.5 * (location_3d[:, 4] + location_3d[:, 5])
    frames = GazeHeadFrames(gaze, angle, location_2d, location_3d, chords, depth, pose, table.success.copy(),
                            table.fps)
    packed = _pack(frames)
    usable = np.isfinite(packed).all(1)
    frames.valid = usable if include_failed_frames else (table.success & usable)
    return frames


def openface_csv_features(path: str | Path, n_segments: int = DEFAULT_SEGMENTS, overlap: float = DEFAULT_OVERLAP,
                          include_failed_frames: bool = False) -> SegmentFeatures:
    """Read an OpenFace CSV and return its 60-d per-segment features (``[S, 60]``, the shipped models' layout)."""
    table = read_openface_csv(path)
    notes = [f"OpenFace CSV, {table.layout} layout, {len(table)} frames, "
             f"{int(table.success.sum())} with a tracked face"]
    if table.layout == "legacy":
        notes.append("no eye_lmk columns: features 16-47 (iris chords, eye centres, eye depth) approximated from "
                     "the 68 face landmarks")
    return openface_segment_features(openface_frames(table, include_failed_frames), n_segments, overlap, notes)


# ----------------------------------------------------------------------------------------------------------------
# OpenPose JSON
BODY_25_PARTS = {"nose": 0, "neck": 1, "right_shoulder": 2, "right_wrist": 4, "left_shoulder": 5, "left_wrist": 7,
                 "right_eye": 15, "left_eye": 16, "right_ear": 17, "left_ear": 18}
COCO_PARTS = {"nose": 0, "neck": 1, "right_shoulder": 2, "right_wrist": 4, "left_shoulder": 5, "left_wrist": 7,
              "right_eye": 14, "left_eye": 15, "right_ear": 16, "left_ear": 17}
OPENPOSE_LAYOUTS = {25: ("BODY_25", BODY_25_PARTS), 18: ("COCO", COCO_PARTS)}
BODY_SIGNAL_NAMES = ("head_x", "head_y", "shoulder_tilt", "head_roll", "head_yaw_proxy", "right_wrist_x",
                     "right_wrist_y", "left_wrist_x", "left_wrist_y", "wrists_visible", "shoulder_width_px",
                     "upper_body_confidence")
OPENPOSE_FEATURE_SET = "openpose-body"


@dataclass
class OpenPoseFrames:
    """``keypoints`` float64 [T, K, 3] (x, y, confidence; zeros where OpenPose found nobody), ``layout`` "BODY_25"
    or "COCO", ``present`` [T] bool (a person was found)."""

    keypoints: np.ndarray
    layout: str
    present: np.ndarray
    files: list[Path]


def _openpose_people(path: Path) -> list[np.ndarray]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OpenFaceFormatError(f"{path}: not a readable OpenPose JSON file ({type(error).__name__})") from None
    if not isinstance(record, dict) or not isinstance(record.get("people"), list):
        raise OpenFaceFormatError(f"{path}: not OpenPose keypoints: no 'people' list")
    people = []
    for person in record["people"]:
        values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if values is None:
            raise OpenFaceFormatError(f"{path}: a person without 'pose_keypoints_2d'")
        if len(values) == 0:
            continue
        if len(values) % 3 or len(values) // 3 not in OPENPOSE_LAYOUTS:
            raise OpenFaceFormatError(f"{path}: pose_keypoints_2d has {len(values)} values; expected 75 (BODY_25) "
                                      "or 54 (COCO)")
        people.append(finite(np.asarray(values, np.float64)).reshape(-1, 3))
    return people


def read_openpose(path: str | Path) -> OpenPoseFrames:
    """OpenPose ``--write_json`` output: one ``*_keypoints.json`` file or a folder of them (sorted by name, one
    per frame). Of several people in a frame, the one with the highest summed upper-body confidence is kept."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
        if not files:
            raise OpenFaceFormatError(f"{path}: no .json files in the folder")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    per_frame = [_openpose_people(file) for file in files]
    counts = {len(person) for people in per_frame for person in people}
    if len(counts) > 1:
        raise OpenFaceFormatError(f"{path}: frames mix keypoint layouts ({sorted(counts)} keypoints)")
    count = counts.pop() if counts else 25
    layout, parts = OPENPOSE_LAYOUTS[count]
    upper_body = list(parts.values())
    keypoints = np.zeros((len(files), count, 3), np.float64)
    present = np.zeros(len(files), bool)
    for frame, people in enumerate(per_frame):
        if people:
            keypoints[frame] = max(people, key=lambda person: person[upper_body, 2].sum())
            present[frame] = True
    return OpenPoseFrames(keypoints, layout, present, files)


def openpose_body_signals(frames: OpenPoseFrames) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame upper-body signals ``[T, 12]`` (`BODY_SIGNAL_NAMES`) and validity ``[T]``.

    Positions are relative to the neck in shoulder widths (scale-free): the head (nose) offset, both wrists (0 when
    not detected) and the share of wrists visible; angles in radians: shoulder line tilt and eye line (head roll);
    head yaw proxy = nose x offset from the eyes' midpoint in eye distances; the shoulder width in pixels (a
    distance-to-camera proxy); the mean upper-body keypoint confidence. A frame is valid when a person with neck,
    nose and both shoulders was found; other missing parts give 0 for the signals that need them."""
    _, parts = OPENPOSE_LAYOUTS[frames.keypoints.shape[1]]
    points = frames.keypoints

    def part(name: str) -> tuple[np.ndarray, np.ndarray]:
        keypoint = points[:, parts[name]]
        return keypoint[:, :2], keypoint[:, 2] > 0

    nose, has_nose = part("nose")
    neck, has_neck = part("neck")
    right_shoulder, has_right_shoulder = part("right_shoulder")
    left_shoulder, has_left_shoulder = part("left_shoulder")
    right_wrist, has_right_wrist = part("right_wrist")
    left_wrist, has_left_wrist = part("left_wrist")
    right_eye, has_right_eye = part("right_eye")
    left_eye, has_left_eye = part("left_eye")
    shoulder_line = left_shoulder - right_shoulder
    unit = np.linalg.norm(shoulder_line, axis=1)
    valid = frames.present & has_nose & has_neck & has_right_shoulder & has_left_shoulder & (unit > 0)
    eye_line = left_eye - right_eye
    eye_distance = np.linalg.norm(eye_line, axis=1)
    has_eyes = has_right_eye & has_left_eye & (eye_distance > 0)
    head = safe_ratio(nose - neck, unit[:, None])
    wrists = [np.where(has[:, None], safe_ratio(wrist - neck, unit[:, None]), 0.0)
              for wrist, has in ((right_wrist, has_right_wrist), (left_wrist, has_left_wrist))]
    signals = np.column_stack([
        head,
        np.arctan2(shoulder_line[:, 1], shoulder_line[:, 0]),
        np.where(has_eyes, np.arctan2(eye_line[:, 1], eye_line[:, 0]), 0.0),
        np.where(has_eyes, safe_ratio(nose[:, 0] - (left_eye[:, 0] + right_eye[:, 0]) / 2, eye_distance), 0.0),
        wrists[0], wrists[1],
        (has_right_wrist.astype(np.float64) + has_left_wrist) / 2,
        unit,
        points[:, list(parts.values()), 2].mean(1),
    ])
    return np.where(valid[:, None], finite(signals), 0.0), valid


def openpose_segment_features(path: str | Path, n_segments: int = DEFAULT_SEGMENTS,
                              overlap: float = DEFAULT_OVERLAP, fps: float = 0.0) -> SegmentFeatures:
    """Per-segment body features ``[S, 25]``: presence ratio, then the mean and std of each body signal."""
    frames = read_openpose(path)
    signals, valid = openpose_body_signals(frames)
    segmentation = segment_frames(len(valid), n_segments, overlap)
    presence = presence_ratio(valid, segmentation)
    features = np.concatenate([presence[:, None], mean_std_features(signals, valid, segmentation)], axis=1)
    names = ("presence", *(f"{n}_mean" for n in BODY_SIGNAL_NAMES), *(f"{n}_std" for n in BODY_SIGNAL_NAMES))
    return SegmentFeatures(features.astype(np.float32), names, OPENPOSE_FEATURE_SET, segmentation, presence, fps,
                           [f"OpenPose {frames.layout}, {len(valid)} frames, {int(valid.sum())} with a person"])
