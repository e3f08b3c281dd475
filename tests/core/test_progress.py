"""Long commands show progress on stderr, and stay quiet under --json (stdout ends with one JSON object)."""

from __future__ import annotations

import json

import pytest

from keenvision.cli import main


@pytest.fixture()
def camvid(data_dir):
    return data_dir / "camvid"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_shows_a_bar_on_stderr_and_none_under_json(capsys, camvid, monkeypatch):
    monkeypatch.setenv("KEEN_PROGRESS", "1")
    code, out, err = _run(capsys, "farsee", "eval", "--data", camvid, "--limit", "3")
    assert code == 0
    assert "eval: 100%" in err and "3/3" in err
    assert "eval:" not in out and "mIoU" in out
    code, out, err = _run(capsys, "farsee", "eval", "--data", camvid, "--limit", "3", "--json")
    assert code == 0 and "eval:" not in err and "%|" not in err
    assert json.loads(out.strip().splitlines()[-1])["images"] == 3


def test_bars_only_on_a_terminal_unless_asked(capsys, camvid, monkeypatch):
    monkeypatch.delenv("KEEN_PROGRESS", raising=False)  # auto: stderr is captured here, not a terminal
    code, _, err = _run(capsys, "farsee", "eval", "--data", camvid, "--limit", "2")
    assert code == 0 and "eval:" not in err
    monkeypatch.setenv("KEEN_PROGRESS", "0")
    from keenvision.core.progress import progress_bar

    assert progress_bar(range(3), desc="x").disable is True


def test_video_progress_counts_frames(capsys, data_dir, monkeypatch):
    monkeypatch.setenv("KEEN_PROGRESS", "1")
    clip = data_dir / "video_samples" / "single_face.mp4"
    code, out, err = _run(capsys, "engagement", "predict", clip)
    assert code == 0 and "engagement" in out
    assert "single_face.mp4: 100%" in err and "72/72" in err and "frame" in err
