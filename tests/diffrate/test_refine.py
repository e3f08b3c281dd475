"""Discrete refinement of merge-only schedules: the budget is never exceeded, counts never increase, block 0 stays
whole, the pattern search reaches a known optimum of a synthetic objective, and the distillation objective runs the
real compressed model on real CIFAR-10 images."""

from __future__ import annotations

import json
import math

import pytest

from keenvision.cli import main
from keenvision.diffrate import Schedule, schedule_gflops
from keenvision.diffrate.method.baseline import uniform_schedule
from keenvision.diffrate.models import load_model, model_cost_config
from keenvision.diffrate.search.refine import DistillationObjective, load_images, refine_schedule

TARGET = 0.1097  # -40% of the shipped CIFAR-10 ViT's 0.1829 GMACs


@pytest.fixture(scope="module")
def cifar_config():
    return model_cost_config("cifar10-vit")


def _merge(counts):
    return Schedule((65,) * len(counts), tuple(counts))


def test_pattern_search_walks_to_the_optimum_of_a_synthetic_objective(cifar_config):
    """Objective: squared distance of the kept counts to a schedule that fits the budget. From the uniform
    baseline the search must reach it (or a schedule as good) using only budget-respecting, monotone moves."""
    optimum = [65, 50, 42, 32, 22, 2]
    assert schedule_gflops(cifar_config, _merge(optimum)) <= TARGET
    seen = []

    def distance(schedule):
        seen.append(schedule)
        return float(sum((a - b) ** 2 for a, b in zip(schedule.merge_kept, optimum)))

    start = uniform_schedule(cifar_config, TARGET)
    result = refine_schedule(cifar_config, start, distance, TARGET, max_evaluations=400)
    assert result.start_objective == distance(start) > 0
    assert result.objective < 0.2 * result.start_objective
    assert result.evaluations == len(seen) - 1 <= 400
    for schedule in seen[:-1]:  # every schedule scored, not only the accepted ones
        kept = schedule.merge_kept
        assert kept[0] == 65 and all(a >= b for a, b in zip(kept, kept[1:])) and min(kept) >= 2
        assert schedule.prune_kept == (65,) * 6
        assert schedule_gflops(cifar_config, schedule) <= TARGET + 1e-12
    objectives = [move["objective"] for move in result.history]
    assert objectives == sorted(objectives, reverse=True) and len(set(objectives)) == len(objectives)
    assert result.gflops == schedule_gflops(cifar_config, result.schedule) <= TARGET


def test_over_budget_start_is_cut_under_the_budget(cifar_config):
    over = _merge([65, 55, 38, 43, 17, 3])  # a search result 1% over the target; block 3 is above block 2
    assert schedule_gflops(cifar_config, over) > TARGET
    result = refine_schedule(cifar_config, over, lambda s: float(-sum(s.merge_kept[1:3])), TARGET,
                             max_evaluations=30)
    assert result.gflops <= TARGET
    assert result.history[0]["move"] == "cut"
    # with only one evaluation there is no scoring budget: cuts still bring it under, from the last block back
    quick = refine_schedule(cifar_config, over, lambda s: 0.0, TARGET, max_evaluations=1)
    assert quick.gflops <= TARGET and quick.evaluations == 1 and math.isnan(quick.objective)  # not scored


def test_refine_errors(cifar_config):
    with pytest.raises(ValueError, match="merge-only"):
        refine_schedule(cifar_config, Schedule((65, 60, 50, 40, 30, 20), (65,) * 6), lambda s: 0.0, TARGET)
    with pytest.raises(ValueError, match="below the cheapest"):
        refine_schedule(cifar_config, _merge([65] * 6), lambda s: 0.0, 0.01)
    with pytest.raises(ValueError, match="max_evaluations"):
        refine_schedule(cifar_config, _merge([65] * 6), lambda s: 0.0, TARGET, max_evaluations=0)


def test_distillation_objective_on_real_images(data_dir):
    model = load_model("cifar10-vit")
    images = load_images(model, data_dir / "cifar10", "train", per_class=3)
    assert images.shape == (30, 3, 32, 32)
    objective = DistillationObjective(model, images, batch_size=16)
    keep_all = objective(_merge([65] * 6))
    light, heavy = objective(_merge([65, 60, 55, 50, 45, 40])), objective(_merge([65, 20, 5, 2, 2, 2]))
    assert abs(keep_all) < 1e-5  # no compression: the compressed model is the original
    assert 0 < light < heavy  # KL grows with compression
    assert objective.evaluations == 3
    assert not hasattr(model, "_diffrate_state")  # unpatched after every call


def test_refine_command(data_dir, tmp_path, capsys):
    start = uniform_schedule(model_cost_config("cifar10-vit"), TARGET).save(tmp_path / "uniform.json")
    out = tmp_path / "refined.json"
    argv = ["diffrate", "refine", "--model", "cifar10-vit", "--data", str(data_dir / "cifar10"), "--schedule",
            str(start), "--target-gflops", str(TARGET), "--out", str(out), "--images-per-class", "2",
            "--max-evaluations", "4", "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["gflops"] <= TARGET and record["evaluations"] <= 4 and record["images"] == 20
    assert record["objective"] <= record["objective_start"]
    assert Schedule.load(out).merge_kept == tuple(record["merge_kept"])
    pruning = Schedule((65, 60, 50, 40, 30, 20), (65,) * 6).save(tmp_path / "prunes.json")
    good = out.read_text()
    for change, message in [({"--max-evaluations": "0"}, "--max-evaluations"),
                            ({"--schedule": str(pruning)}, "merge-only"),
                            ({"--target-gflops": "0.01"}, "below the cheapest"),
                            ({"--schedule": str(tmp_path / "missing.json")}, "does not exist")]:
        bad = list(argv)
        for flag, value in change.items():
            bad[bad.index(flag) + 1] = value
        assert main(bad) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error
        assert out.read_text() == good  # a failed run leaves the earlier result alone
