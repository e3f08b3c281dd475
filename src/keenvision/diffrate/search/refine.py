"""Discrete refinement of a merge-only schedule at an exact FLOPs budget (our addition; not in the paper).

The differentiable search follows straight-through gradients from its start and can stop at a schedule that its
own objective ranks below a nearby one: on the shipped CIFAR-10 ViT, the distillation loss of a hand-made schedule
at 0.1096 GMACs was 0.0118 on 5,000 training images against 0.0136 for a searched one at 0.1109 (docs/diffrate.md).
`refine_schedule` polishes a searched schedule with a pattern search on that same objective, evaluated exactly
(real token removal through :func:`~keenvision.diffrate.patch.patch`) on a fixed set of training images:

- the objective is the mean KL(original || compressed) of the softmax outputs, the search's ``distill`` loss;
- a move keeps ``step`` more tokens after block ``i`` and then as few fewer after block ``j`` as bring the cost back
  under the budget (later blocks follow, counts never increase); steps shrink 4 -> 2 -> 1 when no move helps;
- the first move that lowers the objective is taken (a budget of objective evaluations bounds the run time);
- a schedule over budget is first brought under it by single-token cuts, the cheapest in objective first.

Block 0 stays uncompressed, as in the search (class attention there is not yet informative).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..data import ImageClassificationData, Preprocessing
from ..method.flops import schedule_gflops, vit_cost_config
from ..method.patch import is_patched, patch, unpatch
from ..method.schedule import Schedule

DEFAULT_STEPS = (4, 2, 1)


class DistillationObjective:
    """``objective(schedule) -> float``: mean KL(original || compressed) over fixed images; lower is better.

    The original model's log-probabilities are computed once; every call patches the model with the schedule, runs
    the images through it and unpatches it. ``evaluations`` counts the calls.

    Args:
        model: an unpatched timm VisionTransformer (eval mode is used; the mode is restored).
        images: [N, 3, H, W] normalised images.
        batch_size: images per forward.
    """

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, batch_size: int = 250) -> None:
        if is_patched(model):
            raise ValueError("DistillationObjective needs an unpatched model")
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"need a non-empty [N, 3, H, W] image batch, got shape {tuple(images.shape)}")
        self.model, self.batches, self.num_images = model, images.split(batch_size), len(images)
        self.evaluations = 0
        with torch.no_grad(), _eval_mode(model):
            self.reference = [model(batch).log_softmax(-1) for batch in self.batches]

    def __call__(self, schedule: Schedule) -> float:
        self.evaluations += 1
        total = 0.0
        with torch.no_grad(), _eval_mode(self.model):
            patch(self.model, schedule)
            try:
                for batch, reference in zip(self.batches, self.reference):
                    compressed = self.model(batch).log_softmax(-1)
                    total += F.kl_div(compressed, reference, log_target=True, reduction="sum").item()
            finally:
                unpatch(self.model)
        return total / self.num_images


def load_images(model: torch.nn.Module, data_dir: object, split: str = "train", per_class: int = 200) -> torch.Tensor:
    """The first `per_class` images of every class of ``data_dir``/`split`, preprocessed for `model`; [N, 3, H, W]."""
    dataset = ImageClassificationData(data_dir, split, Preprocessing.for_model(model), per_class)
    return torch.stack([dataset[index][0] for index in range(len(dataset))])


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclasses.dataclass
class RefineResult:
    """What :func:`refine_schedule` found: the schedule, its objective and cost, and the way there."""

    schedule: Schedule
    objective: float
    start_objective: float
    gflops: float
    evaluations: int
    history: list[dict]  # one entry per accepted move: {"kept", "objective", "gflops", "move"}


def _merge_only(tokens: int, kept: Sequence[int]) -> Schedule:
    return Schedule((tokens,) * len(kept), tuple(int(count) for count in kept))


def _non_increasing(kept: list[int]) -> list[int]:
    return list(itertools.accumulate(kept, min))


def _lowered(kept: list[int], block: int) -> list[int]:
    """One token fewer after `block`; later blocks follow so that counts never increase."""
    return _non_increasing(kept[:block] + [kept[block] - 1] + kept[block + 1:])


def refine_schedule(
    model_or_config: object,
    schedule: Schedule,
    objective: Callable[[Schedule], float],
    target_gflops: float,
    *,
    steps: Sequence[int] = DEFAULT_STEPS,
    max_evaluations: int = 40,
    frozen_blocks: Sequence[int] = (0,),
    progress: Callable[[dict], None] | None = None,
) -> RefineResult:
    """Pattern search on per-block kept counts of a merge-only `schedule` under ``gflops <= target_gflops``.

    Args:
        model_or_config: what :func:`~keenvision.diffrate.flops.vit_cost_config` accepts (the cost formula).
        schedule: the start (prune counts must keep every token: search with ``merge_only``).
        objective: lower is better, e.g. a :class:`DistillationObjective`.
        target_gflops: the budget (GMACs, the paper's formula); the result never exceeds it.
        steps: move sizes in tokens, tried in this order.
        max_evaluations: objective calls at most (the start counts as one).
        frozen_blocks: blocks whose count stays at the input token count.
        progress: called with each accepted move's history entry (e.g. to print it).

    Raises:
        ValueError: a schedule that prunes, or a budget the schedule cannot be brought under.
    """
    config = vit_cost_config(model_or_config)
    tokens, floor = config.tokens, config.num_prefix_tokens + 1
    schedule.validate(config.depth, tokens, config.num_prefix_tokens)
    if any(count < tokens for count in schedule.prune_kept):
        raise ValueError("refine works on merge-only schedules (prune counts keep all tokens; search with "
                         "--merge-only)")
    if max_evaluations < 1 or any(step < 1 for step in steps):
        raise ValueError(f"need max_evaluations >= 1 and steps >= 1, got {max_evaluations} and {list(steps)}")
    frozen = {block % config.depth for block in frozen_blocks}
    free = [block for block in range(config.depth) if block not in frozen]
    kept = _non_increasing([tokens if block in frozen else count
                            for block, count in enumerate(schedule.kept_tokens_per_block(tokens))])
    cost = lambda counts: schedule_gflops(config, _merge_only(tokens, counts))  # noqa: E731
    lowest = _non_increasing([tokens if block in frozen else floor for block in range(config.depth)])
    if cost(lowest) > target_gflops:
        raise ValueError(f"target {target_gflops:g} GFLOPs is below the cheapest schedule ({cost(lowest):.4f})")

    evaluations = 0

    def score(counts: list[int]) -> float:
        nonlocal evaluations
        evaluations += 1
        return float(objective(_merge_only(tokens, counts)))

    best = score(kept)
    start = best
    history: list[dict] = []

    def accept(entry: dict) -> None:
        history.append(entry)
        if progress is not None:
            progress(entry)

    # over budget: single-token cuts, the one that hurts the objective least first
    while cost(kept) > target_gflops and evaluations < max_evaluations:
        cuts = [_lowered(kept, block)
                for block in free if kept[block] > floor]
        scored = []
        for cut in cuts:
            if evaluations >= max_evaluations:
                break
            scored.append((score(cut), cut))
        best, kept = min(scored)
        accept({"kept": kept, "objective": best, "gflops": cost(kept), "move": "cut"})
    if cost(kept) > target_gflops:  # out of evaluations: finish the cuts from the last block back, unscored
        for block in reversed(free):
            while cost(kept) > target_gflops and kept[block] > floor:
                kept = _lowered(kept, block)
        best = score(kept) if evaluations < max_evaluations else float("nan")  # nan: not scored

    def fit(counts: list[int], donor: int) -> list[int] | None:
        """Lower `donor`'s count (later blocks follow) until the cost is within budget; None if impossible."""
        while cost(counts) > target_gflops:
            if counts[donor] <= floor:
                return None
            counts = _lowered(counts, donor)
        return counts

    for step in steps:
        improved = True
        while improved and evaluations < max_evaluations:
            improved = False
            for receiver, donor in itertools.permutations(free, 2):
                if evaluations >= max_evaluations:
                    break
                previous = tokens if receiver == 0 else kept[receiver - 1]
                if kept[receiver] + step > previous:
                    continue  # counts never increase along the network
                grown = kept[:receiver] + [kept[receiver] + step] + kept[receiver + 1:]
                candidate = fit(grown, donor)
                if candidate is None or candidate == kept:
                    continue
                value = score(candidate)
                if value < best:
                    best, kept, improved = value, candidate, True
                    accept({"kept": kept, "objective": best, "gflops": cost(kept),
                            "move": f"+{step} after block {receiver}, fewer after block {donor}"})
                    break
    return RefineResult(_merge_only(tokens, kept), best, start, cost(kept), evaluations, history)
