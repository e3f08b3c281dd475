"""``keen segment`` and ``keen farsee eval|bench|export-onnx|train`` end to end on real CamVid files with a
random-weight export (the shipped weights do not exist yet), bad inputs as one-line errors with exit 2, the
BiSeNetV2-sized reference's size, and ONNX Runtime parity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from keenvision.cli import main
from keenvision.core.io import read_image
from keenvision.core.weights import save_weights
from keenvision.farsee.benchmark import counted_gflops, parameter_count
from keenvision.farsee.bisenetv2 import BiSeNetV2Reference
from keenvision.farsee.data import CamVidDataset, read_label
from keenvision.farsee.export import export_onnx, onnx_export_available, onnx_parity, onnx_runtime_available
from keenvision.farsee.model import FarSeeNet, export_metadata, load_farsee

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def camvid(data_dir):
    root = data_dir / "camvid"
    if not (root / "val" / "images").is_dir():
        pytest.skip(f"{root} not found")
    return root


@pytest.fixture(scope="module")
def weights(camvid, tmp_path_factory):
    """A random-weight FarSee-Net export with CamVid's classes, in the format `load_farsee` reads."""
    dataset = CamVidDataset(camvid, "val")
    torch.manual_seed(0)
    model = FarSeeNet(dataset.num_classes, width=16, input_scale=0.5)
    path = tmp_path_factory.mktemp("weights") / "tiny_camvid.safetensors"
    save_weights(model.state_dict(), path, export_metadata(model, dataset.class_names, dataset.ignore_index))
    return path


def run(capsys, *argv) -> tuple[int, list[str], str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "error:" in lines[0], err
    return lines[0]


def test_segment_folder_with_a_corrupt_file(capsys, camvid, weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    images = sorted((camvid / "val" / "images").glob("*.jpg"))[:2]
    for path in images:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    code, lines, err = run(capsys, "segment", folder, "--out", out, "--weights", weights, "--device", "cpu",
                           "--json")
    assert code == 1  # some input failed, the rest written
    assert "skipped" in err and "corrupt.png" in err
    records = [json.loads(line) for line in lines]
    assert [r["path"].rsplit("/", 1)[-1] for r in records] == ["0016E5_07959.jpg", "0016E5_07961.jpg",
                                                               "corrupt.png"]
    assert "error" in records[2]
    for path, record in zip(images, records):
        assert (record["height"], record["width"]) == (360, 480)
        assert sum(record["class_fractions"].values()) == pytest.approx(1.0)
        overlay = read_image(out / f"{path.stem}_overlay.png").pixels
        labels = read_label(out / f"{path.stem}_labels.png")
        assert overlay.shape == (360, 480, 3) and labels.shape == (360, 480) and labels.max() < 11
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}_{kind}.png" for p in images
                                                           for kind in ("overlay", "labels"))


def test_segment_bad_inputs(capsys, weights, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    code, _, err = run(capsys, "segment", tmp_path / "bad.jpg", "--out", tmp_path / "o", "--weights", weights)
    assert code == 2  # nothing usable: the file is reported, then the one-line error
    assert err.strip().splitlines() == [f"keen segment: skipped {tmp_path / 'bad.jpg'}: not a readable image "
                                        "(UnidentifiedImageError)", "keen segment: error: no readable image or video "
                                        "frame among the inputs (1 failed)"]
    assert not (tmp_path / "o").exists()
    assert "unknown FarSee-Net model" in one_line_error(capsys, "segment", tmp_path / "bad.jpg", "--weights", "nope")
    assert "no such weights file" in one_line_error(capsys, "segment", tmp_path / "bad.jpg", "--weights",
                                                    tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert "not a readable safetensors" in one_line_error(capsys, "segment", tmp_path / "bad.jpg", "--weights",
                                                          tmp_path / "junk.safetensors")
    assert "--every" in one_line_error(capsys, "segment", tmp_path, "--every", "0", "--weights", weights)


def test_eval_prints_a_table_and_json_last(capsys, camvid, weights):
    code, lines, _ = run(capsys, "farsee", "eval", "--data", camvid, "--split", "val", "--weights", weights,
                         "--limit", "2", "--device", "cpu", "--json")
    assert code == 0
    record = json.loads(lines[-1])
    assert record["images"] == 2 and len(record["per_class_iou"]) == 11
    assert 0 <= record["miou"] <= 1 and 0 <= record["pixel_accuracy"] <= 1
    assert any(line.startswith("Sky") for line in lines) and "mIoU" in lines[-2]


def test_eval_skips_a_bad_pair_and_reports_it(capsys, camvid, weights, tmp_path):
    """Three real val frames, the second's label corrupted with an out-of-range class: the other two are scored,
    the bad one is named on stderr and in the JSON, and the exit status says not everything was scored."""
    shutil.copy(camvid / "classes.json", tmp_path / "classes.json")
    pairs = CamVidDataset(camvid, "val").pairs[:3]
    for folder in ("images", "labels"):
        (tmp_path / "val" / folder).mkdir(parents=True)
    for image, label in pairs:
        shutil.copy(image, tmp_path / "val" / "images" / image.name)
        shutil.copy(label, tmp_path / "val" / "labels" / label.name)
    bad = tmp_path / "val" / "labels" / pairs[1][1].name
    values = read_label(bad)
    values[:10, :10] = 50
    Image.fromarray(values.astype(np.uint8)).save(bad)
    code, lines, err = run(capsys, "farsee", "eval", "--data", tmp_path, "--weights", weights, "--device", "cpu",
                           "--json")
    record = json.loads(lines[-1])
    assert code == 1 and record["images"] == 2 and len(record["skipped"]) == 1
    assert bad.name in record["skipped"][0] and "[50]" in record["skipped"][0]
    assert f"skipped {bad}" in err and "Traceback" not in err
    for _, label in pairs:
        (tmp_path / "val" / "labels" / label.name).write_bytes(b"")
    assert "could be scored" in one_line_error(capsys, "farsee", "eval", "--data", tmp_path, "--weights", weights)


def test_eval_bad_inputs(capsys, camvid, weights, tmp_path):
    assert "no such folder" in one_line_error(capsys, "farsee", "eval", "--data", tmp_path / "nope", "--weights",
                                              weights)
    assert "test" in one_line_error(capsys, "farsee", "eval", "--data", camvid, "--split", "test", "--weights",
                                    weights)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    assert "broken.safetensors" in one_line_error(capsys, "farsee", "eval", "--data", camvid, "--weights", broken)


def test_shipped_weights_segment_camvid_val(capsys, camvid):
    """The shipped model (default --weights) on 4 held-out validation frames: far above chance (50.3% mIoU and
    81.9% pixel accuracy on all 101; 11 classes)."""
    code, lines, _ = run(capsys, "farsee", "eval", "--data", camvid, "--split", "val", "--limit", "4", "--json")
    assert code == 0
    record = json.loads(lines[-1])
    assert record["weights"] == "farsee-camvid" and record["images"] == 4
    assert record["pixel_accuracy"] > 0.7 and record["per_class_iou"]["Road"] > 0.7 and record["miou"] > 0.3


def test_bench_json_has_every_network(capsys):
    code, lines, _ = run(capsys, "farsee", "bench", "--size", "64x96", "--classes", "11", "--repeats", "1",
                         "--warmup", "0", "--device", "cpu", "--json")
    assert code == 0
    record = json.loads(lines[-1])
    assert record["size"] == [64, 96] and record["dtype"] == "float32"
    names = [row["network"] for row in record["rows"]]
    assert len(names) == 10
    for reference in ("ENet", "ESPNet", "DDRNet-23-slim", "BiSeNetV2"):
        assert any(name.startswith(reference) for name in names), reference
    assert all(row["fps"] > 0 and row["params"] > 0 and row["gflops"] > 0 for row in record["rows"])
    by_name = {row["network"]: row for row in record["rows"]}
    shipped = next(row for name, row in by_name.items() if "farsee-camvid" in name)
    full = next(row for name, row in by_name.items() if "MobileNetV2, full input" in name)
    bilinear = next(row for name, row in by_name.items() if "bilinear" in name)
    # the same network (only the logit super-resolution's factor differs) on a 0.75x input: fewer FLOPs at CamVid's
    # size (at 64x96 both inputs pad to the same 64x96)
    assert abs(shipped["params"] - full["params"]) < 0.01 * full["params"]
    from keenvision.farsee.benchmark import default_networks

    makers = {name: make for name, make in default_networks(11).items()
              if "MobileNetV2" in name and "bilinear" not in name}
    shipped_gflops, full_gflops = (counted_gflops(make(), (384, 480)) for make in makers.values())
    assert shipped_gflops < 0.7 * full_gflops
    assert bilinear["params"] < shipped["params"]  # the ablation's upsampling has factor^2 fewer weights
    enet = next(row for name, row in by_name.items() if name.startswith("ENet"))
    assert enet["fps_vs_enet"] == 1 and shipped["fps_vs_enet"] == pytest.approx(shipped["fps"] / enet["fps"])


def test_bench_takes_several_sizes(capsys):
    code, lines, _ = run(capsys, "farsee", "bench", "--size", "64x96", "96x128", "--repeats", "1", "--warmup", "0",
                         "--json")
    assert code == 0
    record = json.loads(lines[-1])
    assert [result["size"] for result in record["results"]] == [[64, 96], [96, 128]]
    assert "input HxW" in lines[1] and any(line.startswith("96x128") for line in lines)


@pytest.mark.parametrize("size", ["1024", "axb", "16x16", "1024x2048x3", ""])
def test_bad_size_strings(capsys, size):
    assert "--size" in one_line_error(capsys, "farsee", "bench", "--size", size)


def test_train_bad_inputs(capsys, tmp_path):
    assert "no such file" in one_line_error(capsys, "farsee", "train", "--config", tmp_path / "missing.yaml")
    assert "--max-steps" in one_line_error(capsys, "farsee", "train", "--config", tmp_path, "--max-steps", "0")
    assert "--num-threads" in one_line_error(capsys, "farsee", "train", "--config", tmp_path, "--num-threads", "0")
    assert "--devices" in one_line_error(capsys, "farsee", "train", "--config", tmp_path, "--devices", "0")


def test_bisenetv2_reference_size():
    model = BiSeNetV2Reference(19).eval()
    assert 3.0e6 < parameter_count(model) < 3.7e6  # BiSeNetV2 is reported at about 3.4M parameters
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 19, 64, 96)
    # counted on the meta device: cost grows with the pixels
    assert counted_gflops(model, (128, 256)) == pytest.approx(4 * counted_gflops(model, (64, 128)), rel=0.05)


@pytest.mark.skipif(not (onnx_export_available() and onnx_runtime_available()),
                    reason="onnx, onnxscript and onnxruntime are not installed (pip install 'keenvision[onnx]')")
def test_onnx_export_matches_torch(capsys, weights, tmp_path):
    out = tmp_path / "farsee.onnx"
    code, lines, _ = run(capsys, "farsee", "export-onnx", "--out", out, "--weights", weights, "--size", "96x128",
                         "--check", "--json")
    assert code == 0
    record = json.loads(lines[-1])
    assert record["max_abs_difference"] < 1e-4 and out.is_file()
    model = load_farsee(weights)
    images = torch.randn(3, 3, 96, 128, generator=torch.Generator().manual_seed(1))  # another batch size
    assert onnx_parity(model, out, images) < 1e-4
    import onnx

    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert metadata["class_names"][0] == "Sky" and metadata["input_size_hw"] == [96, 128]
    assert metadata["mean"] == pytest.approx(list(model.mean))
    assert next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "x.onnx", (96, 128), opset=17)
    assert np.isfinite(onnx_parity(model, out, images[:1]))


def test_train_then_segment_with_the_export(capsys, camvid, tmp_path, monkeypatch):
    monkeypatch.setenv("KEEN_PROGRESS", "1")  # the step bar even though stderr is not a terminal here
    config = tmp_path / "tiny.yaml"
    config.write_text(f"""
run_dir: {tmp_path / 'run'}
data_root: {camvid}
train_images: 4
val_images: 2
model: {{width: 16}}
crop_size: [64, 96]
batch_size: 2
val_batch_size: 2
class_weights: none
val_every: 2
checkpoint_every: 2
log_every: 1
num_threads: 2
accelerator: cpu
""")
    code, lines, err = run(capsys, "farsee", "train", "--config", config, "--max-steps", "2", "--num-threads", "1",
                           "--accelerator", "cpu", "--devices", "1")
    assert code == 0 and torch.get_num_threads() == 1  # --num-threads overrides the recipe's 2
    assert "train: 100%" in err and "2/2" in err and "loss" in err  # our bar on stderr, over optimiser steps
    assert not any("train:" in line for line in lines)  # never on stdout
    weights = tmp_path / "run" / "farsee_camvid.safetensors"
    assert lines[-1] == f"trained weights: {weights}" and weights.is_file()
    image = sorted((camvid / "val" / "images").glob("*.jpg"))[0]
    code, lines, _ = run(capsys, "segment", image, "--out", tmp_path / "out", "--weights", weights, "--json")
    assert code == 0 and json.loads(lines[-1])["width"] == 480
