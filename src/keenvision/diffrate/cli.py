"""``keen diffrate ...``: cost, speed, accuracy, search and plots of DiffRate schedules. Parses, calls, prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.cli import UsageError, add_trainer_options, print_json, trainer_overrides
from ..core.cli import add_json_option as _add_json
from ..core.cli import require_positive as _positive

MODEL_HELP = ("timm ViT name (random weights unless --pretrained), a .safetensors export of "
              "keenvision.diffrate.train, or cifar10-vit")
SCHEDULE_HELP = ("schedule JSON (ours or one public entry), compression_rate.json#MODEL/GFLOPS, or "
                 "published:MODEL/GFLOPS (e.g. published:ViT-S-DeiT/2.9)")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--pretrained", action="store_true",
                        help="download timm hub weights for a timm name (opt-in: needs the network)")


def add_commands(commands: argparse._SubParsersAction) -> None:
    diffrate = commands.add_parser("diffrate", help="DiffRate token pruning/merging: FLOPs, speed, accuracy, search",
                                   description="DiffRate (Chen et al., ICCV 2023) for timm ViTs. --model: "
                                               + MODEL_HELP + ". --schedule: " + SCHEDULE_HELP + ".")
    tools = diffrate.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True

    flops = tools.add_parser("flops", help="GFLOPs (the paper's MAC formula and counted) and kept tokens per block")
    _add_model_arguments(flops)
    flops.add_argument("--schedule", help=SCHEDULE_HELP + " (default: no compression)")
    flops.add_argument("--no-measure", action="store_true",
                       help="formula only: do not build the model and count its FLOPs (for huge models)")
    _add_json(flops)
    flops.set_defaults(handler=run_flops)

    bench = tools.add_parser("bench", help="images/s of the original and the compressed model, same run")
    _add_model_arguments(bench)
    bench.add_argument("--schedule", required=True, help=SCHEDULE_HELP)
    bench.add_argument("--batch", type=int, default=64, help="images per forward (default 64)")
    bench.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    bench.add_argument("--half", action="store_true", help="fp16 on CUDA, bf16 on CPU (default fp32)")
    bench.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    bench.add_argument("--warmup", type=int, default=2, help="discarded rounds (default 2)")
    _add_json(bench)
    bench.set_defaults(handler=run_bench)

    evaluate = tools.add_parser("eval", help="top-1 of the original and the compressed model, same images")
    _add_model_arguments(evaluate)
    evaluate.add_argument("--data", type=Path, required=True,
                          help="<split>/<class>/<image>, <split>.zip or <class>/<image> folder (e.g. .../cifar10)")
    evaluate.add_argument("--schedule", required=True, help=SCHEDULE_HELP)
    evaluate.add_argument("--split", default="test", help="split folder or zip name (default test)")
    evaluate.add_argument("--limit-per-class", type=int, help="first N images of every class only")
    evaluate.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    _add_json(evaluate)
    evaluate.set_defaults(handler=run_eval)

    search = tools.add_parser("search", help="search a schedule for a GFLOPs target (differentiable rates)")
    _add_model_arguments(search)
    search.add_argument("--data", type=Path, required=True, help="training images (same layouts as eval)")
    search.add_argument("--target-gflops", type=float, required=True, help="GFLOPs (GMACs) budget")
    search.add_argument("--out", type=Path, required=True, help="schedule JSON to write")
    search.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (default: 3 epochs)")
    search.add_argument("--epochs", type=int, help="passes over the data (default 3, the paper's ImageNet recipe)")
    search.add_argument("--batch-size", type=int, help="images per step (default 256)")
    search.add_argument("--limit-per-class", type=int, help="first N images of every class only (quick runs)")
    search.add_argument("--num-workers", type=int, help="data-loading processes (default 2)")
    search.add_argument("--lambda-flops", type=float,
                        help="weight of (GFLOPs - target)^2 (default 5, the paper's; small models need more)")
    search.add_argument("--lr", type=float, help="rate-logit learning rate (default 0.01, cosine to a tenth)")
    search.add_argument("--init", help="start the rates at 'uniform' (the ToMe-like baseline at the target) or at "
                                       "a schedule (file, published:, shipped:); default: uniform over candidates")
    search.add_argument("--init-spread", type=float,
                        help="tokens: width of the start distribution around --init's counts (default 2); wider "
                             "lets a short search move further from its start")
    search.add_argument("--distill", action="store_true",
                        help="fit the uncompressed model's softmax instead of the labels (the model's own outputs)")
    search.add_argument("--merge-only", action="store_true",
                        help="search merge rates only (prune rates fixed at keep-all): dropping tokens costs small "
                             "models more than merging them")
    search.add_argument("--config", type=Path,
                        help="search recipe YAML (e.g. configs/diffrate/search.yaml); flags override it")
    _add_json(search)
    search.set_defaults(handler=run_search)

    refine = tools.add_parser("refine", help="polish a merge-only schedule at an exact GFLOPs budget (pattern "
                                             "search on the distillation loss over training images)")
    _add_model_arguments(refine)
    refine.add_argument("--data", type=Path, required=True, help="training images (same layouts as eval)")
    refine.add_argument("--schedule", required=True, help=SCHEDULE_HELP + " (merge-only, e.g. a --merge-only search)")
    refine.add_argument("--target-gflops", type=float, required=True, help="GFLOPs (GMACs) budget, never exceeded")
    refine.add_argument("--out", type=Path, required=True, help="schedule JSON to write")
    refine.add_argument("--split", default="train", help="split folder or zip name (default train)")
    refine.add_argument("--images-per-class", type=int, default=200,
                        help="first N images of every class score the moves (default 200)")
    refine.add_argument("--max-evaluations", type=int, default=40,
                        help="objective evaluations at most, the start included (default 40)")
    _add_json(refine)
    refine.set_defaults(handler=run_refine)

    uniform = tools.add_parser("uniform", help="ToMe-like baseline: merge the same count per block for a target")
    _add_model_arguments(uniform)
    uniform.add_argument("--target-gflops", type=float, required=True, help="GFLOPs (GMACs) budget, hit from below")
    uniform.add_argument("--out", type=Path, required=True, help="schedule JSON to write")
    uniform.add_argument("--compress-first-block", action="store_true",
                         help="also merge in block 0 (default: block 0 untouched, DiffRate's DeiT convention)")
    _add_json(uniform)
    uniform.set_defaults(handler=run_uniform)

    plot = tools.add_parser("plot", help="PNG of kept tokens per block (after prune and after merge)")
    _add_model_arguments(plot)
    plot.add_argument("--schedule", required=True, help=SCHEDULE_HELP)
    plot.add_argument("--out", type=Path, required=True, help="PNG to write")
    plot.add_argument("--title", help="figure title (default: the schedule argument)")
    plot.set_defaults(handler=run_plot)

    train = tools.add_parser("train", help="train the CIFAR-10 ViT (or fine-tune it under a fixed schedule)")
    add_trainer_options(train, "configs/diffrate/cifar10_vit.yaml")
    train.add_argument("--schedule", help="fine-tune with this fixed DiffRate schedule (" + SCHEDULE_HELP + ")")
    train.set_defaults(handler=run_train)


def _print_summary(record: dict, as_json: bool) -> None:
    if as_json:
        print_json(record)


def run_train(args: argparse.Namespace) -> int:
    from .train import train_cifar_vit

    overrides = trainer_overrides(args) | ({"schedule": args.schedule} if args.schedule else {})
    print(f"trained weights: {train_cifar_vit(args.config, overrides)}")
    return 0


def run_flops(args: argparse.Namespace) -> int:
    from .flops import measured_gflops, schedule_gflops, vit_cost_config
    from .models import load_model
    from .resolve import load_schedule, model_cost_config
    from .schedule import Schedule

    model = None if args.no_measure else load_model(args.model, pretrained=args.pretrained)
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
    _print_summary(record, args.json)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .benchmark import resolve_dtype, throughput
    from .models import load_model
    from .resolve import load_schedule

    _positive(args.batch, "--batch")
    _positive(args.repeats, "--repeats")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    model = load_model(args.model, pretrained=args.pretrained)
    schedule = load_schedule(args.schedule, model)
    result = throughput(model, schedule, batch=args.batch, device=args.device,
                        dtype=resolve_dtype(args.half, args.device), repeats=args.repeats, warmup=args.warmup)
    record = {"model": args.model, "schedule": args.schedule, **result}
    print(f"{args.model} on {result['device']} ({result['dtype']}, batch {result['batch']}): "
          f"{result['images_per_s_original']:.1f} -> {result['images_per_s_compressed']:.1f} images/s, "
          f"speedup {result['speedup']:.2f}x at {result['flops_ratio']:.2f}x fewer GFLOPs "
          f"({result['gflops_original']:.3f} -> {result['gflops_compressed']:.3f})")
    _print_summary(record, args.json)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_top1
    from .models import load_model
    from .resolve import load_schedule

    _positive(args.limit_per_class, "--limit-per-class")
    _positive(args.batch_size, "--batch-size")
    model = load_model(args.model, pretrained=args.pretrained)
    schedule = load_schedule(args.schedule, model)
    result = evaluate_top1(model, args.data, split=args.split, schedule=schedule, batch_size=args.batch_size,
                           limit_per_class=args.limit_per_class, device=args.device, progress=not args.json)
    record = {"model": args.model, "schedule": args.schedule, **result}
    print(f"{args.model} on {args.data} [{result['split']}, {result['images']} images]: top-1 "
          f"{100 * result['top1_original']:.2f}% -> {100 * result['top1_compressed']:.2f}% at "
          f"{result['gflops_original']:.3f} -> {result['gflops_compressed']:.3f} GFLOPs")
    _print_summary(record, args.json)
    return 0


def run_search(args: argparse.Namespace) -> int:
    from .flops import schedule_gflops
    from .models import load_model

    settings = {"max_steps": args.max_steps, "epochs": args.epochs, "batch_size": args.batch_size,
                "limit_per_class": args.limit_per_class, "num_workers": args.num_workers}
    if args.lambda_flops is not None and args.lambda_flops <= 0:
        raise UsageError(f"--lambda-flops must be > 0, got {args.lambda_flops}")
    for key, value in settings.items():
        if key == "num_workers":
            if value is not None and value < 0:
                raise UsageError(f"--num-workers must be >= 0, got {value}")
        else:
            _positive(value, "--" + key.replace("_", "-"))
    if args.target_gflops <= 0:
        raise UsageError(f"--target-gflops must be > 0, got {args.target_gflops}")
    try:
        from .search import search
    except ImportError as error:
        raise UsageError(f"the DiffRate search is not available in this installation ({error})") from None
    model = load_model(args.model, pretrained=args.pretrained)
    overrides = {key: value for key, value in settings.items() if value is not None}
    if args.lambda_flops is not None:
        overrides["lambda_flops"] = args.lambda_flops
    if args.lr is not None:
        if args.lr <= 0:
            raise UsageError(f"--lr must be > 0, got {args.lr}")
        overrides["lr"], overrides["min_lr"] = args.lr, args.lr / 10
    if args.init is not None:
        overrides["init"] = args.init
    if args.init_spread is not None:
        if args.init_spread <= 0:
            raise UsageError(f"--init-spread must be > 0, got {args.init_spread}")
        overrides["init_spread"] = args.init_spread
    if args.distill:
        overrides["distill"] = True
    if args.merge_only:
        overrides["merge_only"] = True
    if args.config is not None and not args.config.is_file():
        raise UsageError(f"--config {args.config}: no such file")
    schedule = search(model, args.data, args.target_gflops, out=args.out, overrides=overrides, config=args.config)
    record = {"model": args.model, "target_gflops": args.target_gflops, "out": str(args.out),
              "gflops": schedule_gflops(model, schedule), **schedule.to_dict()}
    print(f"wrote {args.out}: {record['gflops']:.3f} GFLOPs (target {args.target_gflops:g})")
    _print_summary(record, args.json)
    return 0


def run_refine(args: argparse.Namespace) -> int:
    import math
    import sys
    import time

    from .models import load_model
    from .refine import DistillationObjective, load_images, refine_schedule
    from .resolve import load_schedule

    _positive(args.images_per_class, "--images-per-class")
    _positive(args.max_evaluations, "--max-evaluations")
    if args.target_gflops <= 0:
        raise UsageError(f"--target-gflops must be > 0, got {args.target_gflops}")
    model = load_model(args.model, pretrained=args.pretrained)
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
              "evaluations": result.evaluations,
              "images": objective.num_images,
              "seconds": round(time.perf_counter() - started, 1), "moves": result.history,
              **result.schedule.to_dict()}
    print(f"wrote {args.out}: {result.gflops:.4f} GFLOPs (target {args.target_gflops:g}), distillation loss "
          f"{result.start_objective:.5f} -> {result.objective:.5f} in {result.evaluations} evaluations, "
          f"{record['seconds']:.0f} s; merge kept " + " ".join(map(str, result.schedule.merge_kept)))
    _print_summary(record, args.json)
    return 0


def run_uniform(args: argparse.Namespace) -> int:
    from .baseline import uniform_schedule
    from .flops import schedule_gflops
    from .resolve import model_cost_config

    config = model_cost_config(args.model)
    schedule = uniform_schedule(config, args.target_gflops, skip_first_block=not args.compress_first_block)
    schedule.save(args.out)
    record = {"model": args.model, "target_gflops": args.target_gflops, "out": str(args.out),
              "gflops": schedule_gflops(config, schedule), "gflops_original": schedule_gflops(config),
              "kept_tokens": schedule.kept_tokens_per_block(config.tokens)}
    print(f"wrote {args.out}: {record['gflops']:.3f} GFLOPs (target {args.target_gflops:g}, original "
          f"{record['gflops_original']:.3f}); kept tokens per block: " + " ".join(map(str, record["kept_tokens"])))
    _print_summary(record, args.json)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from .plot import plot_kept_tokens
    from .resolve import load_schedule, model_cost_config

    config = model_cost_config(args.model)
    schedule = load_schedule(args.schedule, config)
    path = plot_kept_tokens(schedule, config.tokens, args.out, title=args.title or args.schedule)
    print(f"wrote {path}")
    return 0
