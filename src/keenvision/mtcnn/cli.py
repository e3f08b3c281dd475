"""``keen detect`` and ``keen mtcnn ...``: parse arguments, call the API, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.cli import UsageError, add_trainer_options, print_json, trainer_overrides


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def _add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detector")
    group.add_argument("--weights", help="safetensors with pnet./rnet./onet. tensors (default: the authors' weights)")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    group.add_argument("--min-face", type=float, default=20, help="smallest face to find, pixels (default 20)")
    group.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.7), metavar=("P", "R", "O"),
                       help="P/R/O-Net face probabilities (default 0.6 0.7 0.7; WIDER FACE setting 0.5 0.5 0.3)")
    group.add_argument("--factor", type=float, default=0.709, help="pyramid scale step (default 0.709)")
    group.add_argument("--max-pixels", type=int, default=16_000_000,
                       help="larger images are reduced to this many pixels first, results mapped back (default 16e6)")
    group.add_argument("--pipeline", choices=["official", "facenet-pytorch"], default="official",
                       help="follow the authors' MATLAB code (default) or reproduce facenet-pytorch's outputs")


def make_detector(args: argparse.Namespace):
    from .detector import MTCNN

    return MTCNN(weights=args.weights, device=args.device, min_face_size=args.min_face,
                 thresholds=tuple(args.thresholds), factor=args.factor, pipeline=args.pipeline,
                 max_image_pixels=args.max_pixels)


def add_commands(commands: argparse._SubParsersAction) -> None:
    detect = commands.add_parser("detect", help="find faces and 5 landmarks in images, folders and videos",
                                 description="Detect faces with MTCNN. Prints one line per image or video frame "
                                             "(JSON with --json); --out writes annotated images and, with "
                                             "--align, aligned face crops.")
    detect.add_argument("paths", nargs="+", metavar="PATH", help="images, folders of images/videos, or videos")
    detect.add_argument("--out", type=Path, help="folder for annotated images (and aligned crops)")
    detect.add_argument("--json", action="store_true", help="one JSON object per image or frame on stdout")
    detect.add_argument("--align", action="store_true", help="write aligned crops to OUT/aligned/")
    detect.add_argument("--align-size", type=_size, default=(96, 112), help="96x112 (default) or 112x112")
    detect.add_argument("--batch-size", type=int, default=8, help="images or frames per detector call")
    detect.add_argument("--video-step", type=int, default=1, help="detect every k-th video frame")
    _add_detector_arguments(detect)
    detect.set_defaults(handler=run_detect)

    mtcnn = commands.add_parser("mtcnn", help="MTCNN tools: weight import, training, evaluation, benchmark")
    tools = mtcnn.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True

    convert = tools.add_parser("import-caffe", help="convert the authors' det1-3.caffemodel to safetensors")
    convert.add_argument("directory", type=Path, help="folder with det1-3.caffemodel")
    convert.add_argument("output", type=Path, help="output .safetensors file")
    convert.set_defaults(handler=run_import_caffe)

    train = tools.add_parser("train", help="train one stage (P/R/O-Net) from a YAML recipe")
    add_trainer_options(train, "configs/mtcnn/{pnet,rnet,onet}.yaml")
    train.set_defaults(handler=run_train)

    merge = tools.add_parser("merge", help="join trained stage files into one detector weights file")
    merge.add_argument("output", type=Path, help="output .safetensors (load with MTCNN(weights=...) or --weights)")
    for stage in ("pnet", "rnet", "onet"):
        merge.add_argument(f"--{stage}", type=Path, help=f"{stage}.safetensors from training (default: shipped)")
    merge.set_defaults(handler=run_merge)

    evaluate = tools.add_parser("eval", help="the paper's metrics: WIDER FACE AP, FDDB ROC, dlib examples")
    benchmarks = evaluate.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    benchmarks.required = True
    wider = benchmarks.add_parser("widerface", help="easy/medium/hard AP from <event>/<image>.txt predictions")
    wider.add_argument("--pred", type=Path, required=True, help="prediction folder (WIDER FACE layout)")
    wider.add_argument("--gt", type=Path, required=True, help="folder with wider_face_val.mat and the easy/medium/"
                                                              "hard .mat files")
    fddb = benchmarks.add_parser("fddb", help="discrete ROC from FDDB-format detections")
    fddb.add_argument("--pred", type=Path, required=True, help="detection file or folder of them (FDDB format)")
    fddb.add_argument("--gt", type=Path, required=True, help="FDDB-folds folder (ellipse lists)")
    dlib = benchmarks.add_parser("dlib-examples", help="recall, IoU and 5-point error on dlib's example faces")
    dlib.add_argument("--data", type=Path, help="faces_dlib_examples folder (default: $KEEN_DATA/faces_dlib_examples)")
    _add_detector_arguments(dlib)
    for parser in (wider, fddb, dlib):
        parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    wider.set_defaults(handler=run_eval)
    fddb.set_defaults(handler=run_eval)
    dlib.set_defaults(handler=run_eval)

    bench = tools.add_parser("bench", help="frames per second of the detector on this machine")
    bench.add_argument("--input", type=Path, help="an image or video (default: the shared sample video, else the "
                                                  "embedded astronaut photo)")
    bench.add_argument("--batch", type=int, default=8, help="frames per call in the batched mode (default 8)")
    bench.add_argument("--frames", type=int, default=32, help="frames to time (default 32)")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    _add_detector_arguments(bench)
    bench.set_defaults(handler=run_bench)

    export = tools.add_parser("export-onnx", help="pnet.onnx, rnet.onnx, onet.onnx (dynamic batch; P-Net dynamic HxW)")
    export.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    export.add_argument("--weights", help="detector weights: mtcnn-caffe (the default) or a .safetensors file")
    export.add_argument("--check", action="store_true", help="compare ONNX Runtime with torch on random inputs")
    export.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    export.set_defaults(handler=run_export)


def run_detect(args: argparse.Namespace) -> int:
    from ..core.io import UniqueStems
    from ..core.progress import progress_bar
    from .files import detect_files, write_outputs

    if args.batch_size < 1 or args.video_step < 1:
        raise UsageError("--batch-size and --video-step must be >= 1")
    if args.align and args.out is None:
        raise UsageError("--align needs --out DIR")
    detector = make_detector(args)
    processed = failed = faces = 0
    stems = UniqueStems()  # a/p.jpg and b/p.jpg: p.jpg and p_2.jpg, never one over the other
    results = detect_files(detector, args.paths, batch_size=args.batch_size, video_step=args.video_step)
    for result, image in progress_bar(results, desc="detect", unit="img", enabled=not args.json):
        if result.error is not None:
            failed += 1
            print(f"keen detect: skipped {result.error}", file=sys.stderr)
            if args.json:
                print_json(result.to_dict())
            continue
        processed += 1
        faces += len(result.faces)
        if args.out is not None:
            write_outputs(result, image, args.out, aligned_size=args.align_size if args.align else None,
                          stem=stems(result.path))
        if args.json:
            print_json(result.to_dict())
        else:
            where = f"{result.path}" + (f" frame {result.frame}" if result.frame is not None else "")
            print(f"{where}: {len(result.faces)} face(s)", flush=True)
    if processed == 0:
        raise UsageError("no readable image or video frame among the inputs"
                         + (f" ({failed} failed)" if failed else ""))
    print(f"keen detect: {processed} image(s)/frame(s), {faces} face(s), {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def run_import_caffe(args: argparse.Namespace) -> int:
    from ..core.weights import save_weights
    from .caffe import convert_mtcnn_caffe

    state = convert_mtcnn_caffe(args.directory)
    digest = save_weights(state, args.output, {"source": "MTCNN det1-3.caffemodel (Zhang et al. 2016), MIT licence"})
    print(f"wrote {args.output} ({len(state)} tensors, sha256 {digest})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from .train import train_from_config

    weights = train_from_config(args.config, trainer_overrides(args))
    print(f"trained weights: {weights}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from .train import merge_stage_weights

    print(f"wrote {merge_stage_weights(args.output, pnet=args.pnet, rnet=args.rnet, onet=args.onet)}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from . import evaluate

    if args.benchmark == "widerface":
        result = evaluate.evaluate_widerface(args.pred, args.gt)
    elif args.benchmark == "fddb":
        result = evaluate.evaluate_fddb(args.pred, args.gt)
    else:
        from ..core.data import data_root

        data = args.data or data_root() / "faces_dlib_examples"
        result = evaluate.evaluate_dlib_examples(make_detector(args), data)
    for key, value in result.items():
        if not isinstance(value, list | dict):
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
        elif isinstance(value, dict):
            print(f"{key}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in value.items()))
    if args.json:
        print_json({"benchmark": args.benchmark, **result})
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .benchmark import benchmark_detector

    result = benchmark_detector(make_detector(args), args.input, batch=args.batch, frames=args.frames,
                                repeats=args.repeats)
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        print_json(result)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..core.onnx import ONNX_EXTRA_HINT, onnx_runtime_available
    from .detector import MTCNN
    from .export import export_mtcnn_onnx, onnx_parity

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: not a folder")
    if args.check and not onnx_runtime_available():
        raise UsageError(f"--check needs onnxruntime ({ONNX_EXTRA_HINT})")
    detector = MTCNN(weights=args.weights, device="cpu")
    try:
        paths = export_mtcnn_onnx(detector, args.out)
    except ImportError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot write there ({error.strerror or error})") from None
    for path in paths.values():
        print(f"wrote {path}")
    record = {"out": str(args.out), "files": {stage: str(path) for stage, path in paths.items()}}
    if args.check:
        record["max_abs_difference"] = onnx_parity(detector, paths)
        print("ONNX Runtime vs torch, largest output difference: "
              + ", ".join(f"{stage} {value:.2e}" for stage, value in record["max_abs_difference"].items()))
    if args.json:
        print_json(record)
    return 0
