"""DiffRate's compute cost of a schedule, by formula and by counting.

The paper and its public code report "FLOPs" that are multiply-accumulates (MACs). Everything here is in MACs:
:func:`schedule_gflops` is the paper's formula, :func:`measured_gflops` counts the real-removal model with
``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per MAC) and halves the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .schedule import Schedule


@dataclass(frozen=True)
class ViTCostConfig:
    """What the cost formula needs to know about a ViT.

    Attributes:
        embed_dim: token width C.
        depth: number of blocks.
        num_patches: patch tokens entering the first block.
        num_prefix_tokens: class (and register/distillation) tokens in front of the patches.
        patch_pixels: pixels per patch (p_h * p_w).
        in_chans: image channels.
        num_classes: classifier outputs (0 for no head).
        attention_linear_macs: per-token MACs of a block's attention projections (None: the paper's ``4 C^2``,
            qkv and output projection).
        mlp_macs: per-token MACs of a block's MLP (None: the paper's ``8 C^2``, two layers at ratio 4). Read off
            the model's linear layers, so SwiGLU MLPs (EVA-02) and other ratios are counted as they are.
    """

    embed_dim: int
    depth: int
    num_patches: int
    num_prefix_tokens: int = 1
    patch_pixels: int = 256
    in_chans: int = 3
    num_classes: int = 1000
    attention_linear_macs: int | None = None
    mlp_macs: int | None = None

    @property
    def attention_macs_per_token(self) -> int:
        return 4 * self.embed_dim**2 if self.attention_linear_macs is None else self.attention_linear_macs

    @property
    def mlp_macs_per_token(self) -> int:
        return 8 * self.embed_dim**2 if self.mlp_macs is None else self.mlp_macs

    @property
    def tokens(self) -> int:
        """Tokens entering the first block."""
        return self.num_patches + self.num_prefix_tokens


def vit_cost_config(model_or_config: Any) -> ViTCostConfig:
    """A :class:`ViTCostConfig` from a config, a timm VisionTransformer, or a timm model name.

    A model name is built with ``timm.create_model(name, pretrained=False, device="meta")``: no download and no
    weight memory, so even ViT-H costs nothing to inspect.
    """
    if isinstance(model_or_config, ViTCostConfig):
        return model_or_config
    model = model_or_config
    if isinstance(model, str):
        import timm

        model = timm.create_model(model, pretrained=False, device="meta")
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or not hasattr(model, "blocks") or not hasattr(model, "embed_dim"):
        raise ValueError(f"{type(model).__name__} is not a timm VisionTransformer (needs patch_embed, blocks)")
    patch_height, patch_width = patch_embed.patch_size
    block = model.blocks[0]
    return ViTCostConfig(
        embed_dim=int(model.embed_dim),
        depth=len(model.blocks),
        num_patches=int(patch_embed.num_patches),
        num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 1)),
        patch_pixels=int(patch_height * patch_width),
        in_chans=int(patch_embed.proj.in_channels),
        num_classes=int(getattr(model, "num_classes", 0)),
        attention_linear_macs=_linear_weights(getattr(block, "attn", None)),
        mlp_macs=_linear_weights(getattr(block, "mlp", None)),
    )


def _linear_weights(module: torch.nn.Module | None) -> int | None:
    """Weights of the linear layers in ``module`` (= MACs per token); None when it has none to count."""
    if module is None:
        return None
    count = sum(layer.weight.numel() for layer in module.modules() if isinstance(layer, torch.nn.Linear))
    return count or None


def schedule_macs(model_or_config: Any, schedule: Schedule | None = None) -> int:
    """MACs of one image under `schedule` by the DiffRate formula (``calculate_flop_inference`` in the public code).

    Per block with N incoming tokens and width C: attention ``4*N*C^2 + 2*N^2*C`` (qkv + projection, then
    q@k^T and attn@v), MLP ``8*N'*C^2`` with ``N' = min(N, k_p, k_m)`` the count after the block's compression
    (notes "FLOPs"). ``4 C^2`` and ``8 C^2`` are the per-token weights of a standard block's linear layers; for a
    model whose blocks differ (SwiGLU, other MLP ratios, grouped key/value heads) its own counts are used. Plus
    patch embedding ``tokens * C * in_chans * p^2`` (the public code counts the class token here too) and the head
    ``C * num_classes``. The merge step's similarity, norms, softmax and GELU are not counted, as in the paper.
    """
    config = vit_cost_config(model_or_config)
    schedule = Schedule.keep_all(config.depth, config.tokens) if schedule is None else schedule
    schedule.validate(config.depth, config.tokens)
    width = config.embed_dim
    tokens = config.tokens
    macs = tokens * width * config.in_chans * config.patch_pixels + width * config.num_classes
    for kept in schedule.kept_tokens_per_block(config.tokens):
        macs += tokens * config.attention_macs_per_token + 2 * tokens**2 * width
        tokens = kept
        macs += tokens * config.mlp_macs_per_token
    return macs


def schedule_gflops(model_or_config: Any, schedule: Schedule | None = None) -> float:
    """GFLOPs (really GMACs, as in the paper) of one image under `schedule`; see :func:`schedule_macs`."""
    return schedule_macs(model_or_config, schedule) / 1e9


def measured_gflops(
    model: torch.nn.Module, schedule: Schedule | None = None, input_size: tuple[int, int, int] | None = None
) -> float:
    """Counted GMACs of one image through the real-removal model (``FlopCounterMode`` FLOPs / 2).

    Args:
        model: a timm VisionTransformer, patched or not; an unpatched one is patched for the count and restored.
        schedule: the schedule to count (None: the model's current schedule if patched, else keep-all).
        input_size: (channels, height, width); default from the model's patch embedding.

    Fused attention is switched off during the count because FlopCounterMode does not count every fused kernel
    (the CPU flash kernel is invisible to it); the explicit matmuls are counted instead.
    """
    from .patch import is_patched, patch, unpatch

    was_patched = is_patched(model)
    previous_schedule = model.schedule if was_patched else None
    if not was_patched:
        patch(model)
    attention_modules = [block.attn for block in model.blocks]
    previous_fused = [attention.fused_attn for attention in attention_modules]
    was_training = model.training
    try:
        if schedule is not None:
            model.schedule = schedule
        for attention in attention_modules:
            attention.fused_attn = False
        if input_size is None:
            height, width = model.patch_embed.img_size
            input_size = (model.patch_embed.proj.in_channels, height, width)
        parameter = next(model.parameters())
        image = torch.zeros((1, *input_size), dtype=parameter.dtype, device=parameter.device)
        model.eval()
        # parameters that require grad reach FlopCounterMode's module tracker as module inputs in some heads (the
        # attention-pool head's latent query, SigLIP), and its backward hooks fail on them under no_grad
        requires_grad = [parameter.requires_grad for parameter in model.parameters()]
        model.requires_grad_(False)
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(image)
        finally:
            for flag, parameter in zip(requires_grad, model.parameters()):
                parameter.requires_grad_(flag)
        return counter.get_total_flops() / 2 / 1e9
    finally:
        model.train(was_training)
        for attention, fused in zip(attention_modules, previous_fused):
            attention.fused_attn = fused
        if was_patched:
            model.schedule = previous_schedule
        else:
            unpatch(model)
