import numpy as np
import pytest

from keenvision.mtcnn import TEMPLATES, align, similarity_transform


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * points @ rotation.T + shift
    matrix = similarity_transform(points, moved)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(matrix[:, 2], shift)


@pytest.mark.parametrize("size", [(96, 112), (112, 112)])
def test_aligned_face_has_its_landmarks_on_the_template(detector, data_dir, size):
    from keenvision.core.io import read_image

    image = read_image(data_dir / "video_samples" / "single_face.jpg").pixels
    face = detector.detect(image)[0]
    crop = align(image, face.landmarks, size)
    assert crop.shape == (size[1], size[0], 3)
    # detect again on the aligned crop: the landmarks land near the template (pixel-centre -> edge: +0.5)
    again = detector.detect(crop)
    assert len(again) == 1
    error = np.linalg.norm(again[0].landmarks - (TEMPLATES[size] + 0.5), axis=1)
    assert error.mean() < 4.0


def test_unknown_size_is_rejected():
    with pytest.raises(ValueError, match="size"):
        align(np.zeros((50, 50, 3), np.uint8), np.zeros((5, 2)), (64, 64))
