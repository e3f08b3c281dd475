"""`keenvision.sicnn.hallucinate` on real photos: the astronaut (scikit-image) and CelebA faces of the shared data.

The network is a small random-weight CNN-H (fast): these tests are about shapes, alignment, degradation and the
small/large-face decision, not about hallucination quality (test_sicnn_cli.py checks the shipped CNN-H's)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.data import astronaut

from keenvision.mtcnn import align
from keenvision.sicnn.data import degrade
from keenvision.sicnn.hallucinate import (
    Hallucinator,
    align_face,
    alignment_scale,
    bicubic_upscale,
    side_by_side,
    to_unit_tensor,
)
from keenvision.sicnn.model import HallucinationNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hallucinator(detector):
    torch.manual_seed(0)
    model = HallucinationNet(stem_channels=8, growth=4, dense_layers=(1, 1, 1, 1), upsample_channels=8)
    return Hallucinator(model=model, device="cpu", detector=detector)


@pytest.fixture(scope="module")
def celeba_photo(data_dir):
    from keenvision.core.io import read_image

    folder = data_dir / "celeba_identities" / "00001"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return read_image(sorted(folder.glob("*.jpg"))[0]).pixels


def reduced(image: np.ndarray, factor: int) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA)


def test_astronaut_face_gives_96x112_outputs(hallucinator):
    faces = hallucinator.hallucinate_image(astronaut(), all_faces=True)
    assert len(faces) == 1
    face = faces[0]
    assert face.lr.shape == (14, 12, 3) and face.bicubic.shape == face.sicnn.shape == face.aligned.shape
    assert face.sicnn.shape == (112, 96, 3) and face.sicnn.dtype == np.uint8
    assert face.hallucinated and not face.small  # an ~89x115 px face: larger than the template
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200  # the astronaut's face, upper middle of the photo


def test_large_faces_pass_through_and_small_ones_are_hallucinated(hallucinator, celeba_photo):
    large = hallucinator.hallucinate_image(celeba_photo)
    assert len(large) == 1 and large[0].status == "passed_through" and large[0].sicnn is None
    assert large[0].alignment_scale < 1 and large[0].aligned.shape == (112, 96, 3)
    small = hallucinator.hallucinate_image(reduced(celeba_photo, 3))  # a ~30 px face
    assert len(small) == 1 and small[0].status == "hallucinated" and small[0].small
    assert small[0].sicnn.shape == (112, 96, 3) and small[0].bicubic.shape == (112, 96, 3)
    assert 2.5 < small[0].alignment_scale < 3.2


def test_lr_is_the_8x8_mean_of_the_aligned_face(hallucinator):
    face = hallucinator.hallucinate_image(astronaut(), all_faces=True)[0]
    expected = degrade(to_unit_tensor([face.aligned]))[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(face.lr - expected).max() <= 0.5 + 1e-3  # rounding only
    lr = to_unit_tensor([face.lr])
    bicubic = (bicubic_upscale(degrade(to_unit_tensor([face.aligned])))[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(face.bicubic - bicubic).max() <= 0.5 + 1e-3
    assert lr.shape == (1, 3, 14, 12)


def test_a_real_small_face_gives_the_same_12x14_as_the_large_one(hallucinator):
    """The decision documented in the module: a small face's LR is its photo area-resampled onto the 12x14
    template grid, so the astronaut reduced 4x (a ~25 px face) gives nearly the LR of the full photo."""
    image = astronaut()
    full = hallucinator.hallucinate_image(image, all_faces=True)[0]
    small = hallucinator.hallucinate_image(reduced(image, 4))[0]
    assert 3 < small.alignment_scale < 4
    difference = np.abs(small.lr.astype(int) - full.lr.astype(int))
    assert difference.mean() < 6  # grey levels; detection on the smaller photo moves the landmarks a little


def test_large_face_alignment_is_area_reduced_not_aliased(celeba_photo, detector):
    """Faces larger than the template are area-reduced before the warp; the crop stays close to the plain
    bilinear warp (same geometry) and is smoother than it."""
    image = cv2.resize(celeba_photo, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # a ~270 px face
    face = detector.detect(image)[0]
    crop, scale = align_face(image, face.landmarks)
    assert scale == pytest.approx(alignment_scale(face.landmarks)) and scale < 0.4
    plain = align(image, face.landmarks)
    assert np.abs(crop.astype(int) - plain.astype(int)).mean() < 6
    # high-frequency energy (Laplacian): the area-reduced crop has less aliasing than a shrinking bilinear warp
    energy = lambda pixels: np.abs(cv2.Laplacian(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), cv2.CV_64F)).mean()  # noqa: E731
    assert energy(crop) < energy(plain)


def test_grey_photo_gives_grey_outputs(hallucinator):
    grey = cv2.cvtColor(reduced(astronaut(), 3), cv2.COLOR_RGB2GRAY)
    face = hallucinator.hallucinate_image(grey)[0]
    for pixels in (face.lr, face.bicubic, face.sicnn):
        assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def test_hallucinate_aligned_shapes_and_range(hallucinator):
    lr = torch.rand(3, 3, 14, 12, generator=torch.Generator().manual_seed(0))
    output = hallucinator.hallucinate_aligned(lr)
    assert output.shape == (3, 3, 112, 96) and 0 <= output.min() and output.max() <= 1
    with pytest.raises(ValueError, match="14, 12"):
        hallucinator.hallucinate_aligned(torch.rand(1, 3, 16, 16))


def test_side_by_side_strip(hallucinator):
    face = hallucinator.hallucinate_image(astronaut(), all_faces=True)[0]
    strip = side_by_side(face)
    assert strip.shape == (14 + 112, 4 * 96 + 3 * 4, 3)
    assert np.array_equal(strip[14:, -96:], face.aligned)  # the last panel is the real face
    passed = hallucinator.hallucinate_image(astronaut())[0]
    with pytest.raises(ValueError, match="passed through"):
        side_by_side(passed)


def test_photo_without_a_face_gives_no_faces(hallucinator):
    from skimage.data import coffee

    assert hallucinator.hallucinate_image(coffee()) == []
