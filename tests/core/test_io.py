import io

import numpy as np
import pytest
import torch
from PIL import Image

from keenvision.core.io import ImageReadError, expand_paths, read_image, video_frames, video_info


@pytest.fixture(scope="module")
def photo(data_dir):
    return read_image(data_dir / "mtcnn_official" / "test1.jpg").pixels


def test_reads_real_jpeg_as_rgb_uint8(data_dir, photo):
    reference = np.asarray(Image.open(data_dir / "mtcnn_official" / "test1.jpg").convert("RGB"))
    assert photo.dtype == np.uint8 and photo.shape == reference.shape
    assert np.array_equal(photo, reference)
    assert photo.flags.writeable


def test_grey_rgba_and_16_bit_files(tmp_path, photo):
    grey = Image.fromarray(photo).convert("L")
    grey.save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png").pixels
    assert out.shape == photo.shape and np.array_equal(out[..., 0], np.asarray(grey))
    assert (out[..., 0] == out[..., 2]).all()

    rgba = np.dstack([photo, np.full(photo.shape[:2], 17, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png").pixels, photo)

    sixteen = np.asarray(grey, np.uint16) * 257  # full 16-bit range
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    deep = read_image(tmp_path / "deep.png").pixels
    assert np.abs(deep[..., 0].astype(int) - np.asarray(grey, int)).max() <= 1


def test_exif_orientation_is_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(photo).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "rotated.jpg").pixels
    assert out.shape == (photo.shape[1], photo.shape[0], 3)


def test_arrays_tensors_and_pil(photo):
    chw = torch.from_numpy(photo).permute(2, 0, 1)
    assert np.array_equal(read_image(chw).pixels, photo)
    assert np.array_equal(read_image(chw.float() / 255).pixels, photo)
    assert np.array_equal(read_image(Image.fromarray(photo)).pixels, photo)
    assert read_image(photo[..., 0]).pixels.shape == photo.shape


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0 truncated jpeg"])
def test_bad_files_raise_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_file_and_bad_shapes(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError):
        read_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ImageReadError):
        read_image(np.zeros((4, 5, 7), np.uint8))


def test_max_pixels_reduces_and_reports_scale(data_dir):
    path = data_dir / "faces_dlib_examples" / "bald_guys.jpg"
    full = read_image(path)
    small = read_image(path, max_pixels=200_000)
    assert small.pixels.shape[0] * small.pixels.shape[1] <= 200_000
    assert small.scale == pytest.approx(small.pixels.shape[1] / full.pixels.shape[1], rel=0.01)


def test_video_frames_and_step(data_dir):
    path = data_dir / "video_samples" / "single_face.mp4"
    info = video_info(path)
    frames = list(video_frames(path, step=10))
    assert [i for i, _ in frames] == list(range(0, info["frames"], 10))
    assert frames[0][1].shape == (info["height"], info["width"], 3)


def test_undecodable_video(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(io.BytesIO(b"\x00" * 1000).getvalue())
    with pytest.raises(ImageReadError):
        list(video_frames(path))


def test_expand_paths_lists_images_and_videos(data_dir):
    found = expand_paths([data_dir / "video_samples"])
    names = {p.name for p in found}
    assert {"single_face.mp4", "multi_face.jpg"} <= names and "OpenFace_Test.csv" not in names
