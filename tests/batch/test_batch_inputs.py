"""`list_inputs`: folders, globs, text lists and Parquet path columns become one list of absolute paths, each once;
and the blocks: atomic files, read back one row per path."""

from __future__ import annotations

import os

import pytest

from keenvision.batch import list_inputs, read_results
from keenvision.batch.engine import block_name, check_manifest, done_paths, write_block
from keenvision.batch.systems import SYSTEMS, error_row, ok_row
from keenvision.core.errors import UsageError


@pytest.fixture
def tree(tmp_path):
    """photos/a.jpg, photos/sub/b.png, photos/.hidden.jpg, photos/notes.txt, clip.mp4 (contents do not matter
    to listing)."""
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for name in ("photos/a.jpg", "photos/sub/b.png", "photos/.hidden.jpg", "photos/notes.md", "clip.mp4"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_folders_globs_and_files_become_absolute_paths_each_once(tree, monkeypatch):
    monkeypatch.chdir(tree)
    found = list_inputs(["photos", "photos/sub/*.png", "clip.mp4", str(tree / "photos" / "a.jpg")])
    assert found == [str(tree / "photos" / "a.jpg"), str(tree / "photos" / "sub" / "b.png"), str(tree / "clip.mp4")]
    recursive = list_inputs([str(tree / "**" / "*.jpg")])
    assert recursive == [str(tree / "photos" / "a.jpg")]  # globs skip hidden files, as folders do


def test_a_text_list_is_read_relative_to_its_own_folder(tree, tmp_path, monkeypatch):
    listing = tree / "photos" / "list.txt"
    listing.write_text(f"# comment\na.jpg\n\nsub/b.png\n{tree / 'clip.mp4'}\nmissing.jpg\n")
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: relative lines still point beside the list
    assert list_inputs([str(listing)]) == [str(tree / "photos" / "a.jpg"), str(tree / "photos" / "sub" / "b.png"),
                                           str(tree / "clip.mp4"), str(tree / "photos" / "missing.jpg")]


def test_a_parquet_path_column(tree, pyarrow_module):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2, 3], "file": ["photos/a.jpg", None, str(tree / "clip.mp4")]})
    pq.write_table(table, tree / "inputs.parquet")
    assert list_inputs([str(tree / "inputs.parquet")], path_column="file") == [str(tree / "photos" / "a.jpg"),
                                                                              str(tree / "clip.mp4")]
    with pytest.raises(UsageError, match="no column 'path'"):
        list_inputs([str(tree / "inputs.parquet")])
    (tree / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(UsageError, match="not a readable Parquet file"):
        list_inputs([str(tree / "junk.parquet")])


def test_a_source_that_names_nothing_is_a_usage_error(tree):
    with pytest.raises(UsageError, match="no such file or folder"):
        list_inputs([str(tree / "photoz")])
    with pytest.raises(UsageError, match="matches no file"):
        list_inputs([str(tree / "photos" / "*.webp")])


def test_blocks_are_written_atomically_and_read_back_one_row_per_path(tmp_path, pyarrow_module):
    schema = SYSTEMS["detect"].schema()
    (tmp_path / "results").mkdir()
    first = write_block(tmp_path, [error_row("/x/a.jpg", "/x/a.jpg: not a readable image"),
                                   ok_row("/x/b.jpg", 10, 20, faces=[], image=None)], schema)
    assert first == block_name(["/x/a.jpg", "/x/b.jpg"])
    assert sorted(os.listdir(tmp_path / "results")) == [first]  # no temporary file left beside it
    # a later block holds a.jpg again, now readable, and b.jpg with another result: ok beats error, newer beats older
    face = {"box": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "landmarks": [[1.0, 1.0]] * 5}
    os.utime(tmp_path / "results" / first, ns=(1, 1))
    write_block(tmp_path, [ok_row("/x/a.jpg", 5, 5, faces=[face], image=None),
                           ok_row("/x/b.jpg", 10, 20, faces=[face, face], image=None),
                           error_row("/x/c.jpg", "/x/c.jpg: empty file")], schema)
    rows = read_results(tmp_path).to_pylist()
    assert [row["path"] for row in rows] == ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg"]
    assert rows[0]["status"] == "ok" and rows[0]["faces"] == [face]
    assert len(rows[1]["faces"]) == 2
    assert done_paths(tmp_path) == {"/x/a.jpg", "/x/b.jpg", "/x/c.jpg"}
    assert done_paths(tmp_path, retry_errors=True) == {"/x/a.jpg", "/x/b.jpg"}
    # an error row written after an ok row does not replace it
    write_block(tmp_path, [error_row("/x/b.jpg", "/x/b.jpg: gone")], schema)
    assert read_results(tmp_path, columns=["faces"]).to_pylist()[1]["status"] == "ok"


def test_a_rerun_with_other_options_or_another_system_is_refused(tmp_path):
    check_manifest(tmp_path, "detect", {"min_face_size": 20, "thresholds": (0.6, 0.7, 0.7)})
    check_manifest(tmp_path, "detect", {"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7]})  # the same
    with pytest.raises(UsageError, match="min_face_size=20, this run has min_face_size=40"):
        check_manifest(tmp_path, "detect", {"min_face_size": 40, "thresholds": (0.6, 0.7, 0.7)})
    with pytest.raises(UsageError, match="holds `keen batch detect` results"):
        check_manifest(tmp_path, "segment", {})
