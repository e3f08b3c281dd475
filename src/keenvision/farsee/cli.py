"""``keen segment`` and ``keen farsee ...``: parse arguments, call the API, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core import cli as shared
from ..core.errors import UsageError
from ..core.registry import weights_help

DEFAULT_WEIGHTS = "farsee-camvid"
WEIGHTS_EXTRA = "a .safetensors export of `keen farsee train`"
WEIGHTS_HELP = weights_help("farsee", DEFAULT_WEIGHTS, WEIGHTS_EXTRA)  # also `keen batch segment`'s


def add_commands(commands: argparse._SubParsersAction, tools: argparse._SubParsersAction) -> None:
    segment = shared.add_input_command(
        commands, "segment", "semantic segmentation of images, folders and videos (FarSee-Net)",
        "Segment images with FarSee-Net. Writes <stem>_overlay.png (image blended with class colours) and "
        "<stem>_labels.png (class indices, 8-bit) per image, or per video frame (<stem>_f<frame>_...).",
        "output folder (default ./segments)", "segments", handler=run_segment)
    shared.add_weights_option(segment, "farsee", DEFAULT_WEIGHTS, WEIGHTS_EXTRA)
    shared.add_device_option(segment)
    shared.add_option(segment, "--every", type=int, default=1, minimum=1, help="segment every k-th video frame "
                                                                                "(default 1)")
    shared.add_option(segment, "--batch-size", type=int, default=4, minimum=1, help="images of one size per call")
    shared.add_option(segment, "--alpha", type=float, default=0.5, minimum=0, maximum=1,
                      help="overlay colour opacity in [0, 1] (default 0.5)")
    shared.add_option(segment, "--max-pixels", type=int, default=4_194_304, minimum=1,
                      help="larger images run reduced, labels resized back (default 4194304 = 2048^2)")

    evaluate = tools.add_parser("eval", help="mIoU, per-class IoU and pixel accuracy on a labelled split")
    evaluate.add_argument("--data", type=Path, help="dataset root with classes.json and <split>/images|labels, "
                                                    "or a Cityscapes root with leftImg8bit/ and gtFine/ "
                                                    "(default: $KEEN_DATA/camvid)")
    evaluate.add_argument("--split", help="split folder: val (default), test, ...; CamVid folders may be joined "
                                         "with + (train+val, the default with --drive)")
    evaluate.add_argument("--drive", help="CamVid: score only this drive's frames, e.g. 0006R0 (the held-out drive of "
                                          "configs/farsee/camvid_holdout.yaml)")
    shared.add_weights_option(evaluate, "farsee", DEFAULT_WEIGHTS, WEIGHTS_EXTRA)
    shared.add_device_option(evaluate)
    shared.add_option(evaluate, "--batch-size", type=int, default=2, minimum=1, help="images per forward (default 2)")
    shared.add_option(evaluate, "--limit", type=int, minimum=1, help="first N images only")
    shared.add_json_option(evaluate)
    evaluate.set_defaults(handler=run_eval)

    bench = tools.add_parser("bench", help="fps, latency, params and GFLOPs: FarSee-Net variants vs ENet-, ESPNet-, "
                                           "DDRNet-23-slim- and BiSeNetV2-sized references (random weights)")
    shared.add_size_option(bench, "--size", "384x480 720x960", "input sizes", several=True)
    shared.add_device_option(bench, "cpu", "cpu (default, fp32) or cuda (fp16)")
    shared.add_option(bench, "--classes", type=int, default=11, minimum=1, help="output classes (default 11, CamVid)")
    shared.add_option(bench, "--repeats", type=int, default=5, minimum=1, help="timed rounds (default 5)")
    shared.add_option(bench, "--warmup", type=int, default=1, minimum=0, help="discarded calls per network (default 1)")
    shared.add_threads_option(bench)
    shared.add_json_option(bench)
    bench.set_defaults(handler=run_bench)

    export = tools.add_parser("export-onnx", help="ONNX file (dynamic batch, fixed HxW, opset 18)")
    shared.add_out_option(export, "output .onnx file", required=True)
    shared.add_weights_option(export, "farsee", DEFAULT_WEIGHTS, WEIGHTS_EXTRA)
    shared.add_size_option(export, "--size", "360x480", "input size fixed in the graph")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 18 (default 18)")
    export.add_argument("--check", action="store_true",
                        help="compare ONNX Runtime's logits with torch's on a random image (needs onnxruntime)")
    shared.add_json_option(export)
    export.set_defaults(handler=run_export)


def train_options(parser: argparse.ArgumentParser) -> None:
    """FarSee-Net's own ``train`` options (`core.system.Training.options`)."""
    parser.add_argument("--data", type=Path, help="dataset root (default: the recipe's, else $KEEN_DATA/<dataset>)")
    parser.add_argument("--init-weights", help="warm start when there is no checkpoint to resume: a shipped name "
                                               "(farsee-camvid) or an export; the step count continues from its own")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from timm's ImageNet backbone weights (downloads them: needs the network)")


def train_overrides(args: argparse.Namespace) -> dict:
    extra = {"data_root": str(args.data) if args.data else None, "init_weights": args.init_weights,
             "model": {"pretrained": True} if args.pretrained else None}
    return {key: value for key, value in extra.items() if value is not None}


def run_segment(args: argparse.Namespace) -> int:
    from ..core.io import UniqueStems
    from .segment import Segmenter, write_outputs

    segmenter = Segmenter(args.weights, device=args.device, batch_size=args.batch_size, max_pixels=args.max_pixels)
    stems = UniqueStems()  # same file name in two folders: keep both

    def results():
        for result, image in segmenter.segment_files(args.paths, every=args.every):
            record = result.to_dict(segmenter.class_names)
            if result.error is not None:
                yield shared.InputResult(record, error=result.error)
                continue
            stem = stems(result.path) + (f"_f{result.frame:06d}" if result.frame is not None else "")
            written = write_outputs(result, image, args.out, segmenter.palette, args.alpha, stem=stem)
            record["overlay"], record["labels"] = str(written[0]), str(written[1])
            where = f"{result.path}" + (f" frame {result.frame}" if result.frame is not None else "")
            top = ", ".join(f"{name} {share:.0%}" for name, share in list(record["class_fractions"].items())[:3])
            line = f"{where}: {record['width']}x{record['height']}, {top} -> {written[0].name}"
            yield shared.InputResult(record, line)

    return shared.run_per_input("segment", results(), args.json, "no readable image or video frame among the inputs",
                         lambda done, failed: f"{done} image(s)/frame(s) written to {args.out}, {failed} failed")


def run_eval(args: argparse.Namespace) -> int:
    from ..core.bench import format_table
    from ..core.data import data_root
    from .data import check_split
    from .evaluate import evaluate_segmentation
    from .segment import load_model

    data = args.data or data_root() / "camvid"
    shared.require_folder(data, "--data")
    split = args.split or ("train+val" if args.drive else "val")
    check_split(data, split)
    model = load_model(args.weights, args.device)
    result = evaluate_segmentation(model, data, split, batch_size=args.batch_size,
                                   device=next(model.parameters()).device, limit=args.limit, drive=args.drive,
                                   progress=not args.json)
    for message in result["skipped"]:
        print(f"keen farsee eval: skipped {message}", file=sys.stderr)
    rows = [[name, "absent" if value is None else f"{100 * value:.2f}"]
            for name, value in result["per_class_iou"].items()]
    print(format_table(["class", "IoU %"], rows))
    where = f"{split}, drive {args.drive}" if args.drive else split
    print(f"{args.weights} on {data} [{where}, {result['images']} images]: mIoU {100 * result['miou']:.2f}%, "
          f"pixel accuracy {100 * result['pixel_accuracy']:.2f}%")
    if args.json:
        shared.print_json({"weights": str(args.weights), "data": str(data), **result})
    return 1 if result["skipped"] else 0  # scored, but not every pair: say so in the exit status


def run_bench(args: argparse.Namespace) -> int:
    from ..core.bench import format_table
    from .benchmark import benchmark_networks

    shared.set_threads(args.threads)
    results = [benchmark_networks(size, args.device, num_classes=args.classes, repeats=args.repeats,
                                  warmup=args.warmup) for size in args.size]
    first = results[0]
    print(f"FarSee-Net speed, batch 1, {first['dtype']} on {first['device']}, {first['threads']} threads, "
          f"{args.classes} classes, median of {args.repeats} alternating rounds, random weights")
    rows = [[f"{result['size'][0]}x{result['size'][1]}", row["network"], f"{row['params'] / 1e6:.2f}",
             f"{row['gflops']:.1f}", f"{row['latency_ms']:.1f}", f"{row['fps']:.2f}", f"{row['fps_vs_enet']:.2f}x"]
            for result in results for row in result["rows"]]
    print(format_table(["input HxW", "network", "params (M)", "GFLOPs", "latency (ms)", "fps", "fps vs ENet"], rows))
    if args.json:
        shared.print_json(results[0] if len(results) == 1 else {"results": results})
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .export import ONNX_EXTRA_HINT, export_onnx, onnx_parity, onnx_runtime_available
    from .segment import load_model

    if args.opset < 18:
        raise UsageError(f"--opset {args.opset}: the exporter writes opset 18 or newer")
    if args.check and not onnx_runtime_available():
        raise UsageError(f"--check needs onnxruntime ({ONNX_EXTRA_HINT})")
    model = load_model(args.weights, "cpu")
    try:
        path = export_onnx(model, args.out, args.size, opset=args.opset)
    except ImportError as error:
        raise UsageError(str(error)) from None
    record = {"out": str(path), "size": list(args.size), "opset": args.opset, "weights": str(args.weights)}
    print(f"wrote {path} (input images [N, 3, {args.size[0]}, {args.size[1]}], opset {args.opset})")
    if args.check:
        import torch

        images = torch.randn(2, 3, *args.size, generator=torch.Generator().manual_seed(0))
        record["max_abs_difference"] = onnx_parity(model, path, images)
        print(f"ONNX Runtime vs torch, batch 2: largest logit difference {record['max_abs_difference']:.2e}")
    if args.json:
        shared.print_json(record)
    return 0
