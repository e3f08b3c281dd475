"""Our video pipeline on the real clips: landmarks and head pose in plausible ranges on a face, presence 0 and no NaN
without one, presence in between for a face that leaves; tracking close to per-frame detection; corrupt, empty and
short videos; the head-pose solver on exact projections."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from keenvision.core.io import ImageReadError, video_frames
from keenvision.engagement.video import (
    FACE_MODEL_MM,
    VIDEO_FEATURE_NAMES,
    camera_matrix,
    euler_to_rotation,
    head_pose,
    make_detector,
    rotation_to_euler,
    track_face,
    video_openface_features,
    video_segment_features,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def face_detector():
    return make_detector()


@pytest.fixture(scope="module")
def samples(data_dir):
    folder = data_dir / "video_samples"
    if not (folder / "single_face.mp4").is_file():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture(scope="module")
def single_face(samples, face_detector):
    return track_face(samples / "single_face.mp4", detector=face_detector)


def test_single_face_landmarks_and_pose(single_face):
    track = single_face
    assert len(track) == 72 and (track.width, track.height) == (640, 360)
    assert track.present.mean() >= 0.95
    assert track.detected.sum() == 15  # frames 0, 5, ..., 70
    present = track.present
    landmarks = track.landmarks[present]
    assert np.isfinite(landmarks).all()
    assert landmarks[..., 0].min() > 0 and landmarks[..., 0].max() < 640
    assert landmarks[..., 1].min() > 0 and landmarks[..., 1].max() < 360
    eyes_y, nose_y, mouth_y = landmarks[:, :2, 1].mean(1), landmarks[:, 2, 1], landmarks[:, 3:, 1].mean(1)
    assert np.all(eyes_y < nose_y) and np.all(nose_y < mouth_y)
    assert np.all(landmarks[:, 0, 0] < landmarks[:, 1, 0])  # image-left eye first
    pitch, yaw, roll = np.degrees(track.rotation[present]).T
    # a man facing the camera; pitch in OpenFace's frame, where eye-level faces read about +20 degrees
    assert np.abs(yaw).max() < 15 and np.abs(roll).max() < 10
    assert 0 < pitch.min() and pitch.max() < 45
    distance = track.translation[present, 2]
    assert 300 < distance.min() and distance.max() < 1200  # mm, a webcam distance


def test_tracking_stays_close_to_per_frame_detection(samples, face_detector, single_face):
    reference = track_face(samples / "single_face.mp4", detect_every=1, detector=face_detector)
    assert reference.detected.all()
    both = reference.present & single_face.present
    eye_distance = np.linalg.norm(reference.landmarks[both, 1] - reference.landmarks[both, 0], axis=1)
    error = np.linalg.norm(single_face.landmarks[both] - reference.landmarks[both], axis=2).mean(1) / eye_distance
    assert error.mean() < 0.05
    assert np.degrees(np.abs(single_face.rotation[both] - reference.rotation[both])).mean() < 4


def test_features_of_a_face(single_face):
    ours = video_segment_features(single_face, n_segments=15)
    assert ours.features.shape == (15, len(VIDEO_FEATURE_NAMES)) == (15, 25)
    assert ours.feature_set == "keenvision-video" and np.isfinite(ours.features).all()
    assert ours.presence.min() >= 0.9
    named = dict(zip(VIDEO_FEATURE_NAMES, ours.features[0]))
    assert 0.3 < named["head_distance_m_mean"] < 1.2 and 0.1 < named["face_width_mean"] < 0.5
    openface = video_openface_features(single_face, n_segments=21)
    assert openface.features.shape == (21, 60) and np.isfinite(openface.features).all()
    assert any("approximation" in note for note in openface.notes)
    assert np.all(openface.features[:, 8] < -0.8)  # gaze_0_z mean: looking towards the camera


def test_no_face(samples, face_detector):
    track = track_face(samples / "no_face.mp4", detector=face_detector)
    assert len(track) > 50 and track.present.sum() == 0
    for features in (video_segment_features(track), video_openface_features(track)):
        assert np.isfinite(features.features).all() and np.all(features.features == 0)
        assert np.all(features.presence == 0)


def test_face_then_no_face(samples, face_detector):
    track = track_face(samples / "face_noface.mov", detector=face_detector)
    assert 0.2 < track.present.mean() < 0.8
    features = video_segment_features(track)
    assert features.presence[0] == 1 and features.presence[-1] == 0
    assert np.isfinite(features.features).all()


def test_bad_video_files(tmp_path, samples, face_detector):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    with pytest.raises(ImageReadError, match="cannot open as a video"):
        track_face(garbage, detector=face_detector)
    truncated = tmp_path / "truncated.mp4"  # the index (moov) is at the end: a cut file does not open
    truncated.write_bytes((samples / "single_face.mp4").read_bytes()[:60_000])
    with pytest.raises(ImageReadError, match="truncated.mp4"):
        track_face(truncated, detector=face_detector)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        track_face(empty, detector=face_detector)
    with pytest.raises(FileNotFoundError):
        track_face(tmp_path / "absent.mp4", detector=face_detector)
    with pytest.raises(ValueError, match="detect_every"):
        track_face(samples / "single_face.mp4", detect_every=0, detector=face_detector)


def test_video_shorter_than_the_segments(tmp_path, samples, face_detector):
    path = tmp_path / "five_frames.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 360))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write mp4v here")
    for index, rgb in video_frames(samples / "single_face.mp4"):
        if index >= 5:
            break
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    track = track_face(path, detector=face_detector)
    assert len(track) == 5 and track.present.all()
    features = video_segment_features(track, n_segments=15)
    assert features.segmentation.repeated_frames and features.features.shape == (15, 25)
    assert np.isfinite(features.features).all() and np.all(features.presence == 1)
    assert features.segment_seconds is not None and features.segment_seconds.max() <= 5 / 30 + 1e-9


def test_detect_width_reduces_large_frames(tmp_path, samples, face_detector):
    copy = tmp_path / "face.mov"
    shutil.copy(samples / "face_noface.mov", copy)
    reduced = track_face(copy, detector=face_detector, max_frames=10, detect_width=480)
    assert (reduced.width, reduced.height) == (960, 540) and reduced.present.all()
    full = track_face(copy, detector=face_detector, max_frames=10, detect_width=0)
    # coordinates are the video's pixels either way
    assert np.abs(reduced.landmarks - full.landmarks).mean() < 0.05 * np.linalg.norm(
        full.landmarks[0, 1] - full.landmarks[0, 0])


@pytest.mark.parametrize("angles_degrees", [(0, 0, 0), (20, -15, 5), (-10, 30, -12), (35, 10, 0)])
def test_head_pose_recovers_exact_projections(angles_degrees):
    angles = np.radians(angles_degrees)
    rotation = euler_to_rotation(angles)
    assert np.allclose(rotation_to_euler(rotation), angles)
    camera = camera_matrix(640, 360)
    translation = np.array([[30.0], [-20.0], [600.0]])
    rvec = cv2.Rodrigues(rotation)[0]
    projected = cv2.projectPoints(FACE_MODEL_MM, rvec, translation, camera, None)[0].reshape(5, 2)
    pose = head_pose(projected, camera)
    assert pose is not None
    recovered = rotation_to_euler(cv2.Rodrigues(pose[0])[0])
    assert np.degrees(np.abs(recovered - angles)).max() < 0.5
    assert np.abs(pose[1].ravel() - translation.ravel()).max() < 5
