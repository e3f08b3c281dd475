import math

import pytest
import torch
import yaml

from keenvision.core.weights import save_weights
from keenvision.diffrate import Schedule, is_patched, patch
from keenvision.diffrate.benchmark import resolve_dtype, throughput
from keenvision.diffrate.evaluate import evaluate_top1
from keenvision.diffrate.models import load_model
from keenvision.diffrate.plot import plot_kept_tokens

ARCH = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2, num_classes=10)
COMPRESS = Schedule((65, 60, 50, 40), (65, 55, 45, 30))


@pytest.fixture
def tiny_export(tmp_path, make_vit):
    path = tmp_path / "tiny.safetensors"
    save_weights(make_vit(**ARCH).state_dict(), path, {"architecture": yaml.safe_dump(ARCH)})
    return path


def test_evaluate_top1_on_real_cifar10(data_dir, tiny_export):
    model = load_model(str(tiny_export))
    keep_all = evaluate_top1(model, data_dir / "cifar10", "test", Schedule.keep_all(model), batch_size=10,
                             limit_per_class=2)
    assert keep_all["images"] == 20 and keep_all["classes"] == 10
    assert 0 <= keep_all["top1_original"] <= 1 and keep_all["top1_compressed"] == keep_all["top1_original"]
    result = evaluate_top1(model, data_dir / "cifar10", "test", COMPRESS, batch_size=8, limit_per_class=2)
    assert 0 <= result["top1_compressed"] <= 1 and result["top1_original"] == keep_all["top1_original"]
    assert result["gflops_compressed"] < result["gflops_original"]
    assert not is_patched(model)


def test_evaluate_restores_a_patched_model_and_checks_the_schedule(data_dir, tiny_export):
    model = patch(load_model(str(tiny_export)), COMPRESS, merge_mode="size_weighted")
    only = evaluate_top1(model, data_dir / "cifar10", limit_per_class=1)
    assert set(only) == {"split", "images", "classes", "top1_original"}
    assert is_patched(model) and model.schedule == COMPRESS and model._diffrate_state["merge_mode"] == "size_weighted"
    with pytest.raises(ValueError, match="blocks"):
        evaluate_top1(load_model(str(tiny_export)), data_dir / "cifar10", schedule=Schedule.keep_all(3, 65))


def test_throughput_reports_both_models(make_vit):
    model = make_vit(**ARCH)
    result = throughput(model, COMPRESS, batch=4, repeats=2, warmup=1)
    assert result["images_per_s_original"] > 0 and result["images_per_s_compressed"] > 0
    assert math.isclose(result["speedup"], result["images_per_s_compressed"] / result["images_per_s_original"])
    assert result["flops_ratio"] > 1 and result["dtype"] == "float32" and result["batch"] == 4
    assert not is_patched(model)
    assert resolve_dtype(True, "cpu") == torch.bfloat16 and resolve_dtype(True, "cuda") == torch.float16
    with pytest.raises(ValueError):
        throughput(model, Schedule.keep_all(4, 66), batch=2)


def test_plot_writes_a_png_atomically(tmp_path):
    path = plot_kept_tokens(COMPRESS, 65, tmp_path / "kept.png", title="tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.png"]  # no temporary left behind
    with pytest.raises(FileNotFoundError):
        plot_kept_tokens(COMPRESS, 65, tmp_path / "missing" / "kept.png")
