"""OpenFace CSV reader and the 60-d features on the real OpenFace_Test.csv (legacy layout, no eye landmarks) and on
a 2.2-layout file derived from it (face_id, gaze angles, 56 eye landmarks, ", " separators, other column order);
OpenPose JSON in the official format."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from keenvision.engagement.openface import (
    BODY_SIGNAL_NAMES,
    OPENFACE_FEATURE_NAMES,
    OpenFaceFormatError,
    openface_csv_features,
    openpose_body_signals,
    openpose_segment_features,
    read_openface_csv,
    read_openpose,
)

NAME = {name: index for index, name in enumerate(OPENFACE_FEATURE_NAMES)}


@pytest.fixture(scope="module")
def legacy_csv(data_dir):
    path = data_dir / "video_samples" / "OpenFace_Test.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def read_rows(path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return [name.strip() for name in rows[0]], np.array([[float(v) for v in row] for row in rows[1:]])


def write_rows(path, header: list[str], rows, separator: str = ", ") -> None:
    lines = [separator.join(header)] + [separator.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def eye_radius(frame: np.ndarray, eye: int) -> np.ndarray:
    return 4.0 + 0.5 * np.sin(frame / 5.0) + 0.2 * eye


def derive_2x_layout(legacy_path, out_path) -> dict:
    """An OpenFace 2.2-style file from the legacy one: face_id, gaze_angle_x/y (distinct values, so we can see they
    are read), eye_lmk_* rings around each eye's centre (iris radius r(t) known), columns reordered, ", " separated.
    Returns the synthetic truths."""
    header, table = read_rows(legacy_path)
    column = {name: table[:, i] for i, name in enumerate(header)}
    frame = column["frame"]
    eye_lmk = {axis: np.zeros((len(table), 56)) for axis in "xyXYZ"}
    centres, depths = [], []
    for eye, points in enumerate((range(36, 42), range(42, 48))):
        cx = np.mean([column[f"x_{k}"] for k in points], 0)
        cy = np.mean([column[f"y_{k}"] for k in points], 0)
        c3 = {axis: np.mean([column[f"{axis}_{k}"] for k in points], 0) for axis in "XYZ"}
        radius = eye_radius(frame, eye)
        for local in range(28):
            if 8 <= local <= 19:  # iris ring, 12 points
                angle, scale = 2 * np.pi * (local - 8) / 12, 1.0
            elif local < 8:  # eyelid ring
                angle, scale = 2 * np.pi * local / 8, 2.0
            else:  # pupil ring
                angle, scale = 2 * np.pi * (local - 20) / 8, 0.3
            index = 28 * eye + local
            eye_lmk["x"][:, index] = cx + scale * radius * np.cos(angle)
            eye_lmk["y"][:, index] = cy + scale * radius * np.sin(angle)
            eye_lmk["X"][:, index] = c3["X"] + 0.1 * scale * radius * np.cos(angle)
            eye_lmk["Y"][:, index] = c3["Y"] + 0.1 * scale * radius * np.sin(angle)
            eye_lmk["Z"][:, index] = c3["Z"]
        centres.append((cx, cy))
        depths.append(c3["Z"])
    gaze_angle = np.stack([0.5 + 0.001 * frame, -0.25 + 0.002 * frame], 1)
    front = ["frame", "face_id", "timestamp", "confidence", "success"]
    gaze = [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"]
    rest = [name for name in header if name not in front and name not in gaze]
    new_header = ["frame", "face_id", "confidence", "timestamp", "success", *gaze, "gaze_angle_x", "gaze_angle_y",
                  *(f"eye_lmk_{axis}_{k}" for axis in "xyXYZ" for k in range(56)), *rest]
    blocks = [column["frame"][:, None], np.zeros((len(table), 1)), column["confidence"][:, None],
              column["timestamp"][:, None], column["success"][:, None], np.stack([column[g] for g in gaze], 1),
              gaze_angle, *(eye_lmk[axis] for axis in "xyXYZ"), np.stack([column[r] for r in rest], 1)]
    write_rows(out_path, new_header, np.concatenate(blocks, 1))
    return {"centres": centres, "depths": depths, "gaze_angle": gaze_angle, "frame": frame}


def test_legacy_csv_features(legacy_csv):
    table = read_openface_csv(legacy_csv)
    assert table.layout == "legacy" and len(table) == 100 and table.success.all()
    result = openface_csv_features(legacy_csv)
    assert result.features.shape == (15, 60) and result.features.dtype == np.float32
    assert np.isfinite(result.features).all() and result.feature_set == "openface"
    assert result.presence.tolist() == [1.0] * 15
    assert any("approximated" in note for note in result.notes)
    # exact dims: gaze and pose statistics of segment 0 (rows 0..11 of 100 frames)
    header, rows = read_rows(legacy_csv)
    first = rows[:12]
    gaze_0_x = first[:, header.index("gaze_0_x")]
    assert result.segmentation.bounds[0].tolist() == [0, 12]
    assert result.features[0, NAME["gaze_0_x_mean"]] == pytest.approx(gaze_0_x.mean(), abs=1e-6)
    assert result.features[0, NAME["gaze_0_x_std"]] == pytest.approx(gaze_0_x.std(), abs=1e-6)
    assert result.features[0, NAME["pose_Tz_mean"]] == pytest.approx(first[:, header.index("pose_Tz")].mean(),
                                                                     rel=1e-6)
    # gaze angles derived as OpenFace does: atan2 of the mean of both eyes' vectors
    g = (first[:, [header.index(f"gaze_0_{a}") for a in "xyz"]] + first[:, [header.index(f"gaze_1_{a}")
                                                                            for a in "xyz"]]) / 2
    assert result.features[0, NAME["gaze_angle_y_mean"]] == pytest.approx(np.arctan2(g[:, 1], -g[:, 2]).mean(),
                                                                          abs=1e-6)
    # plausible ranges of the approximated eye dims: eyes inside the 640x360 frame, ~0.6 m from the camera
    assert 0 < result.features[0, NAME["eye_0_x_mean"]] < result.features[0, NAME["eye_1_x_mean"]] < 640
    assert 300 < result.features[0, NAME["eye_0_Z_mean"]] < 1000
    assert 0.9 < result.features[0, NAME["eye_depth_min_max_ratio"]] <= 1.0


def test_2x_layout_is_read_exactly(legacy_csv, tmp_path):
    path = tmp_path / "openface_2_2.csv"
    truth = derive_2x_layout(legacy_csv, path)
    assert path.read_text().startswith("frame, face_id, confidence, timestamp, success, gaze_0_x")
    table = read_openface_csv(path)
    assert table.layout == "2.x" and len(table) == 100
    result = openface_csv_features(path)
    assert result.features.shape == (15, 60) and np.isfinite(result.features).all()
    assert not any("approximated" in note for note in result.notes)
    rows = slice(0, 12)  # segment 0
    assert result.features[0, NAME["gaze_angle_x_mean"]] == pytest.approx(truth["gaze_angle"][rows, 0].mean(),
                                                                          abs=1e-6)
    for eye in (0, 1):
        radius = eye_radius(truth["frame"][rows], eye)
        cov = radius.std() / radius.mean()
        for chord in range(5):
            assert result.features[0, NAME[f"iris_chord_{eye}_{chord}_cov"]] == pytest.approx(cov, rel=1e-4)
        cx, cy = truth["centres"][eye]
        assert result.features[0, NAME[f"eye_{eye}_x_mean"]] == pytest.approx(cx[rows].mean(), abs=1e-3)
        assert result.features[0, NAME[f"eye_{eye}_y_std"]] == pytest.approx(cy[rows].std(), abs=1e-3)
    depth = (truth["depths"][0][rows] + truth["depths"][1][rows]) / 2
    assert result.features[0, NAME["eye_depth_min_max_ratio"]] == pytest.approx(depth.min() / depth.max(), rel=1e-5)
    assert result.features[0, NAME["eye_depth_cov"]] == pytest.approx(depth.std() / depth.mean(), rel=1e-4)


def test_failed_and_nan_rows_are_missing_faces(legacy_csv, tmp_path):
    header, rows = read_rows(legacy_csv)
    rows = rows.copy()
    rows[0:12, header.index("success")] = 0  # segment 0 entirely, half of segment 1 ([6, 18))
    rows[0:12, header.index("pose_Tx")] = -861269.7  # what failed frames can hold
    path = tmp_path / "failed.csv"
    write_rows(path, header, rows, separator=",")
    lines = path.read_text().splitlines()
    cells = lines[50].split(",")
    cells[header.index("gaze_0_x")] = "-nan(ind)"  # Windows builds write this; row 49 becomes a missing face
    lines[50] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    result = openface_csv_features(path)
    assert np.isfinite(result.features).all()
    assert result.presence[0] == 0 and np.all(result.features[0] == 0)
    assert result.presence[1] == pytest.approx(0.5)
    assert abs(result.features[1, NAME["pose_Tx_mean"]]) < 100  # the failed rows' garbage is not averaged in
    segment_with_nan = [i for i, idx in enumerate(result.segmentation.frame_indices) if 49 in idx]
    assert all(result.presence[i] < 1 for i in segment_with_nan)
    kept = openface_csv_features(path, include_failed_frames=True)  # the 2019 code's choice: every row
    assert kept.presence[0] == 1 and kept.features[0, NAME["pose_Tx_mean"]] < -1000


def test_several_faces_per_frame_keep_the_best(legacy_csv, tmp_path):
    path = tmp_path / "openface_2_2.csv"
    derive_2x_layout(legacy_csv, path)
    lines = path.read_text().splitlines()
    extra = []
    for line in lines[1:]:
        cells = line.split(", ")
        cells[1], cells[2] = "1", "0.1"  # a second face, lower confidence, far away
        extra.append(", ".join(cells))
    path.write_text("\n".join([lines[0], *[x for pair in zip(lines[1:], extra) for x in pair]]) + "\n")
    table = read_openface_csv(path)
    assert len(table) == 100 and table.frames.tolist() == list(range(1, 101))
    assert np.all(table.columns["face_id"] == 0)


def test_missing_columns_error_names_them(legacy_csv, tmp_path):
    header, rows = read_rows(legacy_csv)
    keep = [i for i, name in enumerate(header) if name not in ("gaze_0_x", "pose_Rx")]
    path = tmp_path / "missing.csv"
    write_rows(path, [header[i] for i in keep], rows[:, keep])
    with pytest.raises(OpenFaceFormatError) as caught:
        read_openface_csv(path)
    message = str(caught.value)
    assert "\n" not in message and "gaze_0_x" in message and "pose_Rx" in message and str(path) in message
    only_pose = tmp_path / "pose_only.csv"
    write_rows(only_pose, ["frame", "success", "pose_Tx"], [[1, 1, 0.0]])
    with pytest.raises(OpenFaceFormatError, match="eye landmarks"):
        read_openface_csv(only_pose)


@pytest.mark.parametrize("content", [b"", b"frame, success\n", b"\x00\xff\xfe garbage \x89PNG"])
def test_unusable_files(tmp_path, content):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(OpenFaceFormatError) as caught:
        read_openface_csv(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(FileNotFoundError):
        read_openface_csv(tmp_path / "absent.csv")


def body_25_person(shift: float = 0.0, confidence: float = 0.9) -> list[float]:
    """A seated person facing the camera in BODY_25 order (x, y, c per keypoint; legs undetected)."""
    points = np.zeros((25, 3))
    parts = {0: (320, 140), 1: (320, 230), 2: (250, 235), 3: (230, 320), 4: (290, 300), 5: (390, 235),
             6: (410, 320), 7: (350, 300), 15: (305, 125), 16: (335, 125), 17: (290, 135), 18: (350, 135)}
    for index, (x, y) in parts.items():
        points[index] = (x + shift, y, confidence)
    return points.ravel().round(3).tolist()


def test_openpose_body_25_folder(tmp_path):
    frames = [[body_25_person()], [body_25_person(40, 0.3), body_25_person(0, 0.8)], []]
    for index, people in enumerate(frames):
        record = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": p, "face_keypoints_2d": [],
                                              "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
                                              "pose_keypoints_3d": [], "face_keypoints_3d": [],
                                              "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}
                                             for p in people]}
        (tmp_path / f"video_{index:012d}_keypoints.json").write_text(json.dumps(record))
    read = read_openpose(tmp_path)
    assert read.layout == "BODY_25" and read.present.tolist() == [True, True, False]
    assert read.keypoints[1, 0, 0] == pytest.approx(320)  # the more confident person of frame 1
    signals, valid = openpose_body_signals(read)
    named = dict(zip(BODY_SIGNAL_NAMES, signals[0]))
    assert valid.tolist() == [True, True, False] and np.all(signals[2] == 0)
    assert named["head_y"] == pytest.approx(-90 / 140) and named["head_x"] == pytest.approx(0)
    assert named["shoulder_tilt"] == pytest.approx(0) and named["wrists_visible"] == 1
    assert named["shoulder_width_px"] == pytest.approx(140)
    features = openpose_segment_features(tmp_path, n_segments=15)
    assert features.features.shape == (15, 25) and np.isfinite(features.features).all()
    assert features.presence.min() == 0 and features.presence.max() == 1


def test_openpose_coco_and_errors(tmp_path):
    coco = np.array(body_25_person()).reshape(25, 3)[[0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]
    coco[8:14] = 0  # hips, knees, ankles not seen
    path = tmp_path / "coco_keypoints.json"
    path.write_text(json.dumps({"version": 1.0, "people": [{"pose_keypoints_2d": coco.ravel().tolist()}]}))
    read = read_openpose(path)
    assert read.layout == "COCO" and read.present.tolist() == [True]
    signals, valid = openpose_body_signals(read)
    assert valid.all() and dict(zip(BODY_SIGNAL_NAMES, signals[0]))["head_y"] == pytest.approx(-90 / 140)
    bad = tmp_path / "bad_keypoints.json"
    bad.write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 30}]}))
    with pytest.raises(OpenFaceFormatError, match="75"):
        read_openpose(bad)
    bad.write_text("{not json")
    with pytest.raises(OpenFaceFormatError, match="not a readable"):
        read_openpose(bad)
    bad.write_text(json.dumps({"version": 1.3}))
    with pytest.raises(OpenFaceFormatError, match="people"):
        read_openpose(bad)
