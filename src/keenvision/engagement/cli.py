"""``keen engagement eval|predict|features`` (and ``train``, from the declaration): parse arguments, call the API,
print."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core import cli as shared
from ..core.errors import UsageError
from ..core.registry import weights_help

DEFAULT_WEIGHTS = "engagement-openface-15"
WEIGHTS_EXTRA = "a .safetensors export of `keen engagement train`"
NOTHING = "no usable video or OpenFace CSV among the inputs"


def _add_video_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("video pipeline")
    shared.add_option(group, "--every", type=int, default=5, minimum=1,
                      help="run MTCNN on every k-th frame, track between (default 5)")
    shared.add_option(group, "--min-face", type=float, default=40, minimum=12,
                      help="smallest face, pixels of the frame reduced to --detect-width (default 40)")
    shared.add_option(group, "--detect-width", type=int, default=640, minimum=0,
                      help="wider frames are reduced to this for detection and tracking (default 640; 0: never)")
    shared.add_option(group, "--max-frames", type=int, minimum=1, help="use the first N frames only")
    shared.add_device_option(group, "cpu", "MTCNN's device: cpu (default) or cuda")


def add_commands(commands: argparse._SubParsersAction, tools: argparse._SubParsersAction) -> None:
    evaluate = tools.add_parser(
        "eval", help="MSE and per-level MSE of ensembles on labelled features NPZ files, and their fusion",
        description="Score an ensemble on each --features file (the shipped model of its layout unless --weights "
                    "names one per file, in the same order). Two or more files of the same videos (e.g. OpenFace "
                    "and VGGFace2) also give the fused prediction, their mean.")
    evaluate.add_argument("--features", type=Path, required=True, action="append",
                          help="NPZ with features [N, S, D] and labels [N]; repeat for other layouts of the videos")
    evaluate.add_argument("--weights", action="append", help=weights_help("engagement", extra=WEIGHTS_EXTRA)
                          + " (default: the shipped model of the file's layout); one per --features")
    evaluate.add_argument("--plot", type=Path, help="PNG of predicted vs true intensity per level (calibration)")
    shared.add_json_option(evaluate)
    evaluate.set_defaults(handler=run_eval)

    predict = tools.add_parser("predict", help="engagement intensity and per-segment timeline of videos / CSVs",
                               description="Predict the engagement intensity (0..1; EmotiW levels 0, 0.33, 0.66, 1) "
                                           "of each video or OpenFace CSV, with a per-segment timeline. Video "
                                           "features only approximate the OpenFace features the shipped models "
                                           "were trained on (marked 'approximate').")
    predict.add_argument("paths", nargs="+", metavar="VIDEO|CSV", help="video files or OpenFace 2.x .csv files")
    shared.add_weights_option(predict, "engagement", DEFAULT_WEIGHTS, WEIGHTS_EXTRA)
    shared.add_json_option(predict, "one JSON object per input on stdout")
    predict.add_argument("--plot", type=Path, help="timeline PNG (with several inputs: <stem>_<input>.png)")
    _add_video_arguments(predict)
    predict.set_defaults(handler=run_predict)

    features = tools.add_parser("features", help="per-segment features of videos / CSVs into one NPZ",
                                description="Write per-segment features [N, S, D] of the inputs into one NPZ "
                                            "(keys features, feature_set, names, paths, presence, segment_frames, "
                                            "fps). Videos give our 25-d 'keenvision-video' features (--layout "
                                            "video) or their 60-d OpenFace approximation (--layout openface); "
                                            "OpenFace CSVs give the 60-d 'openface' features.")
    features.add_argument("paths", nargs="+", metavar="VIDEO|CSV")
    shared.add_out_option(features, "output .npz", required=True)
    shared.add_option(features, "--segments", type=int, default=15, minimum=1, help="segments per input (default 15)")
    shared.add_option(features, "--overlap", type=float, default=0.5, minimum=0, below=1,
                      help="overlap of consecutive segments (default 0.5)")
    features.add_argument("--layout", choices=["video", "openface"], default="video",
                          help="for videos: our features (default) or the OpenFace approximation")
    shared.add_json_option(features)
    _add_video_arguments(features)
    features.set_defaults(handler=run_features)


def train_options(parser: argparse.ArgumentParser) -> None:
    """The engagement recipe's own ``train`` options (`core.system.Training.options`)."""
    parser.add_argument("--features", help="training NPZ (features [N, S, D], labels [N]); overrides the recipe's")
    shared.add_option(parser, "--bag-models", type=int, minimum=1, help="models in the ensemble")
    shared.add_option(parser, "--epochs", type=int, minimum=1, help="epochs per model")
    parser.add_argument("--cv-folds", type=int, help="cross-validation folds (0: skip)")


def train_overrides(args: argparse.Namespace) -> dict:
    extra = {"features": args.features, "bag_models": args.bag_models, "epochs": args.epochs, "cv_folds": args.cv_folds}
    return {key: value for key, value in extra.items() if value is not None}


def _eval_line(row: dict, videos: int) -> str:
    """One printed line of `run_eval`: MSE, and per level its MSE, count and mean prediction."""
    def number(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    per_level = ", ".join(f"{level}: {number(mse)} (n {row['count_per_level'][level]}, mean prediction "
                          f"{number(row['mean_prediction_per_level'][level])})"
                          for level, mse in row["mse_per_level"].items())
    layout = f" [{row['layout']}]" if row["layout"] else ""
    return f"{row['name']}{layout}: MSE {row['mse']:.4f} on {videos} videos; per level {per_level}"


def run_eval(args: argparse.Namespace) -> int:
    from .ensemble import evaluate_files

    rows, predictions, labels = evaluate_files(args.features, args.weights)
    for row in rows:
        print(_eval_line(row, len(labels)))
    if args.plot:
        from .predict import plot_calibration

        short = {Path(name).name if name.endswith(".safetensors") else name: values
                 for name, values in predictions.items()}
        print(f"calibration plot: {plot_calibration(short, labels, args.plot)}")
    if args.json:
        main_row = rows[-1] if len(predictions) > 1 else rows[0]
        shared.print_json({"weights": main_row["name"], "features": [str(p) for p in args.features],
                           "videos": len(labels), "results": rows,
                           **{k: v for k, v in main_row.items() if k not in ("name", "features", "layout")}})
    return 0


def _video_options(args: argparse.Namespace) -> dict:
    return {"detect_every": args.every, "min_face_size": args.min_face, "detect_width": args.detect_width,
            "max_frames": args.max_frames}


def run_predict(args: argparse.Namespace) -> int:
    from ..core.io import is_video
    from .predict import (
        check_csv_layout,
        plot_timeline,
        predict_csv,
        predict_video,
        resolve_model,
        video_feature_set_for,
    )
    from .video import make_detector

    options = _video_options(args)
    paths = [Path(p) for p in args.paths]
    ensemble = resolve_model(args.weights)
    detector = None
    if any(path.suffix.lower() == ".csv" for path in paths):
        check_csv_layout(ensemble.layout)  # refuse a model CSV features do not fit, once
    if any(is_video(path) for path in paths):
        video_feature_set_for(ensemble.layout)  # refuse a model no video features fit, once, before any work
        detector = make_detector(args.min_face, args.device)

    def predict(path: Path) -> shared.InputResult:
        if path.suffix.lower() == ".csv":
            prediction = predict_csv(path, ensemble)
        elif is_video(path):
            prediction = predict_video(path, ensemble, detector=detector, progress=not args.json, **options)
        else:
            raise ValueError(f"{path}: expected a video (.mp4, .mov, ...) or an OpenFace .csv file")
        prediction.model = str(args.weights)
        record = prediction.to_dict()
        if args.plot:
            plot = args.plot.with_name(f"{args.plot.stem}_{path.stem}{args.plot.suffix or '.png'}") \
                if len(paths) > 1 else args.plot
            record["plot"] = str(plot_timeline(prediction, plot))
        timeline = " ".join(f"{v:.2f}" for v in prediction.per_segment)
        reason = "video features mapped to the OpenFace layout" if is_video(path) else \
            "no eye landmarks in the CSV, some features approximated"
        approximate = f" (approximate: {reason})" if prediction.approximate else ""
        line = (f"{path}: engagement {prediction.intensity:.3f} -> level {prediction.level:g} "
                f"({record['level_name']}){approximate}; segments: {timeline}")
        return shared.InputResult(record, line + (f"; plot {record['plot']}" if args.plot else ""))

    return shared.run_per_input("engagement predict", shared.each_input(paths, predict), args.json, NOTHING,
                         lambda done, failed: f"{done} input(s) scored, {failed} failed" if failed else None,
                         unit=None)


def run_features(args: argparse.Namespace) -> int:
    import sys

    from ..core.io import is_video
    from .data import save_features
    from .video import file_features, make_detector

    options = _video_options(args)
    if args.out.suffix.lower() != ".npz":
        raise UsageError(f"--out {args.out}: expected a .npz file name")
    paths = [Path(p) for p in args.paths]
    if args.layout == "video" and any(path.suffix.lower() == ".csv" for path in paths):
        raise UsageError("OpenFace CSVs give 'openface' features; use --layout openface to write them (and the "
                         "videos' OpenFace approximation) into one file")
    detector = make_detector(args.min_face, args.device) if any(is_video(path) for path in paths) else None
    results, used = [], []

    def extract(path: Path) -> shared.InputResult:
        result = file_features(path, args.segments, args.overlap, args.layout, detector, not args.json, **options)
        results.append(result)
        used.append(path)
        print(f"{path}: {result.features.shape[0]} segments x {result.features.shape[1]} ({result.feature_set}), "
              f"face in {float(result.presence.mean()):.0%} of the frames", file=sys.stderr, flush=True)
        return shared.InputResult()

    # per input only stderr lines (and no JSON); stdout keeps the one result line (and the JSON object last)
    extracted = (shared.InputResult(error=result.error) for result in shared.each_input(paths, extract))
    status = shared.run_per_input("engagement features", extracted, True, NOTHING, unit=None)
    shape = save_features(args.out, results, used, args.segments, args.overlap)
    print(f"wrote {args.out}: features {shape[0]} x {shape[1]} x {shape[2]} ({results[0].feature_set})")
    if args.json:
        shared.print_json({"out": str(args.out), "shape": list(shape), "feature_set": results[0].feature_set,
                    "paths": [str(p) for p in used], "failed": len(paths) - len(used)})
    return status
