"""DiffRate's compression-rate search: a masked forward of a frozen timm ViT and a Lightning module training the rates.

During search (Chen et al., ICCV 2023, Sec. 3; notes "Differentiable rate") the token sequence keeps its full
length. Every block owns a prune and a merge :class:`~keenvision.diffrate.rate.DifferentiableRate`; a block sorts
its tokens by class attention as at inference, and instead of removing tokens it multiplies a hard 0/1 mask with a
straight-through gradient into a running mask. The running mask is a key mask in attention
(:func:`~keenvision.diffrate.rate.masked_softmax`), so masked tokens stop influencing live ones; tokens masked by
the merge step are first averaged into their most similar live destination, as at inference. The loss is the task
loss plus ``lambda * (GFLOPs - target)^2`` on the differentiable GFLOPs of the counts; only the rate logits train.

Checked against the public search code (OpenGVLab/DiffRate, ``DiffRate/patch/deit.py``, ``ddp.py``, ``engine.py``):
the same mask rule (a step only masks when it removes tokens; positions past the current count stay 1 in the new
step's hard mask so earlier rates keep their gradient path), the same merge (sources stay in the sequence, masked),
the same frozen blocks (DeiT: block 0; global-pool/MAE: first and last), the same loss and optimiser.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ...core.recipe import Section, recipe_defaults, typed_recipe
from ...core.training import build_trainer
from ..method.flops import schedule_gflops
from ..method.merge import (
    class_attention_importance,
    gather_tokens,
    match_to_destinations,
    merge_tokens,
    proportional_attention_bias,
    similarity_weighted_sizes,
)
from ..method.patch import _check_supported
from ..method.schedule import Schedule
from .rate import DifferentiableRate, compression_loss, differentiable_gflops, masked_softmax, schedule_from_rates


# Defaults of the public ImageNet recipe (notes "Differentiable rate"; public engine.py/main.py): 3 epochs, AdamW on
# the rate logits only, lr 0.01 cosine-decayed to 0.001, no weight decay, lambda = 5, granularity 1. The batch is
# per device (the paper used 4 x 256). configs/diffrate/search.yaml repeats these values (a test keeps them equal).
@dataclass
class SearchRecipe(Section):
    """The search settings, typed (`core.recipe.typed_recipe` checks a YAML recipe and overrides against them)."""

    epochs: int = 3
    max_steps: int | None = None  # None: run `epochs`; an integer stops earlier
    batch_size: int = 256
    lr: float = 0.01
    min_lr: float = 0.001
    weight_decay: float = 0.0
    lambda_flops: float = 5.0
    granularity: int = 1
    frozen_blocks: list[int] | None = None  # None: DeiT-style [0]; global-pool (MAE) models [0, depth - 1]
    distill: bool = False  # True: match the uncompressed model's logits instead of the labels
    proportional_attention: bool = True
    limit_per_class: int | None = None
    num_workers: int = 2
    seed: int = 0
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    log_every_n_steps: int = 10
    # None: zero logits (uniform over candidates, the public code); "uniform": start at the ToMe-like baseline at
    # the target; or a schedule (file / published:...) to start from
    init: str | None = None
    init_spread: float = 2.0  # tokens: width of the distribution a started search puts around its start counts
    merge_only: bool = False  # True: prune rates fixed at "keep all"; only the merge rates are searched


DEFAULT_SEARCH_CONFIG: dict[str, Any] = recipe_defaults(SearchRecipe)


def load_search_config(path: str | Path | None = None, overrides: dict | None = None) -> SearchRecipe:
    """The search settings: :class:`SearchRecipe`'s defaults, then a YAML file, then flat `overrides` (None
    skipped). An unknown key or a wrong type is a one-line ValueError naming it (`core.recipe.typed_recipe`)."""
    return typed_recipe(SearchRecipe, path, overrides)


def default_frozen_blocks(model: nn.Module) -> tuple[int, ...]:
    """Blocks the search never compresses: block 0 (DeiT patch), plus the last block for global-pool models (MAE).

    The public code leaves the first block alone because class attention there is not yet informative, and for
    MAE (global average pooling, no class-token readout) also the last one (``patch/mae.py``).
    """
    depth = len(model.blocks)
    if getattr(model, "global_pool", "token") == "avg" and depth > 1:
        return (0, depth - 1)
    return (0,)


def _straight_through_step_mask(
    rate: DifferentiableRate, kept: int, current: int, tokens: int
) -> torch.Tensor:
    """Hard 0/1 mask of one prune or merge step with the survival probabilities' gradient; [tokens].

    Positions [kept, current) are 0; positions below `kept` and at or past `current` (already masked by earlier
    steps) are 1, as in the public ``get_token_mask(token_number)``: a 1 there lets the gradient of earlier steps'
    masks pass through this product. Built as ``hard + (pi - pi.detach())`` rather than ``hard - pi.detach() + pi``:
    the same value and gradient, but the value is exactly `hard` (no float round-off around 1).
    """
    probability = rate.survival_probability(tokens)
    positions = torch.arange(tokens, device=probability.device)
    hard = ((positions < kept) | (positions >= current)).to(probability.dtype)
    return hard + (probability - probability.detach())


class MaskedRateSearch(nn.Module):
    """A frozen timm ViT with one prune and one merge rate per block, run with masks instead of token removal.

    Args:
        vit: a timm ``VisionTransformer`` with timm's ``Block``/``Attention`` (as :func:`keenvision.diffrate.patch`
            accepts) and token or average pooling. Its parameters are frozen (``requires_grad=False``) and it is
            kept in eval mode; it is not patched or otherwise modified.
        granularity: gap between candidate kept counts of the compressed blocks.
        frozen_blocks: indices of blocks that never compress (None: :func:`default_frozen_blocks`). Their rates
            have the single candidate "all patches" (the public code's granularity ``num_patches + 1``).
        proportional_attention: add log(size) to the attention logits (as at inference).
        merge_only: fix every prune rate at "keep all" (one candidate) and search the merge rates only. On small
            models where dropping tokens costs far more accuracy than merging them (docs/diffrate.md), this keeps
            the search from spending FLOPs reductions on pruning.

    Attributes:
        prune_rates, merge_rates: one :class:`DifferentiableRate` per block; their logits are the only parameters
            that train.
    """

    def __init__(
        self,
        vit: nn.Module,
        granularity: int = 1,
        frozen_blocks: Sequence[int] | None = None,
        proportional_attention: bool = True,
        merge_only: bool = False,
    ) -> None:
        super().__init__()
        _check_supported(vit)
        pool = getattr(vit, "global_pool", "token")
        if vit.attn_pool is not None or pool not in ("token", "avg"):
            raise ValueError(f"the DiffRate search supports token or avg pooling, not {pool!r}")
        if getattr(vit, "cls_token", None) is None:
            raise ValueError("the DiffRate search sorts tokens by class attention and needs a class token")
        self.vit = vit.eval().requires_grad_(False)
        depth = len(vit.blocks)
        self.num_patches = int(vit.patch_embed.num_patches)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.frozen_blocks = tuple(default_frozen_blocks(vit) if frozen_blocks is None else frozen_blocks)
        if any(not 0 <= index < depth for index in self.frozen_blocks):
            raise ValueError(f"frozen_blocks {list(self.frozen_blocks)} out of range for {depth} blocks")
        self.proportional_attention = proportional_attention

        self.merge_only = merge_only

        def rate(index: int, fixed: bool = False) -> DifferentiableRate:
            # one candidate, "all patches", is how a rate is held fixed (the public code's granularity N + 1)
            block_granularity = self.num_patches + 1 if fixed or index in self.frozen_blocks else granularity
            return DifferentiableRate(self.num_patches, block_granularity, self.num_prefix_tokens)

        self.prune_rates = nn.ModuleList(rate(index, fixed=merge_only) for index in range(depth))
        self.merge_rates = nn.ModuleList(rate(index) for index in range(depth))
        # [B, N] running masks after each block of the last forward, detached, in that block's sorted order
        # (for inspection and tests).
        self.last_masks: list[torch.Tensor] = []

    def train(self, mode: bool = True) -> MaskedRateSearch:
        """Only the rates follow `mode`; the frozen ViT stays in eval mode (no dropout or drop-path)."""
        super().train(mode)
        self.vit.eval()
        return self

    def rate_parameters(self) -> list[nn.Parameter]:
        """The logits of every rate module (what the optimiser trains)."""
        return [rate.logits for rates in (self.prune_rates, self.merge_rates) for rate in rates]

    def kept_counts(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Straight-through kept counts (scalar tensors, integer values) of the prune and merge steps, per block."""
        return [rate.kept_tokens() for rate in self.prune_rates], [rate.kept_tokens() for rate in self.merge_rates]

    def gflops(self) -> torch.Tensor:
        """Differentiable GFLOPs (GMACs, the paper's formula) of the counts the rates currently select; scalar."""
        return differentiable_gflops(self.vit, *self.kept_counts())

    def schedule(self) -> Schedule:
        """The integer :class:`Schedule` the rates currently select."""
        return schedule_from_rates(self.prune_rates, self.merge_rates)

    def gflops_range(self) -> tuple[float, float]:
        """(lowest, highest) GFLOPs the search can reach: smallest candidates everywhere, or nothing compressed."""
        lowest = self.num_prefix_tokens + int(min(rate.candidates.min().item() for rate in self.merge_rates))
        depth, tokens = len(self.prune_rates), self.num_patches + self.num_prefix_tokens
        counts = tuple(tokens if index in self.frozen_blocks else lowest for index in range(depth))
        return schedule_gflops(self.vit, Schedule(counts, counts)), schedule_gflops(self.vit)

    @torch.no_grad()
    def start_from(self, schedule: Schedule, spread: float = 2.0) -> None:
        """Start every rate at `schedule`'s count with a soft distribution around it.

        Logits ``-(c_i - mu)^2 / (2 spread^2)`` with the centre ``mu`` bisected so that the expected count is the
        schedule's count minus 0.5: STE-ceil then selects exactly that count (also next to the largest candidate,
        where the distribution is one-sided), while the neighbours keep probability and so a gradient. Unlike
        :meth:`select`, the search can move on from there. A count at the smallest candidate is selected hard.
        """
        if spread <= 0:
            raise ValueError(f"init_spread must be > 0, got {spread}")
        depth, tokens = len(self.prune_rates), self.num_patches + self.num_prefix_tokens
        schedule.validate(depth, tokens, min_tokens=self.num_prefix_tokens + 1)
        for rates, counts in ((self.prune_rates, schedule.prune_kept), (self.merge_rates, schedule.merge_kept)):
            for rate, count in zip(rates, counts):
                candidates = rate.candidates.double()
                wanted = count - self.num_prefix_tokens
                if len(candidates) == 1:
                    continue
                if wanted <= candidates.min():
                    self.select_rate(rate, wanted)
                    continue
                low, high = float(candidates.min()) - 10 * spread, float(candidates.max()) + 10 * spread
                for _ in range(60):  # the expectation grows with mu: bisect to wanted - 0.5
                    middle = (low + high) / 2
                    logits = -((candidates - middle) ** 2) / (2 * spread**2)
                    if float(candidates @ logits.softmax(0)) < wanted - 0.5:
                        low = middle
                    else:
                        high = middle
                rate.logits.copy_((-((candidates - low) ** 2) / (2 * spread**2)).float())

    @staticmethod
    @torch.no_grad()
    def select_rate(rate: DifferentiableRate, patches: float, confidence: float = 100.0) -> None:
        """Make `rate` select the candidate nearest to `patches` (almost surely; no gradient left)."""
        nearest = (rate.candidates - patches).abs().argmin()
        rate.logits.zero_()
        rate.logits[nearest] = confidence

    @torch.no_grad()
    def select(self, schedule: Schedule, confidence: float = 100.0) -> None:
        """Set every rate to (almost surely) select the candidate nearest to `schedule`'s count.

        A logit of 100 over zeros makes the other candidates' probabilities underflow in fp32, so the expectation
        is exactly that candidate and STE-ceil keeps it; the gradient then vanishes (use for evaluation and tests).
        """
        depth, tokens = len(self.prune_rates), self.num_patches + self.num_prefix_tokens
        schedule.validate(depth, tokens, min_tokens=self.num_prefix_tokens + 1)
        for rates, counts in ((self.prune_rates, schedule.prune_kept), (self.merge_rates, schedule.merge_kept)):
            for rate, count in zip(rates, counts):
                self.select_rate(rate, count - self.num_prefix_tokens, confidence)

    def _attention(
        self, attention: nn.Module, x: torch.Tensor, size: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """timm ``Attention`` with proportional attention and the key mask; explicit (not fused) to expose it.

        Args:
            attention: the block's timm Attention.
            x: [B, N, C] normalised tokens.
            size: [B, N] token sizes.
            mask: [B, N] running 0/1 keep mask.

        Returns:
            output [B, N, C] and attention probabilities [B, H, N, N].
        """
        batch, tokens, _ = x.shape
        gate = attention.gate(x).sigmoid() if getattr(attention, "gate", None) is not None else None
        qkv = attention.qkv(x).reshape(batch, tokens, 3, attention.num_heads, attention.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attention.q_norm(q), attention.k_norm(k)
        logits = (q * attention.scale) @ k.transpose(-2, -1)
        if self.proportional_attention:
            logits = logits + proportional_attention_bias(size).to(logits.dtype)
        probabilities = masked_softmax(logits, mask)
        out = (attention.attn_drop(probabilities) @ v).transpose(1, 2).reshape(batch, tokens, -1)
        out = attention.norm(out)
        if gate is not None:
            out = out * gate
        return attention.proj_drop(attention.proj(out)), probabilities

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked search forward.

        Args:
            images: [B, 3, H, W] normalised images.

        Returns:
            logits [B, num_classes] and the differentiable GFLOPs (scalar) of the counts used.
        """
        vit = self.vit
        prefix = self.num_prefix_tokens
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        batch, tokens, _ = x.shape
        size = torch.ones(batch, tokens, device=x.device, dtype=torch.float32)
        mask = torch.ones(batch, tokens, device=x.device, dtype=torch.float32)
        current = tokens  # live tokens (mask == 1), always a prefix of the sorted sequence; same for every image
        prune_counts, merge_counts = self.kept_counts()
        self.last_masks = []
        for block, prune_rate, merge_rate, prune_count, merge_count in zip(
            vit.blocks, self.prune_rates, self.merge_rates, prune_counts, merge_counts
        ):
            prune_kept, merge_kept = int(prune_count.item()), int(merge_count.item())
            attention_out, probabilities = self._attention(block.attn, block.norm1(x), size, mask)
            x = x + block.drop_path1(block.ls1(attention_out))
            if min(prune_kept, merge_kept) < current:
                # Sort by class attention; masked tokens get -inf so they stay behind every live token (their
                # attention is ~eps anyway, as in the public code; -inf makes the order exact).
                importance = class_attention_importance(probabilities, prefix)
                importance = importance.masked_fill(mask[:, prefix:] == 0, -torch.inf)
                patch_order = torch.sort(importance, dim=1, descending=True, stable=True).indices + prefix
                order = torch.cat([torch.arange(prefix, device=x.device).expand(batch, prefix), patch_order], dim=1)
                x, size, mask = gather_tokens(x, order), gather_tokens(size, order), gather_tokens(mask, order)
                if prune_kept < current:
                    mask = mask * _straight_through_step_mask(prune_rate, prune_kept, current, tokens)
                    current = prune_kept
                if merge_kept < current:
                    x, size = self._merge(x, size, merge_kept, current)
                    mask = mask * _straight_through_step_mask(merge_rate, merge_kept, current, tokens)
                    current = merge_kept
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
            self.last_masks.append(mask.detach())
        x = vit.norm(x)
        if vit.global_pool == "avg":
            # Size-weighted mean of live patch tokens (inference's pooling); the mask keeps its gradient, the
            # normaliser is detached as in the public MAE search code.
            weight = (size * mask)[:, prefix:].unsqueeze(-1).to(x.dtype)
            pooled = (x[:, prefix:] * weight).sum(dim=1) / weight.sum(dim=1).detach()
        else:
            pooled = x[:, 0]
        logits = vit.head(vit.head_drop(vit.fc_norm(pooled)))
        return logits, differentiable_gflops(vit, prune_counts, merge_counts)

    def _merge(
        self, x: torch.Tensor, size: torch.Tensor, kept: int, current: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Average live sources [kept, current) into their most similar destination in [P, kept); [B, N, C], [B, N].

        The sources stay in the sequence (the caller masks them), as the public search code's ``merge(...,
        training=True)`` does; masked tokens past `current` are untouched. Sizes follow our inference merge
        (:func:`similarity_weighted_sizes`, similarity clamped at 0) so that search and inference agree; the public
        search code clamps the weighted source size at 1 instead, which only differs for dissimilar sources.
        """
        live = x[:, :current]
        destination, similarity = match_to_destinations(live.detach(), kept, self.num_prefix_tokens)
        merged = merge_tokens(live, destination, kept, reduce="mean")
        merged_size = similarity_weighted_sizes(size[:, :current], destination, similarity, kept)
        return torch.cat([merged, x[:, kept:]], dim=1), torch.cat([merged_size, size[:, kept:]], dim=1)


class SearchModule(L.LightningModule):
    """Lightning module of the DiffRate search: trains only the rate logits of a :class:`MaskedRateSearch`.

    Loss = CE(logits, labels) (soft labels accepted) or, with ``distill=True``, CE against the softmax of the
    uncompressed ViT's logits, plus ``lambda_flops * (GFLOPs - target_gflops)^2`` (public ``engine.py``). AdamW,
    lr cosine-decayed per step from `lr` to `min_lr`, no weight decay. Nothing assumes a ``.module`` wrapper, so it
    runs under DDP or on one CPU alike.
    """

    def __init__(
        self,
        vit: nn.Module,
        target_gflops: float,
        lr: float = 0.01,
        min_lr: float = 0.001,
        weight_decay: float = 0.0,
        lambda_flops: float = 5.0,
        granularity: int = 1,
        frozen_blocks: Sequence[int] | None = None,
        distill: bool = False,
        proportional_attention: bool = True,
        merge_only: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["vit"])
        self.search_model = MaskedRateSearch(vit, granularity, frozen_blocks, proportional_attention, merge_only)
        lowest, highest = self.search_model.gflops_range()
        check_target(target_gflops, lowest, highest)
        self.target_gflops = float(target_gflops)
        self.history: list[dict[str, float]] = []  # per training step: gflops, losses (for reports and tests)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, H, W] -> (logits [B, K], differentiable GFLOPs scalar)."""
        return self.search_model(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        images, labels = batch
        logits, gflops = self.search_model(images)
        if self.hparams.distill:
            with torch.no_grad():
                teacher = self.search_model.vit(images).softmax(dim=-1)
            task_loss = F.cross_entropy(logits, teacher)
        else:
            task_loss = F.cross_entropy(logits, labels)
        flops_loss = compression_loss(gflops, self.target_gflops, self.hparams.lambda_flops)
        loss = task_loss + flops_loss
        self.log_dict({"search/task_loss": task_loss, "search/flops_loss": flops_loss, "search/gflops": gflops},
                      prog_bar=True, batch_size=images.shape[0])
        self.history.append({"step": float(self.global_step), "gflops": float(gflops.detach()),
                             "task_loss": float(task_loss.detach()), "flops_loss": float(flops_loss.detach())})
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.search_model.rate_parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        floor = self.hparams.min_lr / self.hparams.lr

        def factor(step: int) -> float:
            progress = min(1.0, step / total_steps)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def schedule(self) -> Schedule:
        """The integer schedule the rates currently select (non-increasing effective counts)."""
        return self.search_model.schedule()


def check_target(target_gflops: float, lowest: float, highest: float) -> None:
    """One-line ValueError unless ``lowest <= target_gflops <= highest``."""
    if not math.isfinite(target_gflops) or not lowest <= target_gflops <= highest:
        raise ValueError(f"target {target_gflops} GFLOPs is outside what the search can reach: "
                         f"[{lowest:.4f}, {highest:.4f}] (everything compressed .. nothing compressed)")


def initial_schedule(vit: nn.Module, init: str | Schedule, target_gflops: float) -> Schedule:
    """The schedule a started search begins at: "uniform" (the ToMe-like baseline at the target) or a schedule."""
    if isinstance(init, Schedule):
        return init
    if init == "uniform":
        from ..method.baseline import uniform_schedule

        return uniform_schedule(vit, target_gflops)
    from ..models import load_schedule

    return load_schedule(str(init), vit)


def _preprocessing(vit: nn.Module, preprocessing_class: type) -> Any:
    """``Preprocessing.for_model(vit)`` at the size the ViT's patch embedding takes.

    A bare ``VisionTransformer(img_size=32)`` carries timm's default 224 pretrained config, which its patch
    embedding would reject; the embedding's ``img_size`` is what the model can actually run.
    """
    preprocessing = preprocessing_class.for_model(vit)
    image_size = int(vit.patch_embed.img_size[0])
    if preprocessing.size != image_size and not getattr(vit.patch_embed, "dynamic_img_size", False):
        preprocessing = dataclasses.replace(preprocessing, size=image_size)
    return preprocessing


def search(
    model: str | torch.nn.Module,
    data_dir: str | Path,
    target_gflops: float,
    out: str | Path | None = None,
    overrides: dict | None = None,
    config: str | Path | None = None,
) -> Schedule:
    """Search a DiffRate schedule for `model` reaching `target_gflops` (GMACs, the paper's unit) on `data_dir`.

    Args:
        model: a name for :func:`keenvision.diffrate.models.load_model` or a timm ``VisionTransformer``. A given
            module is not modified (its ``requires_grad`` flags and train/eval mode are restored).
        data_dir: images in a layout :class:`ImageClassificationData` reads (split ``train``).
        target_gflops: the cost to reach; must lie between the fully compressed and the uncompressed cost.
        out: where to save the schedule JSON (:meth:`Schedule.save`), or None.
        overrides: flat settings over :data:`DEFAULT_SEARCH_CONFIG` (``max_steps``, ``batch_size``, ``lr``,
            ``lambda_flops``, ``granularity``, ``distill``, ``limit_per_class``, ``num_workers``, ...).
        config: a search recipe YAML (e.g. ``configs/diffrate/search.yaml``) between the defaults and
            `overrides`.

    Returns:
        The searched :class:`Schedule` (integer counts per block, class token included).
    """
    from ..data import ImageClassificationData, Preprocessing
    from ..models import load_model

    config = load_search_config(config, overrides)
    vit = load_model(model) if isinstance(model, str) else model
    requires_grad = [parameter.requires_grad for parameter in vit.parameters()]
    was_training = vit.training
    try:
        L.seed_everything(config.seed, workers=True, verbose=False)
        module = SearchModule(
            vit, target_gflops, lr=config.lr, min_lr=config.min_lr, weight_decay=config.weight_decay,
            lambda_flops=config.lambda_flops, granularity=config.granularity,
            frozen_blocks=config.frozen_blocks, distill=config.distill,
            proportional_attention=config.proportional_attention, merge_only=config.merge_only,
        )
        if config.init is not None:
            module.search_model.start_from(initial_schedule(vit, config.init, target_gflops),
                                           config.init_spread)
        dataset = ImageClassificationData(data_dir, "train", _preprocessing(vit, Preprocessing),
                                          limit_per_class=config.limit_per_class)
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=False,
                            num_workers=config.num_workers, persistent_workers=config.num_workers > 0)
        trainer = build_trainer(config, None, max_epochs=config.epochs,
                                log_every_n_steps=config.log_every_n_steps)
        trainer.fit(module, loader)
        schedule = module.schedule()
        if out is not None and trainer.is_global_zero:
            schedule.save(out)
        return schedule
    finally:
        for parameter, flag in zip(vit.parameters(), requires_grad):
            parameter.requires_grad_(flag)
        vit.train(was_training)
