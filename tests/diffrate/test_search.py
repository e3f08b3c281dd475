"""The DiffRate search: masked forward, straight-through masks, GFLOPs, gradients, the Lightning search, search()."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from keenvision.diffrate import Schedule, patch, schedule_gflops
from keenvision.diffrate.data import ImageClassificationData, Preprocessing
from keenvision.diffrate.search import (
    DEFAULT_SEARCH_CONFIG,
    MaskedRateSearch,
    SearchModule,
    load_search_config,
    search,
)

REPO = Path(__file__).resolve().parents[2]
# A merging schedule for the 65-token tiny ViT: block 0 untouched (DeiT), then prune and merge in every block.
COMPRESSING = Schedule((65, 50, 40, 30), (65, 44, 33, 20))


@pytest.fixture(scope="module")
def cifar_batch(data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """40 real CIFAR-10 training images (4 per class) at 32x32: images [40, 3, 32, 32], labels [40]."""
    preprocessing = Preprocessing(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_pct=1.0)
    dataset = ImageClassificationData(data_dir / "cifar10", "train", preprocessing, limit_per_class=4)
    images, labels = zip(*(dataset[index] for index in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels)


def _random_rates(search_model: MaskedRateSearch, seed: int = 0) -> None:
    """Random logits, scaled so that the selected counts spread out (some blocks prune, some merge)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in search_model.rate_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 3)


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_keep_all_rates_give_the_unpatched_logits(make_vit, cifar_batch, global_pool):
    vit = make_vit(global_pool=global_pool)
    images = cifar_batch[0][:8]
    with torch.no_grad():
        expected = vit(images)
        search_model = MaskedRateSearch(vit)
        search_model.select(Schedule.keep_all(vit))
        logits, gflops = search_model(images)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert gflops.item() == pytest.approx(schedule_gflops(vit))
    assert search_model.frozen_blocks == ((0,) if global_pool == "token" else (0, 3))


def test_masks_are_exact_zero_one_prefixes_and_non_increasing(make_vit, cifar_batch):
    search_model = MaskedRateSearch(make_vit())
    _random_rates(search_model)
    search_model(cifar_batch[0][:4])
    kept = search_model.schedule().kept_tokens_per_block(65)
    assert kept[-1] < kept[0] == 65, "the random rates should compress something"
    previous = 65
    for mask, count in zip(search_model.last_masks, kept):
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        # live tokens are a prefix of the sorted sequence, the same count for every image, never growing
        expected = (torch.arange(65) < count).float().expand_as(mask)
        assert torch.equal(mask, expected) and count <= previous
        previous = count


def test_masked_gflops_equal_the_rounded_schedule(make_vit):
    vit = make_vit()
    search_model = MaskedRateSearch(vit)
    for seed in range(3):
        _random_rates(search_model, seed)
        assert search_model.gflops().item() == pytest.approx(schedule_gflops(vit, search_model.schedule()), rel=1e-6)
    lowest, highest = search_model.gflops_range()
    assert lowest == pytest.approx(schedule_gflops(vit, Schedule((65, 2, 2, 2), (65, 2, 2, 2))))
    assert highest == pytest.approx(schedule_gflops(vit))


def test_only_rate_logits_receive_gradients(make_vit, cifar_batch):
    vit = make_vit()
    search_model = MaskedRateSearch(vit)
    images, labels = cifar_batch
    logits, gflops = search_model(images[:8])
    (torch.nn.functional.cross_entropy(logits, labels[:8]) + gflops).backward()
    assert all(not parameter.requires_grad and parameter.grad is None for parameter in vit.parameters())
    trained = {name for name, parameter in search_model.named_parameters() if parameter.requires_grad}
    assert trained == {f"{kind}_rates.{index}.logits" for kind in ("prune", "merge") for index in range(4)}
    # block 0 never compresses: a single candidate, so no gradient; every other rate feels the loss
    assert search_model.prune_rates[0].logits.numel() == 1 and search_model.prune_rates[0].logits.grad.abs().sum() == 0
    assert all(search_model.prune_rates[index].logits.grad.abs().sum() > 0 for index in range(1, 4))
    assert not vit.training and search_model.train().vit.training is False


def test_masked_logits_are_close_to_real_removal_but_not_equal(make_vit, cifar_batch):
    vit = make_vit()
    images = cifar_batch[0][:8]
    search_model = MaskedRateSearch(vit)
    search_model.select(COMPRESSING)
    assert search_model.schedule() == COMPRESSING
    with torch.no_grad():
        masked, _ = search_model(images)
        real = patch(copy.deepcopy(vit), COMPRESSING)(images)
    # Not equal: masked_softmax adds eps/N to every key (removed ones too) and renormalises with +eps, so removed
    # tokens keep ~1e-6 of the attention and the class-attention order can differ at near-ties; the search also
    # runs explicit attention where inference runs the fused kernel. Everything else (sorting with removed tokens
    # last, the same merge sources and destinations, sizes) is the same computation.
    torch.testing.assert_close(masked, real, atol=1e-3, rtol=1e-3)
    assert not torch.equal(masked, real)


def test_lightning_search_steps_move_gflops_towards_the_target(make_vit, cifar_batch):
    vit = make_vit()
    lowest, highest = MaskedRateSearch(vit).gflops_range()
    target = lowest + 0.1 * (highest - lowest)  # uniform start is near the middle: far from the target
    module = SearchModule(vit, target, lr=0.3, min_lr=0.03)
    loader = DataLoader(TensorDataset(*cifar_batch), batch_size=8, shuffle=True)
    trainer = L.Trainer(max_steps=12, max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, loader)
    start_gap = abs(module.history[0]["gflops"] - target)
    end_gap = abs(module.search_model.gflops().item() - target)
    assert len(module.history) == 12 and end_gap < 0.7 * start_gap
    assert all(not parameter.requires_grad for parameter in vit.parameters())


def test_search_returns_a_valid_schedule_near_the_target(make_vit, data_dir, tmp_path):
    vit = make_vit()
    lowest, highest = MaskedRateSearch(copy.deepcopy(vit)).gflops_range()  # (MaskedRateSearch freezes its ViT)
    target = lowest + 0.3 * (highest - lowest)
    out = tmp_path / "schedule.json"
    overrides = {"max_steps": 15, "epochs": 100, "batch_size": 8, "lr": 0.5, "limit_per_class": 4, "num_workers": 0,
                 "distill": True}
    schedule = search(vit, data_dir / "cifar10", target, out=out, overrides=overrides)
    schedule.validate(4, 65, min_tokens=1)
    assert schedule.prune_kept[0] == schedule.merge_kept[0] == 65
    assert Schedule.load(out) == schedule
    assert abs(schedule_gflops(vit, schedule) - target) < 0.25 * (highest - lowest)
    # the caller's model comes back as it was (trainable, eval mode)
    assert all(parameter.requires_grad for parameter in vit.parameters()) and not vit.training


@pytest.mark.parametrize("where", ["below", "above"])
def test_unreachable_targets_raise(make_vit, tmp_path, where):
    vit = make_vit()
    lowest, highest = MaskedRateSearch(vit).gflops_range()
    target = lowest * 0.99 if where == "below" else highest * 1.01
    with pytest.raises(ValueError, match="outside what the search can reach") as error:
        search(vit, tmp_path, target)
    assert "\n" not in str(error.value)


def test_config_file_matches_the_defaults_and_rejects_unknown_keys():
    path = REPO / "configs" / "diffrate" / "search.yaml"
    assert yaml.safe_load(path.read_text()) == DEFAULT_SEARCH_CONFIG
    assert load_search_config(path, {"lr": 0.1, "max_steps": None})["lr"] == 0.1
    with pytest.raises(ValueError, match="unknown config keys"):
        load_search_config(None, {"learning_rate": 0.1})


def test_recipe_files_load_and_bad_recipes_are_one_line_errors(tmp_path):
    for recipe in sorted((REPO / "configs" / "diffrate").glob("*search*.yaml")):
        assert set(load_search_config(recipe)) == set(DEFAULT_SEARCH_CONFIG)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("lr: [0.1\n")
    with pytest.raises(ValueError, match="is not a mapping of keys to values"):
        load_search_config(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="not a readable YAML recipe"):
        load_search_config(tmp_path / "broken.yaml")


@pytest.mark.parametrize("schedule", [COMPRESSING, Schedule((65,) * 4, (65, 64, 30, 3)), Schedule.keep_all(4, 65)])
def test_a_started_search_selects_its_start_and_keeps_a_gradient(make_vit, cifar_batch, schedule):
    search_model = MaskedRateSearch(make_vit())
    search_model.start_from(schedule)
    assert search_model.schedule() == schedule
    logits, gflops = search_model(cifar_batch[0][:8])
    assert gflops.item() == pytest.approx(schedule_gflops(search_model.vit, schedule))
    (torch.nn.functional.cross_entropy(logits, cifar_batch[1][:8]) + gflops).backward()
    # every compressible rate can still move (soft distribution), the frozen block 0 has one candidate only
    moving = [rate.logits.grad.abs().sum().item() for rate in search_model.merge_rates[1:]]
    assert all(value > 0 for value in moving)


def test_search_started_at_the_uniform_baseline_stays_there_without_learning(make_vit, data_dir):
    from keenvision.diffrate.method.baseline import uniform_schedule

    vit = make_vit()
    target = 0.6 * schedule_gflops(vit)
    overrides = {"max_steps": 1, "batch_size": 8, "lr": 1e-9, "min_lr": 1e-10, "limit_per_class": 1,
                 "num_workers": 0, "init": "uniform"}
    assert search(vit, data_dir / "cifar10", target, overrides=overrides) == uniform_schedule(vit, target)


def test_merge_only_search_keeps_every_token_from_pruning(make_vit, data_dir):
    vit = make_vit()
    search_model = MaskedRateSearch(copy.deepcopy(vit), merge_only=True)
    assert search_model.rate_parameters() and all(len(rate.candidates) == 1 for rate in search_model.prune_rates)
    lowest, highest = search_model.gflops_range()
    assert lowest == pytest.approx(MaskedRateSearch(copy.deepcopy(vit)).gflops_range()[0])  # merging reaches it
    target = lowest + 0.3 * (highest - lowest)
    overrides = {"max_steps": 15, "epochs": 100, "batch_size": 8, "lr": 0.5, "limit_per_class": 4, "num_workers": 0,
                 "merge_only": True}
    schedule = search(vit, data_dir / "cifar10", target, overrides=overrides)
    # no block prunes: each block's prune step keeps what the block before left (65 at block 0)
    assert schedule.prune_kept[0] == 65
    assert all(kept >= left for kept, left in zip(schedule.prune_kept[1:], schedule.merge_kept[:-1]))
    assert schedule.merge_kept[-1] < 65 and abs(schedule_gflops(vit, schedule) - target) < 0.25 * (highest - lowest)
