"""Patch a timm ViT in place to run a DiffRate schedule with real token removal.

Like ToMe's ``apply_patch``, :func:`patch` swaps the classes of the model, its blocks and their attention modules
for subclasses of the originals (so ``isinstance`` checks and the state_dict are untouched), and :func:`unpatch`
swaps them back. Each patched block runs (notes "What one compressed block does"):

    attention (with proportional attention, exposing importance) -> sort -> prune -> merge -> MLP

with static integer token counts from ``model.schedule``, the same for every image of a batch.

Importance: with a class token, class-token attention averaged over heads (the paper). Without one (e.g.
``global_pool="avg", class_token=False``), the attention each token receives averaged over heads and queries:
the closest analogue of "how much the model reads this token", and every patch token is then a merge
destination. Prefix tokens (class, register, distillation) are never pruned and never merge destinations.

Two timm families: ``VisionTransformer`` (DeiT, AugReg, CLIP, DINOv2, SigLIP, ...) and ``Eva`` (EVA-02 and timm's
RoPE ViTs, ``vit_*_rope_*``), whose attention rotates queries and keys by each patch's position. A block of a
compressed Eva sees fewer tokens than the grid, so the model keeps ``positions`` [B, N - P], the grid index of each
patch token still present: pruning gathers them with the tokens, merging keeps the destination's (the merged token
stands where its most important member stood, as ToMe keeps the destination's features), and every block takes its
rotary embedding rows at those positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Attention, AttentionRope
from timm.layers.pos_embed_sincos import apply_rot_embed_cat
from timm.models.eva import Eva, EvaAttention, EvaBlock
from timm.models.vision_transformer import Block, VisionTransformer

from .merge import (
    MERGE_MODES,
    class_attention_importance,
    gather_tokens,
    importance_order,
    initial_sources,
    match_to_destinations,
    merge_tokens,
    proportional_attention_bias,
    received_attention_importance,
    similarity_weighted_sizes,
    size_weighted_merge,
)
from .schedule import Schedule, model_depth_and_tokens

_PATCHED_CLASSES: dict[type, type] = {}


class DiffRateAttentionMixin:
    """Attention that adds log(size) to its logits and can return patch-token importance."""

    def diffrate_qkv(self, x: torch.Tensor, rope: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """q, k, v [B, H, N, D] of timm's ``Attention`` (normalised; it has no rotary embedding)."""
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def diffrate_forward(
        self, x: torch.Tensor, attention_bias: torch.Tensor | None, importance: str | None, num_prefix_tokens: int,
        rope: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention of the original module plus DiffRate's additions.

        Args:
            x: [B, N, C] normalised tokens.
            attention_bias: [B, 1, 1, N] log(size) bias (proportional attention) or None.
            importance: None, "class" (class-token row) or "received" (column mean).
            num_prefix_tokens: P.
            rope: rotary embedding rows of the patch tokens present ([B, 1 or H, N - P, 2D]), Eva only.

        Returns:
            output [B, N, C] and importance [B, N - P] (None when not asked for).
        """
        batch, tokens, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        q, k, v = self.diffrate_qkv(x, rope)
        if attention_bias is not None:
            attention_bias = attention_bias.to(q.dtype)
        token_importance = None
        # The fused kernel never materialises the attention matrix, so it stays on unless the full matrix is needed
        # ("received" importance); the class-token row alone is one extra 1 x N product per head.
        if self.fused_attn and importance != "received":
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attention_bias, dropout_p=self.attn_drop.p if self.training else 0.0
            )
            if importance == "class":
                class_logits = (q[:, :, :1] * self.scale) @ k.transpose(-2, -1)  # [B, H, 1, N]
                if attention_bias is not None:
                    class_logits = class_logits + attention_bias
                token_importance = class_attention_importance(class_logits.softmax(dim=-1), num_prefix_tokens)
        else:
            q = q * self.scale
            attention = q @ k.transpose(-2, -1)
            if attention_bias is not None:
                attention = attention + attention_bias
            attention = attention.softmax(dim=-1)
            if importance == "class":
                token_importance = class_attention_importance(attention, num_prefix_tokens)
            elif importance == "received":
                token_importance = received_attention_importance(attention, num_prefix_tokens)
            out = self.attn_drop(attention) @ v
        out = out.transpose(1, 2).reshape(batch, tokens, -1)
        out = self.norm(out)
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out)), token_importance


class DiffRateRopeAttentionMixin(DiffRateAttentionMixin):
    """The same for Eva's attention classes (``EvaAttention``, ``AttentionRope``): their projections (fused qkv or
    separate q/k/v, EVA's q/v biases, grouped key/value heads) and the rotary embedding of the patch tokens."""

    def diffrate_qkv(self, x: torch.Tensor, rope: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        batch, tokens, _ = x.shape
        kv_heads = getattr(self, "num_kv_heads", self.num_heads)
        if self.qkv is not None:
            bias = getattr(self, "q_bias", None)
            if bias is None:
                qkv = self.qkv(x)
            elif self.qkv_bias_separate:
                qkv = self.qkv(x) + torch.cat((self.q_bias, self.k_bias, self.v_bias))
            else:
                qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
            q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q = self.q_proj(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
            k = self.k_proj(x).reshape(batch, tokens, kv_heads, -1).transpose(1, 2)
            v = self.v_proj(x).reshape(batch, tokens, kv_heads, -1).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            prefix, half = self.num_prefix_tokens, getattr(self, "rotate_half", False)
            q = torch.cat([q[:, :, :prefix], apply_rot_embed_cat(q[:, :, prefix:], rope, half=half)], 2).type_as(v)
            k = torch.cat([k[:, :, :prefix], apply_rot_embed_cat(k[:, :, prefix:], rope, half=half)], 2).type_as(v)
        groups = getattr(self, "num_kv_groups", 1)
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return q, k, v


class DiffRateBlockMixin:
    """Block that compresses tokens between attention and MLP with the counts the model's schedule gives it."""

    def diffrate_attention_residual(self, attention_out: torch.Tensor) -> torch.Tensor:
        return self.drop_path1(self.ls1(attention_out))

    def diffrate_mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def diffrate_rope(self) -> torch.Tensor | None:
        """This block's rotary embedding rows at the patch positions present (None: the model has none)."""
        state = self._diffrate_state
        rope = state.get("rope")
        if rope is None:
            return None
        if state["rope_mixed"]:
            rope = rope[self._diffrate_index]  # [H, N0, 2D], one per block
        positions = state["positions"]
        if positions is None:  # nothing removed yet: every patch in grid order
            return rope
        if rope.dim() == 2:  # [N0, 2D] -> [B, 1, N, 2D]
            return rope[positions].unsqueeze(1)
        return rope[:, positions].transpose(0, 1)  # [H, B, N, 2D] -> [B, H, N, 2D]

    def forward(self, x: torch.Tensor, *args: Any, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                rope: Any = None) -> torch.Tensor:
        """[B, N, C] -> [B, N', C] with N' = min(N, prune_kept, merge_kept) of this block. An Eva block's rotary
        embedding comes from the model's state (``rope`` is the full grid's and is ignored)."""
        if args or attn_mask is not None or is_causal:
            raise ValueError("DiffRate-patched blocks do not take attention masks (tokens are removed instead)")
        state = self._diffrate_state
        num_prefix_tokens = state["num_prefix_tokens"]
        batch, tokens, _ = x.shape
        if state["trace_source"] and state["source"] is None:
            state["source"] = initial_sources(batch, tokens, x.device)
        # Effective counts are non-increasing whatever the schedule says (notes invariant 3).
        prune_kept = min(tokens, self._diffrate_prune_kept)
        merge_kept = min(prune_kept, self._diffrate_merge_kept)
        if merge_kept <= num_prefix_tokens:
            prune_kept = merge_kept  # merging into no patch token at all is pruning them all
        compress = merge_kept < tokens
        size = state["size"]
        attention_bias = proportional_attention_bias(size) if size is not None and state["proportional"] else None
        attention_out, importance = self.attn.diffrate_forward(
            self.norm1(x), attention_bias, state["importance"] if compress else None, num_prefix_tokens,
            self.diffrate_rope(),
        )
        x = x + self.diffrate_attention_residual(attention_out)
        if compress:
            x = self._diffrate_compress(x, importance, prune_kept, merge_kept)
        return x + self.diffrate_mlp_residual(x)

    def _diffrate_compress(
        self, x: torch.Tensor, importance: torch.Tensor, prune_kept: int, merge_kept: int
    ) -> torch.Tensor:
        """Sort by importance, prune to `prune_kept`, merge to `merge_kept`; update sizes/sources. [B,N,C]->[B,K,C]."""
        state = self._diffrate_state
        num_prefix_tokens = state["num_prefix_tokens"]
        batch, tokens, _ = x.shape
        # Sorting then keeping a prefix of the order is the prune step: the tail is the least important.
        kept_order = importance_order(importance, num_prefix_tokens)[:, :prune_kept]
        x, size = gather_tokens(x, kept_order), state["size"]
        # before the first merge every token stands for one patch: no sizes to gather
        size = torch.ones(batch, prune_kept, device=x.device) if size is None else gather_tokens(size, kept_order)
        source = state["source"]
        if source is not None:
            source = gather_tokens(source, kept_order)
        if state.get("rope") is not None:
            positions = state["positions"]
            if positions is None:
                positions = torch.arange(tokens - num_prefix_tokens, device=x.device).expand(batch, -1)
            patch_order = kept_order[:, num_prefix_tokens:] - num_prefix_tokens
            # merged tokens are the destinations [P, merge_kept), which keep their own positions
            state["positions"] = gather_tokens(positions, patch_order)[:, :merge_kept - num_prefix_tokens]
        if merge_kept < prune_kept:
            destination, similarity = match_to_destinations(x.detach(), merge_kept, num_prefix_tokens)
            if state["merge_mode"] == "size_weighted":
                merged, size = size_weighted_merge(x, size.to(x.dtype), destination, merge_kept)
                x, size = merged, size.float()
            else:
                x = merge_tokens(x, destination, merge_kept, reduce="mean")
                size = similarity_weighted_sizes(size, destination, similarity, merge_kept)
            if source is not None:
                source = merge_tokens(source, destination, merge_kept, reduce="amax")
        state["size"], state["source"] = size, source
        return x


class DiffRateEvaBlockMixin(DiffRateBlockMixin):
    """Eva's block: layer scale as ``gamma_1``/``gamma_2`` parameters (None when off)."""

    def diffrate_attention_residual(self, attention_out: torch.Tensor) -> torch.Tensor:
        return self.drop_path1(attention_out if self.gamma_1 is None else self.gamma_1 * attention_out)

    def diffrate_mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.norm2(x))
        return self.drop_path2(out if self.gamma_2 is None else self.gamma_2 * out)


class DiffRateVisionTransformerMixin:
    """VisionTransformer that resets token sizes per forward, pools by size, and owns a ``schedule``."""

    @property
    def schedule(self) -> Schedule:
        """The schedule the blocks run; assign a :class:`Schedule`, a file path, or None (keep all tokens)."""
        return self._diffrate_state["schedule"]

    @schedule.setter
    def schedule(self, schedule: Schedule | str | Path | None) -> None:
        depth, tokens = model_depth_and_tokens(self)
        if schedule is None:
            schedule = Schedule.keep_all(depth, tokens)
        elif isinstance(schedule, str | Path):
            schedule = Schedule.load(schedule)
        elif not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a Schedule, a file path or None, not {type(schedule).__name__}")
        schedule.validate(depth, tokens, min_tokens=max(1, self._diffrate_state["num_prefix_tokens"]))
        for block, prune_kept, merge_kept in zip(self.blocks, schedule.prune_kept, schedule.merge_kept):
            block._diffrate_prune_kept = prune_kept
            block._diffrate_merge_kept = merge_kept
        self._diffrate_state["schedule"] = schedule

    @property
    def token_sources(self) -> torch.Tensor | None:
        """[B, N_out, N_in] 0/1 map of which input tokens each output token holds (``patch(trace_source=True)``)."""
        return self._diffrate_state["source"]

    @property
    def token_sizes(self) -> torch.Tensor | None:
        """[B, N_out] sizes after the last forward (None if nothing was merged or pruned)."""
        return self._diffrate_state["size"]

    def _start_forward(self, attn_mask: Any, is_causal: bool, *fields: str) -> dict:
        """The patched state with ``fields`` cleared for a new batch (attention masks are refused)."""
        if attn_mask is not None or is_causal:
            raise ValueError("DiffRate-patched models do not take attention masks")
        self._diffrate_state.update(dict.fromkeys(fields))
        return self._diffrate_state

    def forward_features(self, x: torch.Tensor, attn_mask: Any = None, is_causal: bool = False) -> torch.Tensor:
        """[B, 3, H, W] -> [B, N_out, C]; token sizes and sources start afresh for every batch."""
        self._start_forward(attn_mask, is_causal, "size", "source")
        return super().forward_features(x)

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        """Average pooling weighted by token size (a merged token stands for several patches); others unchanged."""
        pool_type = self.global_pool if pool_type is None else pool_type
        size = self._diffrate_state["size"]
        if self.attn_pool is not None or pool_type != "avg" or size is None:
            return super().pool(x, pool_type=pool_type)
        start = 0 if getattr(self, "pool_include_prefix", False) else self.num_prefix_tokens
        weight = size[:, start:].to(x.dtype).unsqueeze(-1)
        return (x[:, start:] * weight).sum(dim=1) / weight.sum(dim=1)


class DiffRateEvaMixin(DiffRateVisionTransformerMixin):
    """Eva with its blocks run here, so that each takes the rotary rows of the patches still present."""

    @property
    def token_positions(self) -> torch.Tensor | None:
        """[B, N_out - P] grid index of each patch token after the last forward (None if none was removed)."""
        return self._diffrate_state["positions"]

    def forward_features(self, x: torch.Tensor, attn_mask: Any = None, is_causal: bool = False) -> torch.Tensor:
        state = self._start_forward(attn_mask, is_causal, "size", "source", "positions")
        x = self.patch_embed(x)
        x, rope = self._pos_embed(x)
        state["rope"] = rope
        x = self.norm_pre(x)
        try:
            for block in self.blocks:
                x = block(x)
        finally:
            state["rope"] = None  # the grid's embedding belongs to this forward only
        return self.norm(x)


def _patched_class(original: type, mixin: type) -> type:
    """The cached subclass ``(mixin, original)``, named after the original."""
    key = (original, mixin)
    if key not in _PATCHED_CLASSES:
        name = f"DiffRate{original.__name__}"
        _PATCHED_CLASSES[key] = type(name, (mixin, original), {"_diffrate_original": original})
    return _PATCHED_CLASSES[key]


def is_patched(model: torch.nn.Module) -> bool:
    """Whether `model` is a DiffRate-patched ViT."""
    return isinstance(model, DiffRateVisionTransformerMixin)


SUPPORTED = "timm VisionTransformer and Eva (EVA-02, vit_*_rope_*) models"


def _check_supported(model: Any) -> None:
    """Raise ValueError unless `model` is a timm VisionTransformer or Eva with standard blocks and attention."""
    if isinstance(model, Eva):
        _check_supported_eva(model)
        return
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"diffrate.patch supports {SUPPORTED}, not {type(model).__name__}")
    if not hasattr(VisionTransformer, "pool"):
        raise ValueError("diffrate.patch needs timm >= 1.0.10 (VisionTransformer.pool)")
    for index, block in enumerate(model.blocks):
        # A block or attention class with its own forward would be silently bypassed by ours.
        if not isinstance(block, Block) or type(block).forward is not Block.forward:
            raise ValueError(f"block {index} is {type(block).__name__}; diffrate.patch supports timm's Block only")
        attention = block.attn
        if not isinstance(attention, Attention) or type(attention).forward is not Attention.forward:
            raise ValueError(
                f"block {index} attention is {type(attention).__name__}; diffrate.patch supports timm's Attention only"
            )


def _check_supported_eva(model: Eva) -> None:
    for index, block in enumerate(model.blocks):
        if not isinstance(block, EvaBlock) or type(block).forward is not EvaBlock.forward:
            raise ValueError(f"block {index} is {type(block).__name__}; diffrate.patch supports Eva's pre-norm "
                             "EvaBlock only")
        attention = block.attn
        known = [cls for cls in (EvaAttention, AttentionRope) if isinstance(attention, cls)]
        if not known or type(attention).forward is not known[0].forward:
            raise ValueError(f"block {index} attention is {type(attention).__name__}; diffrate.patch supports "
                             "EvaAttention and AttentionRope only")
    if model.patch_drop is not None:
        raise ValueError("diffrate.patch does not run with patch dropout (patch_drop_rate > 0): it removes tokens "
                         "itself")
    if model.rope is not None:
        rope = model.rope.get_embed() if hasattr(model.rope, "feat_shape") else None
        mixed = bool(getattr(model, "rope_mixed", False))
        if not torch.is_tensor(rope) or rope.dim() != (4 if mixed else 2):
            raise ValueError(f"rotary embedding {type(model.rope).__name__} is not supported by diffrate.patch "
                             "(supported: the 'cat' and 'mixed' RoPE of EVA-02 and vit_*_rope_*)")


def patch(
    model: torch.nn.Module,
    schedule: Schedule | str | Path | None = None,
    *,
    merge_mode: str = "mean",
    proportional_attention: bool = True,
    trace_source: bool = False,
) -> torch.nn.Module:
    """Make a timm VisionTransformer run DiffRate token pruning and merging, in place; return it.

    Args:
        model: a timm ``VisionTransformer`` (DeiT, ViT, MAE-style global-pool, with or without class token) or
            ``Eva`` (EVA-02, RoPE ViTs; the rotary embedding follows the tokens kept and merged).
        schedule: kept-token counts per block (a :class:`Schedule`, a file path for :meth:`Schedule.load`), or
            None to keep every token until ``model.schedule`` is set.
        merge_mode: "mean" (public DiffRate: unweighted mean, similarity-weighted sizes) or "size_weighted"
            (ToMe: size-weighted mean, summed sizes).
        proportional_attention: add log(size) to attention logits (DiffRate/ToMe); on by default.
        trace_source: keep ``model.token_sources`` ([B, N_out, N_in] 0/1) for visualising merges.

    Patching an already patched model only updates the schedule and options.
    """
    if merge_mode not in MERGE_MODES:
        raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
    if not is_patched(model):
        _check_supported(model)
        has_class_token = getattr(model, "cls_token", None) is not None
        state = {
            "schedule": None,
            "size": None,
            "source": None,
            "num_prefix_tokens": int(model.num_prefix_tokens),
            "importance": "class" if has_class_token else "received",
        }
        eva = isinstance(model, Eva)
        if eva:
            state.update(rope=None, positions=None, rope_mixed=bool(getattr(model, "rope_mixed", False)))
        model._diffrate_state = state
        model.__class__ = _patched_class(type(model), DiffRateEvaMixin if eva else DiffRateVisionTransformerMixin)
        for index, block in enumerate(model.blocks):
            block._diffrate_state = state
            block._diffrate_index = index
            block.__class__ = _patched_class(type(block), DiffRateEvaBlockMixin if eva else DiffRateBlockMixin)
            attention_mixin = DiffRateRopeAttentionMixin if eva else DiffRateAttentionMixin
            block.attn.__class__ = _patched_class(type(block.attn), attention_mixin)
    model._diffrate_state.update(merge_mode=merge_mode, proportional=proportional_attention, trace_source=trace_source)
    try:
        model.schedule = schedule
    except ValueError:
        if model._diffrate_state["schedule"] is None:
            unpatch(model)  # a fresh patch with a bad schedule leaves the model as it was
        raise
    return model


def unpatch(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`patch` in place (original classes, no DiffRate attributes); return the model."""
    if not is_patched(model):
        return model
    for block in model.blocks:
        block.attn.__class__ = type(block.attn)._diffrate_original
        block.__class__ = type(block)._diffrate_original
        for name in ("_diffrate_state", "_diffrate_index", "_diffrate_prune_kept", "_diffrate_merge_kept"):
            block.__dict__.pop(name, None)
    model.__class__ = type(model)._diffrate_original
    model.__dict__.pop("_diffrate_state", None)
    return model
