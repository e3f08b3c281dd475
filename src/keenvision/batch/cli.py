"""``keen batch detect|segment|hallucinate``: parse arguments, call `run_batch`, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core import cli as shared
from ..core.cli import UsageError, add_json_option, print_json

DESCRIPTION = ("Run a system over many images and write one Parquet row per input to DIR/results/. Without --ray "
               "the run is in this process; with --ray it runs on a Ray cluster, each worker loading the model "
               "once (the 'scale' extra). A rerun skips inputs that already have rows.")


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="folders (recursive), globs ('photos/**/*.jpg'), text files of paths (.txt/.lst), "
                             "Parquet files with a path column, or images")
    parser.add_argument("--out", type=Path, required=True, help="output folder: results/*.parquet and the files "
                                                                "rows point to")
    group = parser.add_argument_group("scale")
    group.add_argument("--ray", metavar="local|auto|ADDRESS",
                       help="run on Ray: 'local' starts a cluster on this machine, 'auto' joins the one `ray start` "
                            "runs here, or a cluster's HOST:PORT / ray://HOST:PORT (default: in this process)")
    group.add_argument("--workers", type=int, help="Ray workers, each with its own model (default: as many as the "
                                                   "cluster's CPUs, or GPUs with --gpus-per-worker, hold)")
    group.add_argument("--batch-size", type=int, default=64, help="images per worker call and per results file "
                                                                  "(default 64)")
    group.add_argument("--cpus-per-worker", type=float, default=1,
                       help="CPUs Ray reserves per worker, also its torch threads (default 1)")
    group.add_argument("--gpus-per-worker", type=float, default=0,
                       help="GPUs per Ray worker (0.5: two share one); the model then runs on CUDA (default 0)")
    group.add_argument("--save-images", action="store_true", help="also write annotated images / overlays / "
                                                                  "comparison strips to DIR/images/")
    group.add_argument("--retry-errors", action="store_true", help="process again the inputs whose rows have "
                                                                   "status 'error'")
    group.add_argument("--path-column", default="path", help="the column of Parquet inputs with the paths "
                                                             "(default path)")
    add_json_option(parser)


def add_commands(commands: argparse._SubParsersAction) -> None:
    from ..farsee.cli import WEIGHTS_HELP as FARSEE_WEIGHTS
    from ..mtcnn.cli import _add_detector_arguments
    from ..sicnn.cli import WEIGHTS_HELP as SICNN_WEIGHTS

    batch = commands.add_parser("batch", help="detect, segment or hallucinate over millions of images, on Ray",
                                description=DESCRIPTION)
    systems = batch.add_subparsers(dest="system", metavar="SYSTEM")
    systems.required = True

    detect = systems.add_parser("detect", help="MTCNN faces: box, score, 5 landmarks per face",
                                description=DESCRIPTION + " Rows: the faces of `keen detect --json`.")
    _add_batch_options(detect)
    _add_detector_arguments(detect)
    detect.set_defaults(handler=run_batch_command, options=_detect_options)

    segment = systems.add_parser("segment", help="FarSee-Net: class shares and a label PNG per image",
                                 description=DESCRIPTION + " Rows: class shares (as `keen segment --json`) and "
                                                           "the path of the label PNG in DIR/labels/.")
    _add_batch_options(segment)
    segment.add_argument("--weights", default="farsee-camvid", help=FARSEE_WEIGHTS)
    segment.add_argument("--device", help="in-process: cpu, cuda, ... (default: cuda when available)")
    segment.add_argument("--max-pixels", type=int, default=4_194_304,
                         help="larger images run reduced, labels resized back (default 4194304 = 2048^2)")
    segment.add_argument("--alpha", type=float, default=0.5, help="overlay opacity with --save-images (default 0.5)")
    segment.set_defaults(handler=run_batch_command, options=_segment_options)

    hallucinate = systems.add_parser("hallucinate", help="SICNN: x8 hallucinated crops of the small faces",
                                     description=DESCRIPTION + " Rows: the faces of `keen hallucinate --json` and "
                                                               "the paths of their 96x112 SICNN crops in DIR/crops/.")
    _add_batch_options(hallucinate)
    hallucinate.add_argument("--weights", default="sicnn-celeba", help=SICNN_WEIGHTS)
    hallucinate.add_argument("--device", help="in-process: cpu, cuda, ... (default: cuda when available)")
    shared.add_option(hallucinate, "--min-face", "--min-face-size", type=float, default=20, minimum=12,
                      help="smallest face searched, pixels (default 20, at least 12)")
    hallucinate.add_argument("--all-faces", action="store_true", help="also hallucinate faces larger than 96x112 "
                                                                      "from their 12x14 reduction")
    hallucinate.set_defaults(handler=run_batch_command, options=_hallucinate_options)


def _detect_options(args: argparse.Namespace) -> dict:
    if args.min_face < 12:
        raise UsageError(f"--min-face must be >= 12 (MTCNN's window), got {args.min_face:g}")
    return {"weights": args.weights, "min_face_size": args.min_face, "thresholds": list(args.thresholds),
            "factor": args.factor, "pipeline": args.pipeline, "max_image_pixels": args.max_pixels}


def _segment_options(args: argparse.Namespace) -> dict:
    if not 0 <= args.alpha <= 1:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.max_pixels < 1:
        raise UsageError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    return {"weights": args.weights, "max_pixels": args.max_pixels, "alpha": args.alpha}


def _hallucinate_options(args: argparse.Namespace) -> dict:
    return {"weights": args.weights, "min_face_size": args.min_face, "all_faces": args.all_faces}


def run_batch_command(args: argparse.Namespace) -> int:
    from .engine import run_batch

    options = args.options(args)
    if args.ray is not None and args.device:
        raise UsageError("--device is for in-process runs; on Ray, workers use CUDA with --gpus-per-worker")
    command = f"keen batch {args.system}"
    run = run_batch(args.system, args.inputs, args.out, options, ray=args.ray, workers=args.workers,
                    batch_size=args.batch_size, cpus_per_worker=args.cpus_per_worker,
                    gpus_per_worker=args.gpus_per_worker, device=args.device, save_images=args.save_images,
                    retry_errors=args.retry_errors, path_column=args.path_column, progress=not args.json)
    for message in run.error_messages:
        print(f"{command}: error row: {message}", file=sys.stderr)
    if run.errors > len(run.error_messages):
        print(f"{command}: ... {run.errors - len(run.error_messages)} more error rows (status 'error' in the "
              "results)", file=sys.stderr)
    where = f"{run.workers} Ray worker(s)" if run.mode == "ray" else "in this process"
    if run.processed:
        print(f"{run.inputs} input(s): {run.processed} processed ({run.ok} ok, {run.errors} error rows) in "
              f"{run.seconds:.1f} s, {run.images_per_second:.1f} images/s, {where}; {run.skipped} already had rows")
    else:
        print(f"{run.inputs} input(s): all already had rows, nothing to do")
    print(f"rows: {Path(run.out) / 'results'} (keenvision.batch.read_results)")
    if args.json:
        print_json(run.as_dict())
    return 1 if run.errors else 0
