"""``keen diffrate ...``: cost, speed, accuracy, search and plots of DiffRate schedules. Parses, calls, prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core import cli as shared
from ..core.errors import UsageError

MODEL_HELP = ("timm ViT name (random weights unless --pretrained), a .safetensors export of "
              "keenvision.diffrate.train, or cifar10-vit")
SCHEDULE_HELP = ("schedule JSON (ours or one public entry), compression_rate.json#MODEL/GFLOPS, or "
                 "published:MODEL/GFLOPS (e.g. published:ViT-S-DeiT/2.9)")
DATA_HELP = "<split>/<class>/<image>, <split>.zip or <class>/<image> folder (e.g. .../cifar10)"


def _tool(tools: argparse._SubParsersAction, name: str, help: str, handler, schedule: str | None = None,
          out: str | None = None, json: bool = True) -> argparse.ArgumentParser:
    """A ``keen diffrate`` tool with the options most of them share: ``--model`` (and ``--pretrained``),
    ``--schedule`` (``schedule``: its help; "required" makes it required), ``--out`` and ``--json``."""
    parser = tools.add_parser(name, help=help)
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--pretrained", action="store_true",
                        help="download timm hub weights for a timm name (opt-in: needs the network)")
    if schedule is not None:
        parser.add_argument("--schedule", required=schedule == "required",
                            help=SCHEDULE_HELP + ("" if schedule == "required" else schedule))
    if out is not None:
        shared.add_out_option(parser, out, required=True)
    if json:
        shared.add_json_option(parser)
    parser.set_defaults(handler=handler)
    return parser


def add_commands(commands: argparse._SubParsersAction, tools: argparse._SubParsersAction) -> None:
    flops = _tool(tools, "flops", "GFLOPs (the paper's MAC formula and counted) and kept tokens per block", run_flops,
                  schedule=" (default: no compression)")
    flops.add_argument("--no-measure", action="store_true",
                       help="formula only: do not build the model and count its FLOPs (for huge models)")

    bench = _tool(tools, "bench", "images/s of the original and the compressed model, same run", run_bench,
                  schedule="required")
    shared.add_option(bench, "--batch-size", "--batch", type=int, default=64, minimum=1,
                      help="images per forward (default 64)")
    shared.add_device_option(bench, "cpu")
    bench.add_argument("--half", action="store_true", help="fp16 on CUDA, bf16 on CPU (default fp32)")
    shared.add_option(bench, "--repeats", type=int, default=5, minimum=1, help="timed rounds (default 5)")
    shared.add_option(bench, "--warmup", type=int, default=2, minimum=0, help="discarded rounds (default 2)")

    evaluate = _tool(tools, "eval", "top-1 of the original and the compressed model, same images", run_eval,
                     schedule="required")
    evaluate.add_argument("--data", type=Path, required=True, help=DATA_HELP)
    evaluate.add_argument("--split", default="test", help="split folder or zip name (default test)")
    shared.add_option(evaluate, "--limit-per-class", type=int, minimum=1, help="first N images of every class only")
    shared.add_option(evaluate, "--batch-size", type=int, default=64, minimum=1, help="images per forward (default 64)")
    shared.add_device_option(evaluate, "cpu")

    search = _tool(tools, "search", "search a schedule for a GFLOPs target (differentiable rates)", run_search,
                   out="schedule JSON to write")
    search.add_argument("--data", type=Path, required=True, help="training images (same layouts as eval)")
    shared.add_option(search, "--target-gflops", type=float, required=True, above=0, help="GFLOPs (GMACs) budget")
    shared.add_option(search, "--max-steps", type=int, minimum=1,
                      help="stop after this many optimiser steps (default: 3 epochs)")
    shared.add_option(search, "--epochs", type=int, minimum=1,
                      help="passes over the data (default 3, the paper's ImageNet recipe)")
    shared.add_option(search, "--batch-size", type=int, minimum=1, help="images per step (default 256)")
    shared.add_option(search, "--limit-per-class", type=int, minimum=1,
                      help="first N images of every class only (quick runs)")
    shared.add_option(search, "--num-workers", type=int, minimum=0, help="data-loading processes (default 2)")
    shared.add_option(search, "--lambda-flops", type=float, above=0,
                      help="weight of (GFLOPs - target)^2 (default 5, the paper's; small models need more)")
    shared.add_option(search, "--lr", type=float, above=0,
                      help="rate-logit learning rate (default 0.01, cosine to a tenth)")
    search.add_argument("--init", help="start the rates at 'uniform' (the ToMe-like baseline at the target) or at "
                                       "a schedule (file, published:, shipped:); default: uniform over candidates")
    shared.add_option(search, "--init-spread", type=float, above=0,
                      help="tokens: width of the start distribution around --init's counts (default 2); wider "
                             "lets a short search move further from its start")
    search.add_argument("--distill", action="store_true",
                        help="fit the uncompressed model's softmax instead of the labels (the model's own outputs)")
    search.add_argument("--merge-only", action="store_true",
                        help="search merge rates only (prune rates fixed at keep-all): dropping tokens costs small "
                             "models more than merging them")
    search.add_argument("--config", type=Path,
                        help="search recipe YAML (e.g. configs/diffrate/search.yaml); flags override it")

    refine = _tool(tools, "refine", "polish a merge-only schedule at an exact GFLOPs budget (pattern search on the "
                                    "distillation loss over training images)", run_refine,
                   schedule="required", out="schedule JSON to write")
    refine.add_argument("--data", type=Path, required=True, help="training images (same layouts as eval)")
    shared.add_option(refine, "--target-gflops", type=float, required=True, above=0,
                      help="GFLOPs (GMACs) budget, never exceeded")
    refine.add_argument("--split", default="train", help="split folder or zip name (default train)")
    shared.add_option(refine, "--images-per-class", type=int, default=200, minimum=1,
                      help="first N images of every class score the moves (default 200)")
    shared.add_option(refine, "--max-evaluations", type=int, default=40, minimum=1,
                      help="objective evaluations at most, the start included (default 40)")

    uniform = _tool(tools, "uniform", "ToMe-like baseline: merge the same count per block for a target", run_uniform,
                    out="schedule JSON to write")
    uniform.add_argument("--target-gflops", type=float, required=True, help="GFLOPs (GMACs) budget, hit from below")
    uniform.add_argument("--compress-first-block", action="store_true",
                         help="also merge in block 0 (default: block 0 untouched, DiffRate's DeiT convention)")

    plot = _tool(tools, "plot", "PNG of kept tokens per block (after prune and after merge)", run_plot,
                 schedule="required", out="PNG to write", json=False)
    plot.add_argument("--title", help="figure title (default: the schedule argument)")


def train_options(parser: argparse.ArgumentParser) -> None:
    """The CIFAR-10 ViT recipe's own ``train`` option (`core.system.Training.options`)."""
    parser.add_argument("--schedule", help="fine-tune with this fixed DiffRate schedule (" + SCHEDULE_HELP + ")")


def train_overrides(args: argparse.Namespace) -> dict:
    return {"schedule": args.schedule} if args.schedule else {}


def _model(args: argparse.Namespace):
    from .models import load_model

    return load_model(args.model, pretrained=args.pretrained)


def _finish(record: dict, args: argparse.Namespace) -> int:
    if args.json:
        shared.print_json(record)
    return 0


def run_flops(args: argparse.Namespace) -> int:
    from .method.flops import measured_gflops, schedule_gflops, vit_cost_config
    from .method.schedule import Schedule
    from .models import load_schedule, model_cost_config

    model = None if args.no_measure else _model(args)
    config = model_cost_config(args.model) if model is None else vit_cost_config(model)
    schedule = Schedule.keep_all(config.depth, config.tokens)
    if args.schedule is not None:
        schedule = load_schedule(args.schedule, config)
    record = {"model": args.model, "schedule": args.schedule, "tokens": config.tokens,
              "gflops_original": schedule_gflops(config), "gflops": schedule_gflops(config, schedule)}
    record["flops_ratio"] = record["gflops_original"] / record["gflops"]
    if model is not None:
        record["measured_gflops"] = measured_gflops(model, schedule)
    record["kept_tokens"] = schedule.kept_tokens_per_block(config.tokens)
    print(f"{args.model}: {record['gflops']:.3f} GFLOPs (formula, MACs) of {record['gflops_original']:.3f} "
          f"({record['flops_ratio']:.2f}x fewer)")
    if "measured_gflops" in record:
        print(f"counted: {record['measured_gflops']:.3f} GFLOPs (FlopCounterMode / 2)")
    print("kept tokens per block: " + " ".join(map(str, record["kept_tokens"])))
    return _finish(record, args)


def run_bench(args: argparse.Namespace) -> int:
    from .benchmark import resolve_dtype, throughput
    from .models import load_schedule

    model = _model(args)
    result = throughput(model, load_schedule(args.schedule, model), batch=args.batch_size, device=args.device,
                        dtype=resolve_dtype(args.half, args.device), repeats=args.repeats, warmup=args.warmup)
    print(f"{args.model} on {result['device']} ({result['dtype']}, batch {result['batch']}): "
          f"{result['images_per_s_original']:.1f} -> {result['images_per_s_compressed']:.1f} images/s, "
          f"speedup {result['speedup']:.2f}x at {result['flops_ratio']:.2f}x fewer GFLOPs "
          f"({result['gflops_original']:.3f} -> {result['gflops_compressed']:.3f})")
    return _finish({"model": args.model, "schedule": args.schedule, **result}, args)


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_top1
    from .models import load_schedule

    model = _model(args)
    result = evaluate_top1(model, args.data, split=args.split, schedule=load_schedule(args.schedule, model),
                           batch_size=args.batch_size, limit_per_class=args.limit_per_class, device=args.device,
                           progress=not args.json)
    print(f"{args.model} on {args.data} [{result['split']}, {result['images']} images]: top-1 "
          f"{100 * result['top1_original']:.2f}% -> {100 * result['top1_compressed']:.2f}% at "
          f"{result['gflops_original']:.3f} -> {result['gflops_compressed']:.3f} GFLOPs")
    return _finish({"model": args.model, "schedule": args.schedule, **result}, args)


def run_search(args: argparse.Namespace) -> int:
    from .method.flops import schedule_gflops

    settings = {"max_steps": args.max_steps, "epochs": args.epochs, "batch_size": args.batch_size,
                "limit_per_class": args.limit_per_class, "num_workers": args.num_workers,
                "lambda_flops": args.lambda_flops, "init": args.init, "init_spread": args.init_spread,
                "distill": args.distill or None, "merge_only": args.merge_only or None}
    if args.lr is not None:
        settings["lr"], settings["min_lr"] = args.lr, args.lr / 10
    shared.require_file(args.config, "--config")
    try:
        from .search import search
    except ImportError as error:
        raise UsageError(f"the DiffRate search is not available in this installation ({error})") from None
    model = _model(args)
    overrides = {key: value for key, value in settings.items() if value is not None}
    schedule = search(model, args.data, args.target_gflops, out=args.out, overrides=overrides, config=args.config)
    record = {"model": args.model, "target_gflops": args.target_gflops, "out": str(args.out),
              "gflops": schedule_gflops(model, schedule), **schedule.to_dict()}
    print(f"wrote {args.out}: {record['gflops']:.3f} GFLOPs (target {args.target_gflops:g})")
    return _finish(record, args)


def run_refine(args: argparse.Namespace) -> int:
    import math
    import sys
    import time

    from .models import load_schedule
    from .search.refine import DistillationObjective, load_images, refine_schedule

    model = _model(args)
    schedule = load_schedule(args.schedule, model)
    started = time.perf_counter()
    objective = DistillationObjective(model, load_images(model, args.data, args.split, args.images_per_class))

    def show(move: dict) -> None:
        print(f"{move['move']}: kept {' '.join(map(str, move['kept']))}, {move['gflops']:.4f} GFLOPs, loss "
              f"{move['objective']:.5f}", file=sys.stderr, flush=True)

    result = refine_schedule(model, schedule, objective, args.target_gflops, max_evaluations=args.max_evaluations,
                             progress=show)
    result.schedule.save(args.out)
    record = {"model": args.model, "schedule": args.schedule, "target_gflops": args.target_gflops,
              "out": str(args.out), "gflops": result.gflops, "objective_start": result.start_objective,
              "objective": None if math.isnan(result.objective) else result.objective,  # None: not scored
              "evaluations": result.evaluations, "images": objective.num_images,
              "seconds": round(time.perf_counter() - started, 1), "moves": result.history,
              **result.schedule.to_dict()}
    print(f"wrote {args.out}: {result.gflops:.4f} GFLOPs (target {args.target_gflops:g}), distillation loss "
          f"{result.start_objective:.5f} -> {result.objective:.5f} in {result.evaluations} evaluations, "
          f"{record['seconds']:.0f} s; merge kept " + " ".join(map(str, result.schedule.merge_kept)))
    return _finish(record, args)


def run_uniform(args: argparse.Namespace) -> int:
    from .method.baseline import uniform_schedule
    from .method.flops import schedule_gflops
    from .models import model_cost_config

    config = model_cost_config(args.model)
    schedule = uniform_schedule(config, args.target_gflops, skip_first_block=not args.compress_first_block)
    schedule.save(args.out)
    record = {"model": args.model, "target_gflops": args.target_gflops, "out": str(args.out),
              "gflops": schedule_gflops(config, schedule), "gflops_original": schedule_gflops(config),
              "kept_tokens": schedule.kept_tokens_per_block(config.tokens)}
    print(f"wrote {args.out}: {record['gflops']:.3f} GFLOPs (target {args.target_gflops:g}, original "
          f"{record['gflops_original']:.3f}); kept tokens per block: " + " ".join(map(str, record["kept_tokens"])))
    return _finish(record, args)


def run_plot(args: argparse.Namespace) -> int:
    from .models import load_schedule, model_cost_config
    from .plot import plot_kept_tokens

    config = model_cost_config(args.model)
    path = plot_kept_tokens(load_schedule(args.schedule, config), config.tokens, args.out,
                            title=args.title or args.schedule)
    print(f"wrote {path}")
    return 0
