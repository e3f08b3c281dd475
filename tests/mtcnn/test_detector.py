import threading

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from keenvision.core.io import read_image, video_frames
from keenvision.mtcnn import MTCNN, Face, pyramid_scales
from keenvision.mtcnn.detector import _nms_min


@pytest.fixture(scope="module")
def photos(data_dir):
    names = ["mtcnn_official/test1.jpg", "mtcnn_official/test2.jpg", "video_samples/multi_face.jpg",
             "faces_dlib_examples/2008_002506.jpg"]
    return [read_image(data_dir / name).pixels for name in names]


def _dlib_boxes(data_dir, image_name):
    from keenvision.mtcnn.annotations import read_imglab

    return np.array([face["box"] for xml in ("training.xml", "testing.xml")
                     for face in read_imglab(data_dir / "faces_dlib_examples" / xml).get(image_name, [])])


def test_pyramid_scales_follow_the_matlab_rule():
    scales = pyramid_scales(360, 640, 20, 0.709)
    assert scales[0] == pytest.approx(0.6) and scales[1] == pytest.approx(0.6 * 0.709)
    assert 360 * scales[-1] >= 12 > 360 * scales[-1] * 0.709
    assert pyramid_scales(11, 500, 20, 0.709) == []


def test_finds_the_annotated_faces_of_a_real_photo(detector, data_dir):
    truth = _dlib_boxes(data_dir, "2008_002506.jpg")
    faces = detector.detect(data_dir / "faces_dlib_examples" / "2008_002506.jpg")
    assert len(truth) >= 3 and all(isinstance(f, Face) for f in faces)
    found = torch.tensor(np.stack([f.box for f in faces]), dtype=torch.float64)
    overlap = box_iou(torch.tensor(truth), found)
    # dlib's boxes are tighter than MTCNN's, so ask each annotated face to overlap a detection clearly
    assert (overlap.max(1).values > 0.3).all()
    for face in faces:  # landmarks inside their box, eyes above the mouth
        x1, y1, x2, y2 = face.box
        assert ((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2])).all()
        assert face.landmarks[:2, 1].max() < face.landmarks[3:, 1].min()
        assert 0.7 < face.score <= 1


def test_batch_of_mixed_sizes_equals_one_at_a_time(detector, photos):
    batched = detector.detect_arrays(photos)
    for image, together in zip(photos, batched):
        alone = detector.detect_arrays([image])[0]
        assert len(alone) == len(together)
        for a, b in zip(alone, together):
            assert np.allclose(a.box, b.box, atol=1e-3) and np.allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_frames_without_faces_in_a_batch(detector, data_dir):
    empty = [frame for _, frame in video_frames(data_dir / "video_samples" / "no_face.mp4", step=40)]
    with_face = [frame for _, frame in video_frames(data_dir / "video_samples" / "single_face.mp4", step=30)]
    batch = [empty[0], with_face[0], empty[1], with_face[1]]
    results = detector.detect_arrays(batch)
    assert [len(r) for r in results][0::2] == [0, 0]
    assert all(len(r) == 1 for r in results[1::2])
    assert detector.detect_arrays(empty) == [[] for _ in empty]


def test_tiny_grey_and_rgba_inputs(detector, photos):
    assert detector.detect(np.zeros((11, 40, 3), np.uint8)) == []
    assert detector.detect(np.zeros((8, 8), np.uint8)) == []
    colour = detector.detect(photos[0])
    grey = detector.detect(photos[0].mean(2).astype(np.uint8))
    rgba = detector.detect(np.dstack([photos[0], np.full(photos[0].shape[:2], 255, np.uint8)]))
    assert len(grey) == len(colour) and len(rgba) == len(colour)
    assert np.allclose(rgba[0].box, colour[0].box)


def test_accepts_paths_pil_and_tensors(detector, data_dir, photos):
    from PIL import Image

    path = data_dir / "mtcnn_official" / "test1.jpg"
    expected = detector.detect(photos[0])
    for source in (path, str(path), Image.fromarray(photos[0]), torch.from_numpy(photos[0]).permute(2, 0, 1)):
        faces = detector.detect(source)
        assert len(faces) == len(expected) and np.allclose(faces[0].box, expected[0].box)
    assert len(detector.detect([path, photos[1]])) == 2


def test_huge_image_is_reduced_and_mapped_back(data_dir, photos):
    small_budget = MTCNN(device="cpu", max_image_pixels=60_000)
    image = photos[2]  # 1000x667: reduced about 3.3x
    reduced = small_budget.detect(image)
    full = MTCNN(device="cpu").detect(image)
    assert len(reduced) >= 1
    overlap = box_iou(torch.tensor(np.stack([f.box for f in reduced])), torch.tensor(np.stack([f.box for f in full])))
    assert (overlap.max(1).values > 0.6).all()  # same faces, in original pixel coordinates


def test_min_nms_uses_intersection_over_smaller_box():
    boxes = np.array([[0, 0, 99, 99], [10, 10, 49, 49], [200, 200, 220, 220]], np.float64)
    keep = _nms_min(boxes, np.array([0.9, 0.95, 0.5]), np.zeros(3, np.int64), 0.7)
    # the small box lies inside the big one: IoU is 0.16 but 'Min' overlap is 1, so the lower score goes
    assert keep.tolist() == [1, 2]


def test_landmark_flip_averaging_changes_little(photos):
    with_flip = MTCNN(device="cpu").detect(photos[0])
    without = MTCNN(device="cpu", flip_landmarks=False).detect(photos[0])
    assert np.allclose(with_flip[0].box, without[0].box)
    difference = np.abs(with_flip[0].landmarks - without[0].landmarks).max()
    assert 0 < difference < 0.05 * (with_flip[0].box[2] - with_flip[0].box[0])


def test_facenet_pytorch_pipeline_reproduces_facenet_pytorch(photos):
    facenet = pytest.importorskip("facenet_pytorch")
    theirs = facenet.MTCNN(device="cpu", keep_all=True)
    ours = MTCNN(device="cpu", pipeline="facenet-pytorch")
    for image in photos:
        boxes, _, points = theirs.detect(image, landmarks=True)
        faces = ours.detect(image)
        assert len(faces) == len(boxes)
        boxes, points = boxes.astype(np.float64), points.astype(np.float64)
        mine = np.stack([f.box for f in faces]) + [1, 1, 0, 0]  # facenet reports MATLAB's 1-based x1, y1
        order = [int(np.abs(boxes - box).sum(1).argmin()) for box in mine]
        assert np.abs(mine - boxes[order]).max() < 0.05
        assert np.abs(np.stack([f.landmarks for f in faces]) - points[order]).max() < 0.05


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_face_size"):
        MTCNN(device="cpu", min_face_size=5)
    with pytest.raises(ValueError, match="pipeline"):
        MTCNN(device="cpu", pipeline="dlib")
    with pytest.raises(ValueError, match="thresholds"):
        MTCNN(device="cpu", thresholds=(0.6, 0.7))


def test_facenet_pipeline_batches_mixed_sizes(photos):
    detector = MTCNN(device="cpu", pipeline="facenet-pytorch")
    batched = detector.detect_arrays(photos)
    for image, together in zip(photos, batched):
        alone = detector.detect_arrays([image])[0]
        assert [f.score for f in alone] == pytest.approx([f.score for f in together], abs=1e-5)


def test_torch_crop_path_gives_the_same_detections(photos):
    # the batched gather used on CUDA, run here on the CPU against the default OpenCV crops
    default, gathered = MTCNN(device="cpu"), MTCNN(device="cpu")
    gathered.crop_backend = "torch"
    for image in photos[:2]:
        a, b = default.detect(image), gathered.detect(image)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert np.allclose(x.box, y.box, atol=0.01) and abs(x.score - y.score) < 1e-4


def test_huge_jpeg_is_reduced_while_decoding(tmp_path, data_dir, detector):
    import cv2

    from keenvision.core.io import write_image

    small = read_image(data_dir / "mtcnn_official" / "test1.jpg").pixels
    factor = 6000 / small.shape[1]
    huge = cv2.resize(small, (6000, round(small.shape[0] * factor)), interpolation=cv2.INTER_LINEAR)
    write_image(tmp_path / "huge.jpg", huge)
    bounded = MTCNN(device="cpu", max_image_pixels=4_000_000)
    faces = bounded.detect(tmp_path / "huge.jpg")
    expected = detector.detect(small)
    assert len(faces) == len(expected)
    found = torch.tensor(np.stack([f.box for f in faces]), dtype=torch.float64)
    scaled = torch.tensor(np.stack([f.box for f in expected]) * factor, dtype=torch.float64)
    assert (box_iou(scaled, found).max(1).values > 0.7).all()


def _parity_set(data_dir):
    """The benchmark's parity set: every photo and every 4th/8th frame of the sample clips."""
    images = [read_image(path).pixels for folder in ("faces_dlib_examples", "mtcnn_official", "video_samples")
              for path in sorted((data_dir / folder).glob("*.jpg"))]
    for name, step in (("single_face.mp4", 4), ("WolfgangLanger_Pexels.mp4", 8), ("face_noface.mov", 8)):
        images += [frame for _, frame in video_frames(data_dir / "video_samples" / name, step)]
    return images


def test_fast_pnet_and_integral_pyramid_keep_the_detections(data_dir):
    # the default (fused P-Net in strips, small levels from the integral image, reused buffers, R/O-Net in
    # launches of a few dozen crops) against the layer-by-layer forward with a resize per level and every stage in
    # one launch, on all 114 images of the parity set
    fast, reference = MTCNN(device="cpu"), MTCNN(device="cpu")
    reference.pnet_cells = reference.pyramid_from_integral = False
    reference.crops_per_launch = {"rnet": 1 << 30, "onet": 1 << 30}
    images = _parity_set(data_dir)
    compared = 0
    for image in images:
        ours, theirs = fast.detect_arrays([image])[0], reference.detect_arrays([image])[0]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert np.abs(a.box - b.box).max() < 1e-3 and abs(a.score - b.score) < 1e-3
            assert np.abs(a.landmarks - b.landmarks).max() < 1e-3
            compared += 1
    assert len(images) == 114 and compared > 100


@pytest.mark.parametrize("size", [(216, 384), (153, 273), (14, 25), (12, 12)])
def test_pnet_cells_equal_the_module_forward(size):
    pnet = MTCNN(device="cpu").pnet
    images = (torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    images = images.contiguous(memory_format=torch.channels_last)
    logits, offsets = pnet(images)
    probability, cell_offsets = pnet.cells(images)
    assert torch.allclose(probability, torch.softmax(logits, 1)[:, 1], atol=1e-5)
    assert torch.allclose(cell_offsets, offsets.permute(0, 2, 3, 1), atol=1e-5)


@pytest.mark.parametrize("budget", [5_000, 20_000])
def test_pnet_strips_equal_one_launch(data_dir, budget):
    # a real photo (cut to an odd height) as a pyramid level, in strips of a few rows: the same numbers up to the
    # float rounding of convolutions blocked differently
    detector = MTCNN(device="cpu")
    image = read_image(data_dir / "mtcnn_official" / "test2.jpg").pixels.astype(np.float32)
    image = image[:image.shape[0] - 1 + image.shape[0] % 2]
    level = torch.from_numpy((image - 127.5) * 0.0078125).permute(2, 0, 1)[None]
    level = level.contiguous(memory_format=torch.channels_last)
    assert level.shape[2] % 2 == 1
    heads = detector.pnet.cell_heads()
    whole = detector.pnet.cells(level, heads)
    detector.pnet_pixels_per_launch = budget
    strips = detector._pnet_strips(level, heads)
    assert strips[0].shape == whole[0].shape and strips[1].shape == whole[1].shape
    torch.testing.assert_close(strips, whole, atol=1e-6, rtol=1e-5)


def test_rnet_and_onet_in_small_launches_give_the_same_faces(photos):
    one_launch, small_launches = MTCNN(device="cpu"), MTCNN(device="cpu")
    one_launch.crops_per_launch = {"rnet": 1 << 30, "onet": 1 << 30}
    small_launches.crops_per_launch = {"rnet": 7, "onet": 3}
    for ours, theirs in zip(small_launches.detect_arrays(photos), one_launch.detect_arrays(photos)):
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            assert np.abs(a.box - b.box).max() < 1e-3 and abs(a.score - b.score) < 1e-4
            assert np.abs(a.landmarks - b.landmarks).max() < 1e-3


def test_worker_pool_follows_torch_threads():
    from keenvision.mtcnn.detector import _threads, _workers

    def where():
        return threading.get_ident(), torch.get_num_threads(), _threads()

    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            ident, intra_op, budget = _workers().submit(where).result()
            # one thread: the work runs in the caller; more: in a worker on one intra-op thread of its own
            assert (ident == threading.get_ident()) == (threads == 1)
            assert (intra_op, budget) == (1 if threads > 1 else threads, threads)
            assert torch.get_num_threads() == threads  # the caller's own count is left as it was
        with pytest.raises(ZeroDivisionError):
            _workers().submit(divmod, 1, 0).result()
    finally:
        torch.set_num_threads(before)


def test_threads_started_after_the_pools_keep_the_callers_count():
    from keenvision.mtcnn.detector import _workers

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _workers()
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert seen == [2]
    finally:
        torch.set_num_threads(before)


def test_concurrent_detections_on_two_threads_match_one_at_a_time(photos):
    # at two intra-op threads each call runs in a driver thread and hands pieces to shared workers
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        detector = MTCNN(device="cpu")
        alone = [detector.detect(image) for image in photos]
        results: dict[int, list] = {}

        def run(index):
            results[index] = [detector.detect(image) for image in photos[index:] + photos[:index]]

        threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for index in range(2):
            for ours, theirs in zip(results[index], alone[index:] + alone[:index]):
                assert len(ours) == len(theirs) > 0
                assert np.abs(np.stack([f.box for f in ours]) - np.stack([f.box for f in theirs])).max() < 1e-4
    finally:
        torch.set_num_threads(before)
