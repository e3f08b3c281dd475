"""Fixtures of the `keen batch` tests: a real local Ray cluster, and 200+ real images of the shared data with bad
files among them."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _require(module: str):
    """The module, or a skip (outside CI) / a failure (CI, where the `scale` extra is installed by `make setup`)."""
    try:
        return __import__(module)
    except ImportError:
        message = f"{module} is not installed (pip install -e '.[scale]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def pyarrow_module():
    return _require("pyarrow")


@pytest.fixture(scope="session")
def ray_module():
    return _require("ray")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray cluster on this machine with 2 CPUs, started here and shut down after the session's last
    test; `run_batch(ray="local")` joins it instead of starting its own."""
    ray = _require("ray")
    _require("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def bad_folder(tmp_path_factory, data_dir):
    """Files that are not images: random bytes, a JPEG cut short, an empty PNG, text named like an image."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "corrupt.jpg").write_bytes(os.urandom(4096))
    jpeg = (data_dir / "faces_dlib_examples" / "bald_guys.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image\n")
    return folder


@pytest.fixture(scope="session")
def image_sources(tmp_path_factory, data_dir, bad_folder):
    """The inputs of the big runs, in the forms `keen batch` takes: a text list of 200 CelebA photos (plus one
    path that does not exist), the dlib examples folder, a glob of CamVid frames and the folder of bad files."""
    celeba = sorted((data_dir / "celeba_identities").glob("*/*.jpg"))[:200]
    camvid = data_dir / "camvid" / "val" / "images"
    if len(celeba) < 200 or not camvid.is_dir() or not (data_dir / "faces_dlib_examples").is_dir():
        message = f"celeba_identities, camvid or faces_dlib_examples missing under {data_dir}"
        if IN_CI:  # CI has the shared data: a missing part is an error, not a skip
            pytest.fail(message)
        pytest.skip(message)
    listing = tmp_path_factory.mktemp("lists") / "celeba.txt"
    listing.write_text("\n".join(map(str, celeba)) + f"\n{bad_folder / 'missing.jpg'}\n")
    return [str(listing), str(data_dir / "faces_dlib_examples"), str(camvid / "0016E5_0796*.jpg"), str(bad_folder)]


@pytest.fixture(scope="session")
def image_paths(image_sources):
    from keenvision.batch import list_inputs

    paths = list_inputs(image_sources)
    assert len(paths) >= 215  # 200 + 1 missing + 11 dlib + a few CamVid + 4 bad
    return paths


@pytest.fixture(scope="session")
def detect_json(image_paths):
    """`keen detect --json` on the same files, one record per path (the reference the rows must equal)."""
    import contextlib
    import io
    import json

    import torch

    from keenvision.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(["detect", *image_paths, "--json", "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    assert status == 1  # the bad files fail, the rest carry on
    records = [json.loads(line) for line in stdout.getvalue().splitlines() if line.startswith("{")]
    return {record["path"]: record for record in records}


@pytest.fixture(scope="session")
def assert_rows_match_detect(detect_json):
    """Checks that rows (path -> row dict) say what `keen detect --json` says: the same paths, the same error
    message for each bad file, the same size and faces (box, score, landmarks) for the others."""

    def check(rows: dict) -> None:
        assert set(rows) == set(detect_json)
        for path, row in rows.items():
            record = detect_json[path]
            if "error" in record:
                assert (row["status"], row["error"]) == ("error", record["error"]), path
            else:
                assert (row["status"], row["error"]) == ("ok", None), path
                assert (row["width"], row["height"]) == (record["width"], record["height"]), path
                assert row["faces"] == record["faces"], path

    return check
