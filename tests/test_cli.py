import json
import shutil

import pytest

from keenvision.cli import main


def _lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_detect_folder_with_a_bad_file_keeps_going(tmp_path, data_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(data_dir / "mtcnn_official" / "test1.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"corrupt")
    shutil.copy(data_dir / "mtcnn_official" / "test2.jpg", folder / "c.jpg")
    status = main(["detect", str(folder), "--json", "--out", str(tmp_path / "out"), "--align", "--device", "cpu"])
    captured = capsys.readouterr()
    records = _lines(captured.out)
    assert status == 1  # partial failure is reported in the exit status
    assert [r["path"].split("/")[-1] for r in records] == ["a.jpg", "b.jpg", "c.jpg"]
    assert "error" in records[1] and len(records[0]["faces"]) >= 1 and len(records[2]["faces"]) >= 1
    assert "b.jpg" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "out" / "a.jpg").is_file() and (tmp_path / "out" / "aligned" / "a_0.png").is_file()


def test_detect_video_frames_carry_their_index(data_dir, capsys):
    status = main(["detect", str(data_dir / "video_samples" / "single_face.mp4"), "--json", "--video-step", "30",
                   "--device", "cpu"])
    records = _lines(capsys.readouterr().out)
    assert status == 0
    assert [r["frame"] for r in records] == [0, 30, 60]
    assert all(len(r["faces"]) == 1 for r in records)


def test_nothing_usable_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    status = main(["detect", str(tmp_path / "x.png"), str(tmp_path / "missing.jpg"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2
    assert "no readable image" in err and "Traceback" not in err


def test_bad_weights_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "w.safetensors").write_bytes(b"junk")
    status = main(["detect", str(tmp_path), "--weights", str(tmp_path / "w.safetensors"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "safetensors" in err[0]


def test_import_caffe_writes_the_shipped_weights(tmp_path, data_dir, capsys):
    import torch

    from keenvision.core.weights import load_weights, packaged_weights

    assert main(["mtcnn", "import-caffe", str(data_dir / "mtcnn_official"), str(tmp_path / "m.safetensors")]) == 0
    ours, shipped = load_weights(tmp_path / "m.safetensors"), load_weights(packaged_weights("mtcnn_caffe.safetensors"))
    assert ours.keys() == shipped.keys() and all(torch.equal(ours[k], shipped[k]) for k in ours)
    assert main(["mtcnn", "import-caffe", str(tmp_path), str(tmp_path / "n.safetensors")]) == 2


def test_bench_json_is_the_last_line(data_dir, capsys):
    status = main(["mtcnn", "bench", "--input", str(data_dir / "video_samples" / "single_face.mp4"), "--frames", "4",
                   "--batch", "2", "--repeats", "1", "--device", "cpu", "--json"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(last)
    assert status == 0 and record["frames"] == 4 and record["fps_single"] > 0 and record["fps_batched"] > 0


@pytest.mark.slow
def test_demo_writes_a_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "MTCNN" in report and (tmp_path / "demo" / "mtcnn_detections.png").is_file()
    assert "1 face(s) found" in report
    assert "DiffRate token pruning and merging" in report
    assert (tmp_path / "demo" / "diffrate_searched_kept_tokens.png").is_file()
    assert "top-1 measured now on the first 1000 CIFAR-10 test images" in report  # shared data is present in tests


def test_video_without_faces(data_dir, capsys):
    status = main(["detect", str(data_dir / "video_samples" / "no_face.mp4"), "--json", "--video-step", "25",
                   "--device", "cpu"])
    records = _lines(capsys.readouterr().out)
    assert status == 0 and len(records) == 4 and all(r["faces"] == [] for r in records)


def test_eval_commands_print_json_last(tmp_path, data_dir, capsys):
    (tmp_path / "empty").mkdir()
    gt = data_dir / "face_benchmark_annotations" / "wider_face_val"
    assert main(["mtcnn", "eval", "widerface", "--pred", str(tmp_path / "empty"), "--gt", str(gt), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["easy"] == record["medium"] == record["hard"] == 0.0
    assert main(["mtcnn", "eval", "dlib-examples", "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["recall"] > 0.9 and record["nme_mean"] < 0.1
    assert main(["mtcnn", "eval", "widerface", "--pred", str(tmp_path / "missing"), "--gt", str(gt)]) == 2


def test_huge_image_reports_original_coordinates(tmp_path, data_dir, capsys):
    import cv2

    from keenvision.core.io import read_image, write_image

    small = read_image(data_dir / "mtcnn_official" / "test2.jpg").pixels
    write_image(tmp_path / "big.jpg", cv2.resize(small, (small.shape[1] * 8, small.shape[0] * 8)))
    assert main(["detect", str(tmp_path / "big.jpg"), "--json", "--device", "cpu", "--max-pixels", "1000000",
                 "--out", str(tmp_path / "out")]) == 0
    record = _lines(capsys.readouterr().out)[0]
    assert (record["width"], record["height"]) == (small.shape[1] * 8, small.shape[0] * 8)
    main(["detect", str(data_dir / "mtcnn_official" / "test2.jpg"), "--json", "--device", "cpu"])
    reference = _lines(capsys.readouterr().out)[0]["faces"][0]["box"]
    assert len(record["faces"]) == 1
    assert max(abs(a / 8 - b) for a, b in zip(record["faces"][0]["box"], reference)) < 5
    annotated = read_image(tmp_path / "out" / "big.jpg").pixels
    assert annotated.shape[0] * annotated.shape[1] <= 1_000_000  # drawn on the reduced copy


def test_json_last_line_is_strict_json_when_a_metric_is_not_finite(capsys):
    from keenvision.cli import print_json

    print_json({"miou": float("nan"), "per_class": [1.0, float("inf")], "psnr": {"bicubic": 22.9}})
    line = capsys.readouterr().out.strip()
    # json.loads accepts NaN; a strict parser does not, so check the text itself
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"miou": None, "per_class": [1.0, None], "psnr": {"bicubic": 22.9}}


def test_help_imports_no_torch():
    """`keen --help` and `keen <system> --help` build the whole parser without torch, timm, Lightning or
    torchmetrics (seconds of imports): a fresh interpreter, so nothing imported by other tests counts."""
    import subprocess
    import sys

    code = ("import sys; from keenvision.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'timm', 'lightning', 'torchmetrics') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    for system in ("mtcnn", "sicnn", "farsee", "engagement", "diffrate"):
        shown = subprocess.run([sys.executable, "-m", "keenvision.cli", system, "--help"], capture_output=True,
                               text=True)
        assert shown.returncode == 0 and "usage: keen" in shown.stdout


def test_every_train_command_takes_the_same_trainer_options(capsys):
    common = {"--config", "--run-dir", "--seed", "--num-threads", "--accelerator", "--precision"}
    stepped = {"--resume", "--max-steps", "--devices", "--num-nodes"}
    for system in ("mtcnn", "sicnn", "farsee", "diffrate", "engagement"):
        with pytest.raises(SystemExit):
            main([system, "train", "--help"])
        shown = capsys.readouterr().out
        options = {word.strip("[],") for word in shown.split() if word.startswith(("--", "[--"))}
        wanted = common | (set() if system == "engagement" else stepped)  # engagement fits by epochs, seconds long
        assert wanted <= options, (system, wanted - options)


def test_detect_keeps_both_outputs_of_same_named_files(tmp_path, data_dir, capsys):
    photo = data_dir / "mtcnn_official" / "test1.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not found")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(photo, tmp_path / folder / "p.jpg")
    code = main(["detect", str(tmp_path / "a" / "p.jpg"), str(tmp_path / "b" / "p.jpg"), "--out",
                 str(tmp_path / "out"), "--align"])
    capsys.readouterr()
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == ["p.jpg", "p_2.jpg"]
    aligned = {p.name for p in (tmp_path / "out" / "aligned").glob("*.png")}
    assert {"p_0.png", "p_2_0.png"} <= aligned  # the first face of each


def test_bad_inputs_found_by_the_sweep_are_one_line(capsys):
    """`--out` under a file that is not a folder, and a recipe that exists but is not a regular file."""
    assert main(["farsee", "export-onnx", "--out", "/dev/full/x.onnx"]) == 2
    assert capsys.readouterr().err.strip() == "keen farsee: error: --out /dev/full/x.onnx: /dev/full is not a folder"
    assert main(["farsee", "train", "--config", "/dev/null"]) == 2
    assert capsys.readouterr().err.strip() == "keen farsee: error: --config /dev/null: not a regular file"


def test_old_flag_names_still_work_and_are_named_deprecated(data_dir, capsys):
    video = str(data_dir / "video_samples" / "single_face.mp4")
    assert main(["detect", video, "--json", "--video-step", "30", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "--video-step is deprecated, use --every" in err
    assert main(["detect", video, "--every", "0"]) == 2
    assert capsys.readouterr().err.strip() == "keen detect: error: --every must be >= 1, got 0"
