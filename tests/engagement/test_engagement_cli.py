"""``keen engagement predict|features|eval|train`` end to end on the real clips, the real OpenFace CSV and the real
2019 NPZ, with small random-weight ensembles (the shipped ones may not exist yet): JSON last lines, timeline PNGs,
bad inputs skipped (exit 1) or fatal (exit 2, one line), layouts routed or refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from keenvision.cli import main
from keenvision.core.io import read_image
from keenvision.engagement.data import FeatureLayout, FeatureStandardiser, load_features
from keenvision.engagement.ensemble import EngagementEnsemble
from keenvision.engagement.model import MILEngagementRegressor
from keenvision.engagement.predict import plot_timeline, predict_csv, predict_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def training_npz(data_dir):
    path = data_dir / "engagement" / "emotiw2019_openface_15seg_train.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def tiny_ensemble(layout: FeatureLayout, features: np.ndarray | None, folder, name: str):
    torch.manual_seed(0)
    models = [MILEngagementRegressor(layout.dim, hidden=8, lstm_layers=1, mlp=(8,)) for _ in range(2)]
    sample = features if features is not None else np.random.default_rng(0).normal(size=(8, layout.segments,
                                                                                          layout.dim))
    return EngagementEnsemble(models, FeatureStandardiser.fit(sample), layout).save(folder / name)


@pytest.fixture(scope="module")
def openface_weights(training_npz, tmp_path_factory):
    data = load_features(training_npz)
    return tiny_ensemble(data.layout, data.features, tmp_path_factory.mktemp("weights"), "openface15.safetensors")


@pytest.fixture(scope="module")
def samples(data_dir):
    folder = data_dir / "video_samples"
    if not (folder / "OpenFace_Test.csv").is_file():
        pytest.skip(f"{folder} not found")
    return folder


def run(capsys, *argv) -> tuple[int, list[str], str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1 and "error:" in lines[0], err
    return lines[0]


def test_predict_csv_and_video_json_and_plot(capsys, samples, openface_weights, tmp_path):
    plot = tmp_path / "timeline.png"
    code, out, _ = run(capsys, "engagement", "predict", samples / "OpenFace_Test.csv", "--weights",
                       openface_weights, "--json")
    assert code == 0
    record = json.loads(out[-1])
    assert 0 <= record["intensity"] <= 1 and record["level"] in (0.0, 0.33, 0.66, 1.0)
    assert record["input"] == "openface-csv" and record["approximate"]  # legacy layout: no eye landmarks
    assert len(record["per_segment"]) == 15 and record["presence"] == [1.0] * 15
    code, out, _ = run(capsys, "engagement", "predict", samples / "face_noface.mov", "--weights", openface_weights,
                       "--json", "--plot", plot)
    assert code == 0
    record = json.loads(out[-1])
    assert record["input"] == "video" and record["approximate"] and record["plot"] == str(plot)
    assert record["presence"][0] == 1.0 and record["presence"][-1] == 0.0
    assert len(record["segment_seconds"]) == 15 and record["segment_seconds"][-1][1] < 7
    image = read_image(plot).pixels
    assert image.shape[0] > 200 and image.shape[1] > 500 and image.std() > 10
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def test_predict_batch_skips_bad_files(capsys, samples, openface_weights, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 1000 + b"not a video")
    code, out, err = run(capsys, "engagement", "predict", garbage, samples / "single_face.jpg",
                         samples / "OpenFace_Test.csv", "--weights", openface_weights, "--json",
                         "--plot", tmp_path / "t.png")
    assert code == 1
    records = [json.loads(line) for line in out]
    assert [("error" in r) for r in records] == [True, True, False]
    assert "cannot open as a video" in records[0]["error"] and "expected a video" in records[1]["error"]
    assert "2 failed" in err
    assert (tmp_path / "t_OpenFace_Test.png").is_file()
    message = one_line_error(capsys, "engagement", "predict", garbage, "--weights", openface_weights)
    assert "garbage.mp4: cannot open as a video" in message  # a single input: its own error


def test_predict_refusals_are_one_line(capsys, samples, openface_weights, tmp_path):
    assert "no-such-model" in one_line_error(capsys, "engagement", "predict", samples / "OpenFace_Test.csv",
                                             "--weights", tmp_path / "no-such-model.safetensors")
    vgg = tiny_ensemble(FeatureLayout("vggface2", 15, 128), None, tmp_path, "vgg.safetensors")
    message = one_line_error(capsys, "engagement", "predict", samples / "single_face.mp4", "--weights", vgg)
    assert "vggface2 15 segments x 128" in message and "keenvision-video" in message
    message = one_line_error(capsys, "engagement", "predict", samples / "OpenFace_Test.csv", "--weights", vgg)
    assert "60-d" in message
    assert "--every" in one_line_error(capsys, "engagement", "predict", samples / "single_face.mp4", "--weights",
                                       openface_weights, "--every", "0")


def test_video_features_route_to_a_model_of_our_layout(samples, tmp_path):
    ours = tiny_ensemble(FeatureLayout("keenvision-video", 10, 25), None, tmp_path, "ours.safetensors")
    prediction = predict_video(samples / "single_face.mp4", ours)
    assert not prediction.approximate and prediction.per_segment.shape == (10,)
    assert prediction.to_dict()["layout"] == "keenvision-video 10 segments x 25"
    plot_timeline(prediction, tmp_path / "ours.png")
    assert read_image(tmp_path / "ours.png").pixels.shape[2] == 3


def test_predict_csv_api(samples, openface_weights):
    prediction = predict_csv(samples / "OpenFace_Test.csv", openface_weights)
    assert prediction.segment_frames.shape == (15, 2) and np.isfinite(prediction.per_segment).all()
    assert prediction.level_index in (0, 1, 2, 3)


def test_features_command(capsys, samples, tmp_path):
    out_npz = tmp_path / "ours.npz"
    code, out, _ = run(capsys, "engagement", "features", samples / "single_face.mp4", samples / "no_face.mp4",
                       "--out", out_npz, "--segments", "10", "--json")
    assert code == 0 and json.loads(out[-1])["shape"] == [2, 10, 25]
    loaded = load_features(out_npz, require_labels=False)
    assert loaded.layout == FeatureLayout("keenvision-video", 10, 25) and np.isfinite(loaded.features).all()
    with np.load(out_npz) as archive:
        assert archive["presence"][0].min() > 0.9 and archive["presence"][1].max() == 0
        assert archive["names"].tolist()[0] == "presence"
    both = tmp_path / "openface.npz"
    code, out, _ = run(capsys, "engagement", "features", samples / "OpenFace_Test.csv", samples / "single_face.mp4",
                       "--layout", "openface", "--out", both, "--json")
    assert code == 0 and json.loads(out[-1])["shape"] == [2, 15, 60]
    assert load_features(both, require_labels=False).layout == FeatureLayout("openface", 15, 60)
    assert "--layout openface" in one_line_error(capsys, "engagement", "features", samples / "OpenFace_Test.csv",
                                                 "--out", tmp_path / "x.npz")
    assert ".npz" in one_line_error(capsys, "engagement", "features", samples / "single_face.mp4", "--out",
                                    tmp_path / "x.txt")


def test_eval_command(capsys, training_npz, openface_weights, data_dir):
    code, out, _ = run(capsys, "engagement", "eval", "--features", training_npz, "--weights", openface_weights,
                       "--json")
    assert code == 0
    record = json.loads(out[-1])
    assert 0 <= record["mse"] <= 1 and set(record["mse_per_level"]) == {"0", "0.33", "0.66", "1"}
    assert record["videos"] == 146
    other = data_dir / "engagement" / "emotiw2019_openface_21seg_train.npz"
    if other.is_file():
        message = one_line_error(capsys, "engagement", "eval", "--features", other, "--weights", openface_weights)
        assert "21 segments" in message and "15 segments" in message


def test_eval_fuses_openface_and_vggface2_and_plots_the_calibration(capsys, training_npz, openface_weights,
                                                                     data_dir, tmp_path):
    faces_npz = data_dir / "engagement" / "emotiw2019_vggface2_15seg_train.npz"
    faces = load_features(faces_npz)
    faces_weights = tiny_ensemble(faces.layout, faces.features, tmp_path, "vggface2_15.safetensors")
    plot = tmp_path / "calibration.png"
    code, out, _ = run(capsys, "engagement", "eval", "--features", training_npz, "--weights", openface_weights,
                       "--features", faces_npz, "--weights", faces_weights, "--plot", plot, "--json")
    assert code == 0
    record = json.loads(out[-1])
    assert record["weights"].startswith("fused") and [row["layout"] for row in record["results"]] == [
        "openface 15 segments x 60", "vggface2 15 segments x 128", None]
    openface, vggface2, fused = record["results"]
    # the fused prediction is the mean of the two: its per-level mean prediction is the mean of theirs
    for level in ("0", "0.33", "0.66", "1"):
        assert fused["mean_prediction_per_level"][level] == pytest.approx(
            (openface["mean_prediction_per_level"][level] + vggface2["mean_prediction_per_level"][level]) / 2)
    assert record["mse"] == fused["mse"] and record["videos"] == 146
    picture = read_image(plot).pixels
    assert picture.shape[2] == 3 and picture.shape[0] > 300 and len(np.unique(picture.reshape(-1, 3), axis=0)) > 20
    shuffled = tmp_path / "other_videos_vggface2_15seg.npz"
    np.savez(shuffled, features=faces.features[::-1], labels=faces.labels[::-1])
    message = one_line_error(capsys, "engagement", "eval", "--features", training_npz, "--features", shuffled,
                             "--weights", openface_weights, "--weights", faces_weights)
    assert "not the videos of" in message
    assert "one --weights per --features" in one_line_error(capsys, "engagement", "eval", "--features", training_npz,
                                                            "--features", faces_npz, "--weights", openface_weights)


def test_train_command(capsys, training_npz, tmp_path):
    data = np.load(training_npz)
    small = tmp_path / "small_openface_15seg.npz"
    np.savez(small, features=data["features"][:24], labels=data["labels"][:24])
    config = tmp_path / "tiny.yaml"
    config.write_text("epochs: 1\nbag_models: 1\ncv_folds: 0\nmodel: {hidden: 8, lstm_layers: 1, mlp: [8]}\n")
    code, out, _ = run(capsys, "engagement", "train", "--config", config, "--features", small, "--run-dir",
                       tmp_path / "run")
    assert code == 0 and out[-1].startswith("trained weights:")
    weights = out[-1].split(": ", 1)[1]
    code, out, _ = run(capsys, "engagement", "eval", "--features", small, "--weights", weights, "--json")
    assert code == 0 and json.loads(out[-1])["videos"] == 24
    assert "--config" in one_line_error(capsys, "engagement", "train", "--config", tmp_path / "absent.yaml")


def test_demo_section(tmp_path):
    from keenvision.engagement.demo import demo_clip, demo_section

    assert demo_clip().is_file() and demo_clip().stat().st_size < 300_000
    section = demo_section(tmp_path)
    assert "Pexels" in section.paragraphs[0] and "frames/s" in section.paragraphs[0]
    assert (tmp_path / "engagement_head_pose.png").is_file() and (tmp_path / "engagement_frame.png").is_file()
    assert section.table is not None and len(section.table[1]) == 15
