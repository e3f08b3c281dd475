"""``keen detect`` and ``keen mtcnn ...``: parse arguments, call the API, print."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core import cli as shared
from ..core.errors import UsageError


def _add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detector")
    shared.add_weights_option(group, "mtcnn", extra="a .safetensors with pnet./rnet./onet. tensors (default: the "
                                                    "authors' weights)")
    shared.add_device_option(group)
    group.add_argument("--min-face", type=float, default=20, help="smallest face to find, pixels (default 20)")
    group.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.7), metavar=("P", "R", "O"),
                       help="P/R/O-Net face probabilities (default 0.6 0.7 0.7; WIDER FACE setting 0.5 0.5 0.3)")
    group.add_argument("--factor", type=float, default=0.709, help="pyramid scale step (default 0.709)")
    group.add_argument("--max-pixels", type=int, default=16_000_000,
                       help="larger images are reduced to this many pixels first, results mapped back (default 16e6)")
    group.add_argument("--pipeline", choices=["official", "facenet-pytorch"], default="official",
                       help="follow the authors' MATLAB code (default) or reproduce facenet-pytorch's outputs")


def _align_size(text: str) -> tuple[int, int]:
    """(height, width) of a template `align` has; before HEIGHTxWIDTH everywhere this option was WIDTHxHEIGHT."""
    height, width = shared.parse_size(text, "--align-size", minimum=1)
    if (width, height) not in ((96, 112), (112, 112)):
        raise UsageError(f"--align-size {text}: expected 112x96 or 112x112 (HEIGHTxWIDTH)")
    return height, width


def make_detector(args: argparse.Namespace):
    from .detector import MTCNN

    return MTCNN(weights=args.weights, device=args.device, min_face_size=args.min_face,
                 thresholds=tuple(args.thresholds), factor=args.factor, pipeline=args.pipeline,
                 max_image_pixels=args.max_pixels)


def add_commands(commands: argparse._SubParsersAction, tools: argparse._SubParsersAction) -> None:
    detect = shared.add_input_command(
        commands, "detect", "find faces and 5 landmarks in images, folders and videos",
        "Detect faces with MTCNN. Prints one line per image or video frame (JSON with --json); --out writes "
        "annotated images and, with --align, aligned face crops.", "folder for annotated images (and aligned crops)",
        handler=run_detect)
    detect.add_argument("--align", action="store_true", help="write aligned crops to OUT/aligned/")
    shared.add_option(detect, "--align-size", convert=_align_size, default=(112, 96),
                      help="aligned crop size, HEIGHTxWIDTH: 112x96 (default) or 112x112")
    shared.add_option(detect, "--batch-size", type=int, default=8, minimum=1, help="images or frames per detector call")
    shared.add_option(detect, "--every", "--video-step", type=int, default=1, minimum=1,
                      help="detect every k-th video frame")
    _add_detector_arguments(detect)

    convert = tools.add_parser("import-caffe", help="convert the authors' det1-3.caffemodel to safetensors")
    convert.add_argument("directory", type=Path, help="folder with det1-3.caffemodel")
    convert.add_argument("output", type=Path, help="output .safetensors file")
    convert.set_defaults(handler=run_import_caffe)

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
        shared.add_json_option(parser)
        parser.set_defaults(handler=run_eval)

    bench = tools.add_parser("bench", help="frames per second of the detector on this machine")
    bench.add_argument("--input", type=Path, help="an image or video (default: the shared sample video, else the "
                                                  "embedded astronaut photo)")
    shared.add_option(bench, "--batch-size", "--batch", type=int, default=8, minimum=1,
               help="frames per call in the batched mode (default 8)")
    bench.add_argument("--frames", type=int, default=32, help="frames to time (default 32)")
    bench.add_argument("--repeats", type=int, default=3)
    shared.add_json_option(bench)
    _add_detector_arguments(bench)
    bench.set_defaults(handler=run_bench)

    export = tools.add_parser("export-onnx", help="pnet.onnx, rnet.onnx, onet.onnx (dynamic batch; P-Net dynamic HxW)")
    shared.add_out_option(export, "output folder (created if needed)", required=True)
    shared.add_weights_option(export, "mtcnn", help="detector weights: mtcnn-caffe (the default) or a .safetensors")
    export.add_argument("--check", action="store_true", help="compare ONNX Runtime with torch on random inputs")
    shared.add_json_option(export)
    export.set_defaults(handler=run_export)


def run_detect(args: argparse.Namespace) -> int:
    from ..core.io import UniqueStems
    from .files import detect_files, write_outputs

    if args.align and args.out is None:
        raise UsageError("--align needs --out DIR")
    height, width = args.align_size
    stems = UniqueStems()  # a/p.jpg and b/p.jpg: p.jpg and p_2.jpg, never one over the other
    faces = 0

    def results():
        nonlocal faces
        for result, image in detect_files(make_detector(args), args.paths, args.batch_size, args.every):
            if result.error is None:
                faces += len(result.faces)
                if args.out is not None:
                    write_outputs(result, image, args.out, aligned_size=(width, height) if args.align else None,
                                  stem=stems(result.path))
            where = f"{result.path}" + (f" frame {result.frame}" if result.frame is not None else "")
            yield shared.InputResult(result.to_dict(), f"{where}: {len(result.faces)} face(s)", result.error)

    return shared.run_per_input("detect", results(), args.json, "no readable image or video frame among the inputs",
                         lambda done, failed: f"{done} image(s)/frame(s), {faces} face(s), {failed} failed")


def run_import_caffe(args: argparse.Namespace) -> int:
    from ..core.weights import save_weights
    from .caffe import convert_mtcnn_caffe

    state = convert_mtcnn_caffe(args.directory)
    digest = save_weights(state, args.output, {"source": "MTCNN det1-3.caffemodel (Zhang et al. 2016), MIT licence"})
    print(f"wrote {args.output} ({len(state)} tensors, sha256 {digest})")
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
        result = evaluate.evaluate_dlib_examples(make_detector(args), args.data)
    shared.print_record(result, 4)
    if args.json:
        shared.print_json({"benchmark": args.benchmark, **result})
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .benchmark import benchmark_detector

    result = benchmark_detector(make_detector(args), args.input, batch=args.batch_size, frames=args.frames,
                                repeats=args.repeats)
    shared.print_record(result, 2)
    if args.json:
        shared.print_json(result)
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
    for path in paths.values():
        print(f"wrote {path}")
    record = {"out": str(args.out), "files": {stage: str(path) for stage, path in paths.items()}}
    if args.check:
        record["max_abs_difference"] = onnx_parity(detector, paths)
        print("ONNX Runtime vs torch, largest output difference: "
              + ", ".join(f"{stage} {value:.2e}" for stage, value in record["max_abs_difference"].items()))
    if args.json:
        shared.print_json(record)
    return 0
