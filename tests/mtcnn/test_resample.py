"""The crop resampler against a direct transcription of imResampleMex's coefficient rules."""

import numpy as np
import pytest
import torch

from keenvision.mtcnn.resample import resample_crops, resample_crops_cv2


def _piotr_matrix(source: int, target: int) -> np.ndarray:
    """Rows = output samples, columns = input pixels, following resampleCoef() in imResampleMex.cpp."""
    matrix = np.zeros((target, source))
    scale = target / source
    if source > target:  # shrink: fractional box weights
        for out in range(target):
            start, end = out / scale, (out + 1) / scale
            first, last = int(np.ceil(start)), int(end)
            for pixel in range(first - 1, last + 1):
                weight = scale
                if pixel == first - 1:
                    weight = (first - start) * scale
                elif pixel == last:
                    weight = (end - last) * scale
                if weight > 1e-3 * scale and 0 <= pixel < source:
                    matrix[out, pixel] += weight
    else:  # enlarge: bilinear at half-pixel centres, clamped to the first/last pixel
        for out in range(target):
            position = (0.5 + out) / scale - 0.5
            pixel = int(np.floor(position))
            weight = 1 - (position - pixel) if 0 <= pixel < source - 1 else 1.0
            pixel = min(max(pixel, 0), source - 1)
            matrix[out, pixel] += weight
            if weight < 1:
                matrix[out, pixel + 1] += 1 - weight
    return matrix


def _reference(image: np.ndarray, box, size: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    channels, height, width = image.shape
    crop = np.zeros((channels, y2 - y1 + 1, x2 - x1 + 1))  # MATLAB's zero-padded tmp
    for y in range(y1, y2 + 1):
        for x in range(x1, x2 + 1):
            if 1 <= y <= height and 1 <= x <= width:
                crop[:, y - y1, x - x1] = image[:, y - 1, x - 1]
    rows, cols = _piotr_matrix(crop.shape[1], size), _piotr_matrix(crop.shape[2], size)
    return np.einsum("yh,chw,xw->cyx", rows, crop, cols)


BOXES = [(5, 5, 30, 30), (-10, -4, 20, 26), (30, 20, 70, 60), (10, 10, 20, 20), (3, 7, 26, 30), (1, 1, 24, 24),
         (-3, 30, 30, 63), (10, 10, 33, 34), (12, 3, 13, 4), (-40, -40, -20, -20)]


@pytest.fixture(scope="module")
def image(data_dir):
    from keenvision.core.io import read_image

    pixels = read_image(data_dir / "mtcnn_official" / "test2.jpg").pixels[100:140, 150:200]
    return pixels.transpose(2, 0, 1).astype(np.float64)


@pytest.mark.parametrize("size", [24, 48])
def test_torch_resampler_matches_imresample(image, size):
    out = resample_crops(torch.tensor(image, dtype=torch.float32), torch.tensor(BOXES), size).numpy()
    for crop, box in zip(out, BOXES):
        assert np.abs(crop - _reference(image, box, size)).max() < 1e-3, box


@pytest.mark.parametrize("size", [24, 48])
def test_opencv_resampler_matches_imresample(image, size):
    out = resample_crops_cv2(image.transpose(1, 2, 0).astype(np.float32), np.array(BOXES), size)
    for crop, box in zip(out, BOXES):
        assert np.abs(crop.transpose(2, 0, 1) - _reference(image, box, size)).max() < 1e-3, box


@pytest.mark.parametrize("size", [(27, 15), (207, 117), (640, 360), (1000, 500)])
def test_pyramid_level_from_the_integral_matches_the_resize(data_dir, size):
    import cv2

    from keenvision.core.io import read_image
    from keenvision.mtcnn.resample import shrink_area_from_integral

    image = cv2.resize(read_image(data_dir / "video_samples" / "multi_face.jpg").pixels, (1920, 1080))
    expected = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    out = np.empty(expected.shape, np.float32)
    shrink_area_from_integral(cv2.integral(image, sdepth=cv2.CV_32S), size, out)
    assert np.abs(out - expected).max() < 1e-3  # pixel values 0..255
