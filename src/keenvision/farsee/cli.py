"""``keen segment`` and ``keen farsee ...``: parse arguments, call the API, print."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..core.cli import UsageError, add_trainer_options, print_json, trainer_overrides
from ..core.cli import add_json_option as _add_json
from ..core.cli import require_positive as _positive
from ..core.registry import weights_help

WEIGHTS_HELP = weights_help("farsee", "farsee-camvid", "a .safetensors export of `keen farsee train`")


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``"1024x2048"`` -> (1024, 2048): HEIGHTxWIDTH, both at least 32."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", text)
    if match is None:
        raise UsageError(f"{option} {text!r}: expected HEIGHTxWIDTH, e.g. 1024x2048")
    height, width = int(match[1]), int(match[2])
    if height < 32 or width < 32 or height * width > 64_000_000:
        raise UsageError(f"{option} {text!r}: height and width must be at least 32 and the area at most 64e6 pixels")
    return height, width


def add_commands(commands: argparse._SubParsersAction) -> None:
    segment = commands.add_parser("segment", help="semantic segmentation of images, folders and videos (FarSee-Net)",
                                  description="Segment images with FarSee-Net. Writes <stem>_overlay.png (image "
                                              "blended with class colours) and <stem>_labels.png (class indices, "
                                              "8-bit) per image, or per video frame (<stem>_f<frame>_...).")
    segment.add_argument("paths", nargs="+", metavar="PATH", help="images, folders of images/videos, or videos")
    segment.add_argument("--out", type=Path, default=Path("segments"), help="output folder (default ./segments)")
    segment.add_argument("--weights", default="farsee-camvid", help=WEIGHTS_HELP)
    segment.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    segment.add_argument("--every", type=int, default=1, help="segment every k-th video frame (default 1)")
    segment.add_argument("--batch-size", type=int, default=4, help="images of one size per network call")
    segment.add_argument("--alpha", type=float, default=0.5, help="overlay colour opacity in [0, 1] (default 0.5)")
    segment.add_argument("--max-pixels", type=int, default=4_194_304,
                         help="larger images run reduced, labels resized back (default 4194304 = 2048^2)")
    segment.add_argument("--json", action="store_true", help="one JSON object per image or frame on stdout")
    segment.set_defaults(handler=run_segment)

    farsee = commands.add_parser("farsee", help="FarSee-Net tools: training, evaluation, benchmark, ONNX export",
                                 description="FarSee-Net (Zhang & Zhang, ICRA 2020) real-time semantic segmentation. "
                                             "--weights: " + WEIGHTS_HELP + ".")
    tools = farsee.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True

    train = tools.add_parser("train", help="train from a YAML recipe (configs/farsee/camvid.yaml)")
    add_trainer_options(train, "configs/farsee/camvid_mobilenet.yaml")
    train.add_argument("--data", type=Path, help="dataset root (default: the recipe's, else $KEEN_DATA/<dataset>)")
    train.add_argument("--init-weights", help="warm start when there is no checkpoint to resume: a shipped name "
                                              "(farsee-camvid) or an export; the step count continues from its own")
    train.add_argument("--pretrained", action="store_true",
                       help="start from timm's ImageNet backbone weights (downloads them: needs the network)")
    train.set_defaults(handler=run_train)

    evaluate = tools.add_parser("eval", help="mIoU, per-class IoU and pixel accuracy on a labelled split")
    evaluate.add_argument("--data", type=Path, help="dataset root with classes.json and <split>/images|labels, "
                                                    "or a Cityscapes root with leftImg8bit/ and gtFine/ "
                                                    "(default: $KEEN_DATA/camvid)")
    evaluate.add_argument("--split", help="split folder: val (default), test, ...; CamVid folders may be joined "
                                         "with + (train+val, the default with --drive)")
    evaluate.add_argument("--drive", help="CamVid: score only this drive's frames, e.g. 0006R0 (the held-out drive of "
                                          "configs/farsee/camvid_holdout.yaml)")
    evaluate.add_argument("--weights", default="farsee-camvid", help=WEIGHTS_HELP)
    evaluate.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    evaluate.add_argument("--batch-size", type=int, default=2, help="images per forward (default 2)")
    evaluate.add_argument("--limit", type=int, help="first N images only")
    _add_json(evaluate)
    evaluate.set_defaults(handler=run_eval)

    bench = tools.add_parser("bench", help="fps, latency, params and GFLOPs: FarSee-Net variants vs a "
                                           "BiSeNetV2-sized reference (random weights)")
    bench.add_argument("--size", default="1024x2048", help="input HEIGHTxWIDTH (default 1024x2048)")
    bench.add_argument("--device", default="cpu", help="cpu (default, fp32) or cuda (fp16)")
    bench.add_argument("--classes", type=int, default=19, help="output classes (default 19, Cityscapes)")
    bench.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    bench.add_argument("--warmup", type=int, default=1, help="discarded calls per network (default 1)")
    bench.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    _add_json(bench)
    bench.set_defaults(handler=run_bench)

    export = tools.add_parser("export-onnx", help="ONNX file (dynamic batch, fixed HxW, opset 18)")
    export.add_argument("--out", type=Path, required=True, help="output .onnx file")
    export.add_argument("--weights", default="farsee-camvid", help=WEIGHTS_HELP)
    export.add_argument("--size", default="360x480", help="input HEIGHTxWIDTH fixed in the graph (default 360x480)")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 18 (default 18)")
    export.add_argument("--check", action="store_true",
                        help="compare ONNX Runtime's logits with torch's on a random image (needs onnxruntime)")
    _add_json(export)
    export.set_defaults(handler=run_export)


def run_segment(args: argparse.Namespace) -> int:
    from ..core.io import UniqueStems
    from ..core.progress import progress_bar
    from .segment import Segmenter, write_outputs

    _positive(args.every, "--every")
    _positive(args.batch_size, "--batch-size")
    _positive(args.max_pixels, "--max-pixels")
    if not 0 <= args.alpha <= 1:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    segmenter = Segmenter(args.weights, device=args.device, batch_size=args.batch_size, max_pixels=args.max_pixels)
    processed = failed = 0
    stems = UniqueStems()  # same file name in two folders: keep both
    results = segmenter.segment_files(args.paths, every=args.every)
    for result, image in progress_bar(results, desc="segment", unit="img", enabled=not args.json):
        if result.error is not None:
            failed += 1
            print(f"keen segment: skipped {result.error}", file=sys.stderr)
            if args.json:
                print_json(result.to_dict(segmenter.class_names))
            continue
        stem = stems(result.path) + (f"_f{result.frame:06d}" if result.frame is not None else "")
        written = write_outputs(result, image, args.out, segmenter.palette, args.alpha, stem=stem)
        processed += 1
        record = result.to_dict(segmenter.class_names)
        record["overlay"], record["labels"] = str(written[0]), str(written[1])
        if args.json:
            print_json(record)
        else:
            where = f"{result.path}" + (f" frame {result.frame}" if result.frame is not None else "")
            top = ", ".join(f"{name} {share:.0%}" for name, share in list(record["class_fractions"].items())[:3])
            print(f"{where}: {record['width']}x{record['height']}, {top} -> {written[0].name}", flush=True)
    if processed == 0:
        raise UsageError("no readable image or video frame among the inputs"
                         + (f" ({failed} failed)" if failed else ""))
    print(f"keen segment: {processed} image(s)/frame(s) written to {args.out}, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def run_train(args: argparse.Namespace) -> int:
    from .train import train_farsee

    overrides = trainer_overrides(args)
    extra = {"data_root": str(args.data) if args.data else None, "init_weights": args.init_weights,
             "model": {"pretrained": True} if args.pretrained else None}
    overrides |= {key: value for key, value in extra.items() if value is not None}
    weights = train_farsee(args.config, overrides)
    print(f"trained weights: {weights}")
    return 0


def _load(weights: str, device: str | None):
    from .segment import load_model

    return load_model(weights, device)


def run_eval(args: argparse.Namespace) -> int:
    from ..core.bench import format_table
    from ..core.data import data_root
    from .evaluate import evaluate_segmentation

    _positive(args.batch_size, "--batch-size")
    _positive(args.limit, "--limit")
    data = args.data or data_root() / "camvid"
    if not data.is_dir():
        raise UsageError(f"--data {data}: no such folder")
    args.split = args.split or ("train+val" if args.drive else "val")
    for part in args.split.split("+"):
        split_folder = data / "leftImg8bit" / part if (data / "leftImg8bit").is_dir() else data / part
        if not split_folder.is_dir():
            raise UsageError(f"--split {args.split}: {split_folder} does not exist")
    model = _load(args.weights, args.device)
    result = evaluate_segmentation(model, data, args.split, batch_size=args.batch_size,
                                   device=next(model.parameters()).device, limit=args.limit, drive=args.drive,
                                   progress=not args.json)
    for message in result["skipped"]:
        print(f"keen farsee eval: skipped {message}", file=sys.stderr)
    rows = [[name, "absent" if value is None else f"{100 * value:.2f}"]
            for name, value in result["per_class_iou"].items()]
    print(format_table(["class", "IoU %"], rows))
    where = f"{args.split}, drive {args.drive}" if args.drive else args.split
    print(f"{args.weights} on {data} [{where}, {result['images']} images]: mIoU {100 * result['miou']:.2f}%, "
          f"pixel accuracy {100 * result['pixel_accuracy']:.2f}%")
    if args.json:
        print_json({"weights": str(args.weights), "data": str(data), **result})
    return 1 if result["skipped"] else 0  # scored, but not every pair: say so in the exit status


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..core.bench import format_table
    from .benchmark import benchmark_networks

    size = parse_size(args.size)
    _positive(args.classes, "--classes")
    _positive(args.repeats, "--repeats")
    _positive(args.threads, "--threads")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = benchmark_networks(size, args.device, num_classes=args.classes, repeats=args.repeats,
                                warmup=args.warmup)
    print(f"FarSee-Net speed at {size[0]}x{size[1]}, batch 1, {result['dtype']} on {result['device']}, "
          f"{result['threads']} threads, median of {args.repeats} rounds, random weights")
    rows = [[row["network"], f"{row['params'] / 1e6:.2f}", f"{row['gflops']:.1f}", f"{row['latency_ms']:.1f}",
             f"{row['fps']:.2f}"] for row in result["rows"]]
    print(format_table(["network", "params (M)", "GFLOPs", "latency (ms)", "fps"], rows))
    if args.json:
        print_json(result)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .export import ONNX_EXTRA_HINT, export_onnx, onnx_parity, onnx_runtime_available

    size = parse_size(args.size)
    if args.opset < 18:
        raise UsageError(f"--opset {args.opset}: the exporter writes opset 18 or newer")
    if args.check and not onnx_runtime_available():
        raise UsageError(f"--check needs onnxruntime ({ONNX_EXTRA_HINT})")
    model = _load(args.weights, "cpu")
    try:
        path = export_onnx(model, args.out, size, opset=args.opset)
    except ImportError as error:
        raise UsageError(str(error)) from None
    record = {"out": str(path), "size": list(size), "opset": args.opset, "weights": str(args.weights)}
    print(f"wrote {path} (input images [N, 3, {size[0]}, {size[1]}], opset {args.opset})")
    if args.check:
        import torch

        images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
        record["max_abs_difference"] = onnx_parity(model, path, images)
        print(f"ONNX Runtime vs torch, batch 2: largest logit difference {record['max_abs_difference']:.2e}")
    if args.json:
        print_json(record)
    return 0
