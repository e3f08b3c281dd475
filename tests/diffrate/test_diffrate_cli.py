import json
import sys
import types

import pytest
import yaml

from keenvision.cli import main
from keenvision.core.weights import save_weights
from keenvision.diffrate import Schedule, schedule_gflops

ARCH = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2, num_classes=10)
COMPRESS = Schedule((65, 60, 50, 40), (65, 55, 45, 30))


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def _one_line_error(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.fixture
def tiny(tmp_path, make_vit):
    path = tmp_path / "tiny.safetensors"
    save_weights(make_vit(**ARCH).state_dict(), path, {"architecture": yaml.safe_dump(ARCH)})
    schedule = COMPRESS.save(tmp_path / "schedule.json")
    return str(path), str(schedule)


def test_flops_deit_tiny_published_and_formula_only(capsys):
    assert main(["diffrate", "flops", "--model", "deit_tiny_patch16_224", "--schedule",
                 "published:ViT-S-DeiT/2.9", "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    assert record["kept_tokens"] == [197, 194, 176, 156, 141, 133, 121, 107, 88, 64, 56, 3]
    assert record["gflops"] < record["gflops_original"]
    assert abs(record["measured_gflops"] / record["gflops"] - 1) < 0.02
    assert main(["diffrate", "flops", "--model", "deit_small_patch16_224", "--no-measure", "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    assert round(record["gflops"], 3) == 4.599 and "measured_gflops" not in record


def test_flops_reads_a_public_compression_rate_file(tmp_path, capsys):
    public = tmp_path / "compression_rate.json"
    public.write_text(json.dumps({"ViT-S-DeiT": {"2.9": Schedule.load(
        _published_path()).to_public_dict()}}))
    assert main(["diffrate", "flops", "--model", "deit_small_patch16_224", "--no-measure", "--json",
                 "--schedule", f"{public}#ViT-S-DeiT/2.9"]) == 0
    assert round(_last_json(capsys.readouterr().out)["gflops"], 3) == 2.905


def _published_path():
    from importlib import resources

    return str(resources.files("keenvision.diffrate") / "published_schedules.json") + "#ViT-S-DeiT/2.9"


def test_bench_eval_plot_on_a_tiny_export(tiny, data_dir, tmp_path, capsys):
    model, schedule = tiny
    assert main(["diffrate", "bench", "--model", model, "--schedule", schedule, "--batch", "2", "--repeats", "1",
                 "--warmup", "0", "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    assert record["images_per_s_compressed"] > 0 and record["speedup"] > 0 and record["dtype"] == "float32"
    assert main(["diffrate", "eval", "--model", model, "--schedule", schedule, "--data", str(data_dir / "cifar10"),
                 "--limit-per-class", "1", "--batch-size", "10", "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    assert record["images"] == 10 and 0 <= record["top1_original"] <= 1 and 0 <= record["top1_compressed"] <= 1
    png = tmp_path / "kept.png"
    assert main(["diffrate", "plot", "--model", model, "--schedule", schedule, "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_uniform_writes_a_schedule_below_the_target(tmp_path, capsys):
    out = tmp_path / "uniform.json"
    assert main(["diffrate", "uniform", "--model", "deit_small_patch16_224", "--target-gflops", "2.905",
                 "--out", str(out), "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    schedule = Schedule.load(out)
    assert record["gflops"] <= 2.905 and record["gflops"] == schedule_gflops("deit_small_patch16_224", schedule)
    message = _one_line_error(capsys, ["diffrate", "uniform", "--model", "deit_small_patch16_224",
                                       "--target-gflops", "0.1", "--out", str(out)])
    assert "below" in message


def test_search_calls_the_search_module(tiny, tmp_path, monkeypatch, capsys):
    model, _ = tiny
    calls = {}

    def fake_search(model, data_dir, target_gflops, out=None, overrides=None, config=None):
        calls.update(data_dir=str(data_dir), target=target_gflops, out=out, overrides=overrides, config=config)
        COMPRESS.save(out)
        return COMPRESS

    monkeypatch.setitem(sys.modules, "keenvision.diffrate.search", types.SimpleNamespace(search=fake_search))
    out = tmp_path / "found.json"
    assert main(["diffrate", "search", "--model", model, "--data", str(tmp_path), "--target-gflops", "0.01",
                 "--out", str(out), "--max-steps", "3", "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    assert calls == {"data_dir": str(tmp_path), "target": 0.01, "out": out, "overrides": {"max_steps": 3},
                     "config": None}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 0.05\n")
    assert main(["diffrate", "search", "--model", model, "--data", str(tmp_path), "--target-gflops", "0.01",
                 "--out", str(out), "--distill", "--init", "uniform", "--init-spread", "6", "--merge-only",
                 "--config", str(recipe), "--json"]) == 0
    assert calls["overrides"] == {"distill": True, "init": "uniform", "init_spread": 6.0, "merge_only": True}
    assert calls["config"] == recipe
    assert "--init-spread" in _one_line_error(capsys, ["diffrate", "search", "--model", model, "--data",
                                                       str(tmp_path), "--target-gflops", "0.01", "--out", str(out),
                                                       "--init-spread", "0"])
    assert "no such file" in _one_line_error(capsys, ["diffrate", "search", "--model", model, "--data",
                                                      str(tmp_path), "--target-gflops", "0.01", "--out", str(out),
                                                      "--config", str(tmp_path / "missing.yaml")])
    assert record["merge_kept"] == list(COMPRESS.merge_kept) and Schedule.load(out) == COMPRESS


@pytest.mark.slow
def test_search_runs_the_real_search(tiny, data_dir, tmp_path, capsys):
    pytest.importorskip("keenvision.diffrate.search")
    from keenvision.diffrate.models import load_model

    model, _ = tiny
    full = schedule_gflops(load_model(model))
    out = tmp_path / "found.json"
    assert main(["diffrate", "search", "--model", model, "--data", str(data_dir / "cifar10"), "--target-gflops",
                 f"{0.7 * full:.6f}", "--out", str(out), "--max-steps", "2", "--batch-size", "10",
                 "--limit-per-class", "1", "--num-workers", "0", "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    schedule = Schedule.load(out)
    assert record["merge_kept"] == list(schedule.merge_kept) and schedule.depth == 4
    assert record["gflops"] == schedule_gflops(load_model(model), schedule)
    message = _one_line_error(capsys, ["diffrate", "search", "--model", model, "--data", str(data_dir / "cifar10"),
                                       "--target-gflops", "1", "--out", str(out), "--batch-size", "0"])
    assert "--batch-size" in message


def test_bad_inputs_are_one_line_errors(tiny, tmp_path, capsys):
    model, schedule = tiny
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    short = Schedule((65, 60), (65, 50)).save(tmp_path / "short.json")
    too_many = Schedule((66,) * 4, (65,) * 4).save(tmp_path / "many.json")
    flops = ["diffrate", "flops", "--model", model, "--schedule"]
    assert "unknown model" in _one_line_error(capsys, ["diffrate", "flops", "--model", "no_such_model_xyz"])
    assert "is a ResNet; DiffRate compresses timm VisionTransformer and Eva" in _one_line_error(
        capsys, ["diffrate", "flops", "--model", "resnet18", "--no-measure"])
    assert "2 blocks but the model has 4" in _one_line_error(capsys, [*flops, str(short)])
    assert "exceeds" in _one_line_error(capsys, [*flops, str(too_many)])
    assert "not valid JSON" in _one_line_error(capsys, [*flops, str(corrupt)])
    assert "does not exist" in _one_line_error(capsys, [*flops, str(tmp_path / "missing.json")])
    assert "no entry" in _one_line_error(capsys, [*flops, "published:ViT-S-DeiT/9.9"])
    assert "12 blocks but the model has 4" in _one_line_error(capsys, [*flops, "published:ViT-S-DeiT/2.9"])
    _one_line_error(capsys, ["diffrate", "bench", "--model", model, "--schedule", schedule, "--batch", "0"])
    _one_line_error(capsys, ["diffrate", "eval", "--model", model, "--schedule", schedule,
                             "--data", str(tmp_path / "nowhere")])


def test_shipped_schedule_of_the_cifar_model_compresses_it(capsys):
    assert main(["diffrate", "flops", "--model", "cifar10-vit", "--schedule", "shipped:cifar10-vit/0.11",
                 "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    assert record["gflops"] <= 0.6 * record["gflops_original"] + 1e-3  # the -40% FLOPs search
    assert main(["diffrate", "flops", "--model", "cifar10-vit", "--schedule", "shipped:cifar10-vit/0.07",
                 "--no-measure", "--json"]) == 0
    record = _last_json(capsys.readouterr().out)
    assert record["gflops"] <= 0.4 * record["gflops_original"] + 1e-3  # the -60% refinement
    assert record["kept_tokens"] == sorted(record["kept_tokens"], reverse=True) and record["kept_tokens"][0] == 65
    assert "no entry '9.9'" in _one_line_error(capsys, ["diffrate", "flops", "--model", "cifar10-vit",
                                                        "--schedule", "shipped:cifar10-vit/9.9"])
