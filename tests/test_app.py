"""``keen app`` as a user meets it: the command started on 127.0.0.1, every endpoint called with gradio_client on
real inputs and on bad ones, and the page rendered by headless Chromium. Under CI=true Gradio, gradio_client and
Chromium must be installed (``make test`` installs the first two, ``.ci/run`` the browser)."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

IN_CI = os.environ.get("CI", "").lower() == "true"


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        if IN_CI:
            raise
        pytest.skip(f"{module} is not installed (pip install 'keenvision[app]')")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keen() -> list[str]:
    return [sys.executable, "-m", "keenvision.cli"]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    _require("gradio")
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "keen_app.log"  # a file, not a pipe nobody reads (it would fill up)
    process = subprocess.Popen([*_keen(), "app", "--port", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"keen app exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("keen app did not answer within 120 s")
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def client(app_url):
    gradio_client = _require("gradio_client")
    return gradio_client.Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_uploads")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "empty.png").write_bytes(b"")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    (folder / "notes.txt").write_text("not a video")
    Image.new("1", (12000, 9000)).save(folder / "huge.png")  # 108 MP, a few kB on disk
    return folder


def _upload(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def _app_error(client, *args, api_name: str) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as raised:
        client.predict(*args, api_name=api_name)
    return str(raised.value)


def _read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_every_view_has_its_api_name(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/detect", "/hallucinate", "/segment", "/engagement", "/diffrate"} <= set(endpoints)


def test_detect_matches_the_library(client, data_dir, detector):
    photo = data_dir / "faces_dlib_examples" / "2008_002470.jpg"
    annotated, crops, record = client.predict(_upload(photo), None, api_name="/detect")
    expected = detector.detect(str(photo))
    assert len(record["faces"]) == len(expected) >= 1
    for face, reference in zip(record["faces"], expected):
        np.testing.assert_allclose(face["box"], reference.box, atol=0.01)
        np.testing.assert_allclose(face["landmarks"], reference.landmarks, atol=0.01)
    assert len(crops) == len(expected)
    assert _read(crops[0]["image"]).shape == (112, 112, 3)
    drawn, original = _read(annotated), np.asarray(Image.open(photo).convert("RGB"))
    assert drawn.shape == original.shape and (drawn != original).any()  # the boxes are drawn on the photo
    _, _, webcam = client.predict(None, _upload(photo), api_name="/detect")  # the same photo as a webcam frame
    assert webcam["source"] == "webcam frame" and len(webcam["faces"]) == len(expected)
    np.testing.assert_allclose(webcam["faces"][0]["box"], record["faces"][0]["box"], atol=0.01)


def test_hallucinate_shows_each_face(client, data_dir):
    strips, record = client.predict(_upload(data_dir / "video_samples" / "multi_face.jpg"), api_name="/hallucinate")
    assert len(strips) == len(record["faces"]) >= 2
    strip = _read(strips[0]["image"])
    assert strip.shape[0] >= 112 and strip.shape[1] >= 4 * 96  # LR | bicubic | SICNN | photo
    assert all(face["status"] == "hallucinated" for face in record["faces"])


def test_segment_image_and_video_frame(client, data_dir):
    from keenvision.farsee.segment import Segmenter

    street = data_dir / "camvid" / "val" / "images"
    image = sorted(street.iterdir())[0]
    blended, shares, speed, record = client.predict(_upload(image), 0, api_name="/segment")
    labels = Segmenter(device="cpu").segment(np.array(Image.open(image).convert("RGB"))).labels
    expected = np.bincount(labels.ravel(), minlength=11) / labels.size
    measured = {item["label"]: item["confidence"] for item in shares["confidences"]}
    names = Segmenter(device="cpu").class_names
    for index, name in enumerate(names):
        assert measured.get(name, 0.0) == pytest.approx(expected[index], abs=1e-3)
    assert _read(blended).shape == (360, 480, 3)
    assert "fps" in speed and record["milliseconds"] > 0
    _, _, _, video_record = client.predict(_upload(data_dir / "video_samples" / "single_face.mp4"), 1.0,
                                           api_name="/segment")
    from keenvision.core.io import video_info

    fps = video_info(data_dir / "video_samples" / "single_face.mp4")["fps"]
    assert f"frame {int(fps)} (1.00 s)" in video_record["source"]
    assert (video_record["width"], video_record["height"]) == (640, 360)


def test_engagement_scores_a_video(client):
    from keenvision.engagement.demo import demo_clip
    from keenvision.engagement.predict import predict_video

    timeline, summary, record = client.predict(_upload(demo_clip()), api_name="/engagement")
    expected = predict_video(demo_clip())
    assert record["intensity"] == pytest.approx(expected.intensity, abs=1e-4)
    assert len(record["per_segment"]) == len(expected.per_segment)
    assert f"{expected.intensity:.2f}" in summary
    assert _read(timeline).shape[1] >= 600  # the matplotlib timeline, 800 px wide


def test_diffrate_measures_both_models(client):
    from keenvision.diffrate.method.flops import schedule_gflops
    from keenvision.diffrate.models import load_model, load_schedule

    kept, summary, record = client.predict("cifar10-vit", "shipped:cifar10-vit/0.11", 0.11, 2, api_name="/diffrate")
    model = load_model("cifar10-vit")
    assert record["gflops_original"] == pytest.approx(schedule_gflops(model), abs=1e-4)
    assert record["gflops_compressed"] == pytest.approx(
        schedule_gflops(model, load_schedule("shipped:cifar10-vit/0.11", model)), abs=1e-4)
    assert record["images_per_s_original"] > 0 and record["images_per_s_compressed"] > 0
    assert _read(kept).ndim == 3
    _, _, uniform = client.predict("cifar10-vit", "uniform at the FLOPs target", 0.12, 1, api_name="/diffrate")
    assert uniform["gflops_compressed"] <= 0.12 < uniform["gflops_original"]


@pytest.mark.parametrize(("api_name", "arguments", "message"), [
    ("/detect", ("corrupt.jpg", None), "corrupt.jpg: not a readable image"),
    ("/detect", ("empty.png", None), "empty.png: the file is empty"),
    ("/detect", ("huge.png", None), "108 MP; the app takes up to 80 MP"),
    ("/detect", (None, None), "no image: upload one first"),
    ("/hallucinate", ("camvid_street.jpg",), "no face found"),
    ("/segment", ("corrupt.mp4", 0), "corrupt.mp4: cannot open as a video"),
    ("/engagement", ("notes.txt",), "notes.txt: expected a video"),
    ("/engagement", ("corrupt.mp4",), "corrupt.mp4: cannot open as a video"),
    ("/diffrate", ("resnet50", "uniform at the FLOPs target", 1.0, 1), "DiffRate compresses timm VisionTransformer"),
    ("/diffrate", ("cifar10-vit", "uniform at the FLOPs target", 5.0, 1), "needs a FLOPs target between 0"),
])
def test_bad_input_gets_one_line_in_the_page(client, bad_files, api_name, arguments, message):
    from keenvision.farsee.demo import DEMO_IMAGE

    files = {"camvid_street.jpg": DEMO_IMAGE}
    if api_name != "/diffrate":  # the other views take file names here
        arguments = tuple(_upload(files.get(a, bad_files / a)) if isinstance(a, str) else a for a in arguments)
    error = _app_error(client, *arguments, api_name=api_name)
    assert message in error
    assert "Traceback" not in error and "\n" not in error.strip()


def test_a_busy_port_is_one_line(app_url):
    port = app_url.rstrip("/").rsplit(":", 1)[1]
    result = subprocess.run([*_keen(), "app", "--port", port], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"keen app: error: port {port} on 127.0.0.1 is in use; choose another with --port"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if IN_CI:
        pytest.fail("CI=true but Chromium is not installed (.ci/run installs Debian's chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def test_page_renders_in_a_real_browser(app_url, tmp_path):
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", app_url], capture_output=True, text=True, timeout=180).stdout
    for text in ("MTCNN: faces", "SICNN: face hallucination", "FarSee-Net: street segmentation", "Engagement",
                 "DiffRate: ViT token compression", "Detect faces"):
        assert text in dom, f"{text!r} not rendered"
    shot = tmp_path / "page.png"
    subprocess.run([browser, *flags, "--window-size=1280,900", f"--screenshot={shot}", app_url],
                   capture_output=True, timeout=180, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (900, 1280)
    # the primary button is Gradio's orange, the title and tab labels dark text on white: a blank or an error page
    # has neither
    orange = (np.abs(pixels - [249, 115, 22]).sum(-1) < 60).sum()
    dark = (pixels.sum(-1) < 150).sum()
    assert orange > 5000, f"no primary button in the screenshot ({orange} orange pixels)"
    assert dark > 2000, f"no text in the screenshot ({dark} dark pixels)"


def test_a_user_uploads_clicks_and_reads_the_result(app_url, data_dir, tmp_path):
    """The page driven in Chromium (Playwright on Debian's browser, nothing downloaded): a photo uploaded to the
    MTCNN view, the button clicked, the drawn detections and the JSON shown; then a street photo in the SICNN view
    gives its one-line message in the page."""
    playwright = _require("playwright.sync_api")
    browser_path = _chromium()
    photo = data_dir / "faces_dlib_examples" / "2008_002470.jpg"
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(app_url)
            page.locator("input[type=file]").first.set_input_files(str(photo))
            page.get_by_role("button", name="Detect faces").click()
            # the result images are served by the app as files: the drawn photo and one crop per face
            page.wait_for_function("document.querySelectorAll('img[src*=\"file=\"]').length >= 2", timeout=120_000)
            drawn = page.locator("img[src*='file=']").first
            drawn.evaluate("image => image.decode()")  # loaded and decoded, not only in the DOM
            size = drawn.evaluate("image => [image.naturalWidth, image.naturalHeight]")
            assert size == list(Image.open(photo).size)
            assert '"score"' in page.locator("body").inner_text()  # the JSON record
            page.screenshot(path=str(tmp_path / "detect.png"), full_page=True)
            page.get_by_role("tab", name="SICNN: face hallucination").click()
            from keenvision.farsee.demo import DEMO_IMAGE

            page.locator("input[type=file]").nth(1).set_input_files(str(DEMO_IMAGE))
            page.get_by_role("button", name="Hallucinate").click()
            message = page.get_by_text("no face found").first
            message.wait_for(timeout=120_000)
            assert message.is_visible() and message.inner_text().startswith("camvid_street.jpg, 480x360: no face found")
            assert "Traceback" not in page.locator("body").inner_text()
        finally:
            browser.close()
    shot = np.asarray(Image.open(tmp_path / "detect.png").convert("RGB")).astype(int)
    green = ((shot[..., 1] > 180) & (shot[..., 0] < 80) & (shot[..., 2] < 80)).sum()
    assert green > 300, f"no drawn (green) boxes in the screenshot ({green} pixels)"
