import pytest

from keenvision.diffrate import Schedule, published_schedule, schedule_gflops, vit_cost_config
from keenvision.diffrate.method.baseline import uniform_merge_schedule, uniform_schedule

DEIT_S = vit_cost_config("deit_small_patch16_224")


def test_uniform_merge_schedule_merges_r_per_block_and_never_prunes():
    schedule = uniform_merge_schedule(depth=5, tokens=20, r=3, extra=2)
    assert schedule.prune_kept == (20,) * 5
    assert schedule.merge_kept == (20, 16, 12, 9, 6)  # block 0 untouched, then r + 1, r + 1, r, r
    assert uniform_merge_schedule(5, 20, r=3, skip_first_block=False).merge_kept == (17, 14, 11, 8, 5)
    assert uniform_merge_schedule(4, 10, r=9).merge_kept == (10, 2, 2, 2)  # class token + one patch token survive
    with pytest.raises(ValueError):
        uniform_merge_schedule(4, 10, r=1, extra=4)


@pytest.mark.parametrize("target", [4.0, 2.905, 2.3, 1.0])
def test_uniform_schedule_is_the_closest_from_below(target):
    schedule = uniform_schedule(DEIT_S, target)
    gflops = schedule_gflops(DEIT_S, schedule)
    assert gflops <= target
    build = [uniform_merge_schedule(12, 197, *divmod(step, 11)) for step in range(196 * 11 + 1)]
    step = build.index(schedule)  # the schedule is "r merged per block, r + 1 in the first `extra` blocks"
    r = step // 11
    assert schedule.merge_kept[0] == 197 and step > 0
    # one merged token fewer is above the target; integer r (ToMe) and r + 1 are no closer from below
    assert schedule_gflops(DEIT_S, build[step - 1]) > target
    for candidate in (uniform_merge_schedule(12, 197, r), uniform_merge_schedule(12, 197, r + 1)):
        candidate_gflops = schedule_gflops(DEIT_S, candidate)
        assert candidate_gflops > target or candidate_gflops <= gflops


def test_uniform_schedule_edges():
    full = schedule_gflops(DEIT_S)
    assert uniform_schedule(DEIT_S, full + 1) == Schedule.keep_all(12, 197)
    with pytest.raises(ValueError, match="below"):
        uniform_schedule(DEIT_S, 0.5)
    first = uniform_schedule(DEIT_S, 2.905, skip_first_block=False)
    assert first.merge_kept[0] < 197 and schedule_gflops(DEIT_S, first) <= 2.905
    # at the published 2.9 budget DiffRate keeps a different (non-uniform) profile with the same cost
    published = published_schedule("ViT-S-DeiT", "2.9")
    assert abs(schedule_gflops(DEIT_S, uniform_schedule(DEIT_S, schedule_gflops(DEIT_S, published)))
               - schedule_gflops(DEIT_S, published)) < 0.01
