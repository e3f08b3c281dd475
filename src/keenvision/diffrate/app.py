"""DiffRate's tab of ``keen app``: `diffrate` computes it without Gradio, `build_view` lays it out."""

from __future__ import annotations

import numpy as np

from ..core.uploads import AppInputError, png_pixels, two_column_view

DIFFRATE_MODELS = ("cifar10-vit", "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
                   "eva02_tiny_patch14_224", "vit_small_patch16_rope_224")
UNIFORM = "uniform at the FLOPs target"


def diffrate_schedules() -> list[str]:
    """The schedule choices of the DiffRate view: uniform merging, then every published and shipped schedule."""
    import json
    from importlib import resources

    choices = [UNIFORM]
    for prefix, file in (("published", "published_schedules.json"), ("shipped", "shipped_schedules.json")):
        entries = json.loads(resources.files("keenvision.diffrate").joinpath(file).read_text())
        choices += [f"{prefix}:{model}/{gflops}" for model, by_gflops in entries.items() for gflops in by_gflops]
    return choices


def diffrate(model_name: str = "cifar10-vit", schedule: str = UNIFORM, target_gflops: float | None = None,
             batch: int = 1) -> tuple[np.ndarray, str, dict]:
    """A timm ViT (random weights, or the shipped CIFAR-10 ViT) and a schedule -> (kept tokens plot, a
    line, the JSON with formula FLOPs of both and measured throughput of both in the same run)."""
    from .benchmark import throughput
    from .method.baseline import uniform_schedule
    from .method.flops import schedule_gflops, vit_cost_config
    from .models import load_model, load_schedule
    from .plot import plot_kept_tokens

    model_name = (model_name or "").strip()
    if not model_name or model_name.endswith(".safetensors") or "/" in model_name:
        raise AppInputError(f"{model_name!r}: give a timm ViT name (e.g. deit_small_patch16_224) or cifar10-vit")
    batch = int(batch or 1)
    if not 1 <= batch <= 64:
        raise AppInputError(f"batch {batch}: the app measures batches of 1 to 64")
    try:
        model = load_model(model_name)
        original = schedule_gflops(model)
        if schedule == UNIFORM:
            if target_gflops is None or not 0 < float(target_gflops) < original:
                raise AppInputError(f"uniform merging needs a FLOPs target between 0 and the model's "
                                    f"{original:.3f} GFLOPs")
            chosen = uniform_schedule(model, float(target_gflops))
        else:
            chosen = load_schedule(schedule, model)
    except (ValueError, KeyError) as error:
        if isinstance(error, AppInputError):
            raise
        raise AppInputError(str(error).strip().splitlines()[0]) from None
    compressed = schedule_gflops(model, chosen)
    tokens = vit_cost_config(model).tokens
    speed = throughput(model, chosen, batch=batch, repeats=3, warmup=1)
    plot = png_pixels(lambda out: plot_kept_tokens(chosen, tokens, out, title=f"{model_name}: {schedule}"))
    record = {"model": model_name, "schedule": schedule, "gflops_original": round(original, 4),
              "gflops_compressed": round(compressed, 4), "flops_ratio": round(original / compressed, 3),
              "batch": batch, "images_per_s_original": round(speed["images_per_s_original"], 2),
              "images_per_s_compressed": round(speed["images_per_s_compressed"], 2),
              "speedup": round(speed["speedup"], 3), "threads": speed.get("threads")}
    summary = (f"**{original:.3f} -> {compressed:.3f} GFLOPs** ({original / compressed:.2f}x fewer); measured "
               f"{speed['images_per_s_original']:.1f} -> {speed['images_per_s_compressed']:.1f} images/s at batch "
               f"{batch} ({speed['speedup']:.2f}x), CPU, same run")
    return plot, summary, record


def build_view(gr, shown) -> None:
    (model_name, schedule, target, batch), run, (kept, summary) = two_column_view(
        gr, "A timm ViT (random weights, or the shipped CIFAR-10 ViT) and a prune+merge schedule: FLOPs from the "
        "formula and throughput measured for both models in the same run.",
        [lambda: gr.Dropdown(list(DIFFRATE_MODELS), value="cifar10-vit", allow_custom_value=True,
                             label="model (any timm ViT name)"),
         lambda: gr.Dropdown(diffrate_schedules(), value="shipped:cifar10-vit/0.11", label="schedule"),
         lambda: gr.Number(label="FLOPs target for uniform (GFLOPs)", value=0.11),
         lambda: gr.Slider(1, 64, value=1, step=1, label="batch")], "Measure",
        [lambda: gr.Image(label="tokens kept per block", type="numpy", format="png"), gr.Markdown])
    record = gr.JSON(label="JSON")
    run.click(shown(diffrate), [model_name, schedule, target, batch], [kept, summary, record], api_name="diffrate")
