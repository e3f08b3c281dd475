"""``keen engagement train|eval|predict|features``: parse arguments, call the API, print."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ..core.cli import UsageError, add_trainer_options, print_json, trainer_overrides
from ..core.cli import require_positive as _positive
from ..core.registry import weights_help

WEIGHTS_HELP = weights_help("engagement", "engagement-openface-15", "a .safetensors export of `keen engagement train`")


def _add_video_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("video pipeline")
    group.add_argument("--every", type=int, default=5, help="run MTCNN on every k-th frame, track between (default 5)")
    group.add_argument("--min-face", type=float, default=40, help="smallest face, pixels of the frame reduced to "
                                                                  "--detect-width (default 40)")
    group.add_argument("--detect-width", type=int, default=640, help="wider frames are reduced to this for detection "
                                                                     "and tracking (default 640; 0: never)")
    group.add_argument("--max-frames", type=int, help="use the first N frames only")
    group.add_argument("--device", default="cpu", help="MTCNN's device: cpu (default) or cuda")


def add_commands(commands: argparse._SubParsersAction) -> None:
    engagement = commands.add_parser(
        "engagement", help="engagement intensity of learners' videos (EmotiW 2018/2019 winners' method)",
        description="Engagement intensity regression: a multi-instance LSTM over video segments, bagged. Inputs: "
                    "videos (our MTCNN face pipeline) or OpenFace 2.x CSV files.")
    tools = engagement.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True

    train = tools.add_parser("train", help="cross-validate and train a bagged ensemble from a YAML recipe")
    add_trainer_options(train, "configs/engagement/openface_15seg.yaml", steps=False)
    train.add_argument("--features", help="training NPZ (features [N, S, D], labels [N]); overrides the recipe's")
    train.add_argument("--bag-models", type=int, help="models in the ensemble")
    train.add_argument("--epochs", type=int, help="epochs per model")
    train.add_argument("--cv-folds", type=int, help="cross-validation folds (0: skip)")
    train.set_defaults(handler=run_train)

    evaluate = tools.add_parser(
        "eval", help="MSE and per-level MSE of ensembles on labelled features NPZ files, and their fusion",
        description="Score an ensemble on each --features file (the shipped model of its layout unless --weights "
                    "names one per file, in the same order). Two or more files of the same videos (e.g. OpenFace "
                    "and VGGFace2) also give the fused prediction, their mean.")
    evaluate.add_argument("--features", type=Path, required=True, action="append",
                          help="NPZ with features [N, S, D] and labels [N]; repeat for other layouts of the videos")
    evaluate.add_argument("--weights", action="append",
                          help=WEIGHTS_HELP + " (default: the shipped model of the file's layout); one per --features")
    evaluate.add_argument("--plot", type=Path, help="PNG of predicted vs true intensity per level (calibration)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    evaluate.set_defaults(handler=run_eval)

    predict = tools.add_parser("predict", help="engagement intensity and per-segment timeline of videos / CSVs",
                               description="Predict the engagement intensity (0..1; EmotiW levels 0, 0.33, 0.66, 1) "
                                           "of each video or OpenFace CSV, with a per-segment timeline. Video "
                                           "features only approximate the OpenFace features the shipped models "
                                           "were trained on (marked 'approximate').")
    predict.add_argument("paths", nargs="+", metavar="VIDEO|CSV", help="video files or OpenFace 2.x .csv files")
    predict.add_argument("--weights", default="engagement-openface-15", help=WEIGHTS_HELP)
    predict.add_argument("--json", action="store_true", help="one JSON object per input on stdout")
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
    features.add_argument("--out", type=Path, required=True, help="output .npz")
    features.add_argument("--segments", type=int, default=15, help="segments per input (default 15)")
    features.add_argument("--overlap", type=float, default=0.5, help="overlap of consecutive segments (default 0.5)")
    features.add_argument("--layout", choices=["video", "openface"], default="video",
                          help="for videos: our features (default) or the OpenFace approximation")
    features.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    _add_video_arguments(features)
    features.set_defaults(handler=run_features)


def run_train(args: argparse.Namespace) -> int:
    from . import train_engagement

    for option in ("bag_models", "epochs"):
        _positive(getattr(args, option), "--" + option.replace("_", "-"))
    overrides = trainer_overrides(args)
    extra = {"features": args.features, "bag_models": args.bag_models, "epochs": args.epochs, "cv_folds": args.cv_folds}
    overrides |= {key: value for key, value in extra.items() if value is not None}
    weights = train_engagement(args.config, overrides)
    print(f"trained weights: {weights}")
    return 0


def _shipped_for(layout) -> str:
    from .ensemble import SHIPPED

    name = f"engagement-{layout.feature_set}-{layout.segments}"
    if name not in SHIPPED:
        raise UsageError(f"no shipped model for {layout} features; give --weights (a .safetensors export)")
    return name


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
    import numpy as np

    from .data import evaluate_predictions, load_features
    from .ensemble import load_engagement

    if args.weights and len(args.weights) != len(args.features):
        raise UsageError(f"give one --weights per --features ({len(args.weights)} for {len(args.features)})")
    rows, predictions, labels = [], {}, None
    for index, path in enumerate(args.features):
        data = load_features(path)
        if labels is not None and (data.labels.shape != labels.shape or not np.allclose(data.labels, labels)):
            raise UsageError(f"--features {path}: not the videos of {args.features[0]} (labels differ); fusion "
                             "needs the same videos in the same order")
        labels = data.labels
        weights = args.weights[index] if args.weights else _shipped_for(data.layout)
        ensemble = load_engagement(weights)
        intensity, _ = ensemble.predict(data.features, feature_set=data.layout.feature_set)
        name = str(weights)
        predictions[name] = intensity
        rows.append({"name": name, "features": str(path), "layout": str(data.layout),
                     **evaluate_predictions(intensity, labels)})
        if ensemble.ridge is not None:  # the simple baseline inside the ensemble, scored on its own beside it
            ridge = ensemble.ridge.predict(data.features)
            rows.append({"name": f"{name}: ridge member alone", "features": str(path), "layout": str(data.layout),
                         **evaluate_predictions(ridge, labels)})
    if len(predictions) > 1:
        fused = np.mean(list(predictions.values()), 0)
        predictions["fused"] = fused
        rows.append({"name": "fused (mean of the ensembles)", "features": None, "layout": None,
                     **evaluate_predictions(fused, labels)})
    for row in rows:
        print(_eval_line(row, len(labels)))
    if args.plot:
        from .predict import plot_calibration

        short = {Path(name).name if name.endswith(".safetensors") else name: values
                 for name, values in predictions.items()}
        print(f"calibration plot: {plot_calibration(short, labels, args.plot)}")
    if args.json:
        main_row = rows[-1] if len(predictions) > 1 else rows[0]
        print_json({"weights": main_row["name"], "features": [str(p) for p in args.features], "videos": len(labels),
                    **{k: v for k, v in main_row.items() if k not in ("name", "features", "layout")},
                    "results": rows})
    return 0


def _video_options(args: argparse.Namespace) -> dict:
    _positive(args.every, "--every")
    _positive(args.max_frames, "--max-frames")
    if args.min_face < 12:
        raise UsageError(f"--min-face must be >= 12 (MTCNN's window), got {args.min_face}")
    if args.detect_width < 0:
        raise UsageError(f"--detect-width must be >= 0, got {args.detect_width}")
    return {"detect_every": args.every, "min_face_size": args.min_face, "detect_width": args.detect_width,
            "max_frames": args.max_frames}


def _input_kind(path: Path) -> str:
    """"csv", "video" or "other" (reported and skipped like an unreadable file)."""
    from ..core.io import is_video

    if path.suffix.lower() == ".csv":
        return "csv"
    return "video" if is_video(path) else "other"


def _unsupported(path: Path) -> ValueError:
    return ValueError(f"{path}: expected a video (.mp4, .mov, ...) or an OpenFace .csv file")


_INPUT_ERRORS = (ValueError, FileNotFoundError)  # ImageReadError and OpenFaceFormatError are ValueErrors


def _plot_path(plot: Path, source: Path, several: bool) -> Path:
    return plot.with_name(f"{plot.stem}_{source.stem}{plot.suffix or '.png'}") if several else plot


def run_predict(args: argparse.Namespace) -> int:
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
    kinds = [_input_kind(path) for path in paths]
    ensemble = resolve_model(args.weights)
    detector = None
    if "csv" in kinds:
        check_csv_layout(ensemble.layout)  # refuse a model CSV features do not fit, once
    if "video" in kinds:
        video_feature_set_for(ensemble.layout)  # refuse a model no video features fit, once, before any work
        detector = make_detector(args.min_face, args.device)
    done = failed = 0
    for path, kind in zip(paths, kinds):
        try:
            if kind == "other":
                raise _unsupported(path)
            if kind == "csv":
                prediction = predict_csv(path, ensemble)
            else:
                prediction = predict_video(path, ensemble, detector=detector, progress=not args.json, **options)
        except _INPUT_ERRORS as error:
            if len(paths) == 1:
                raise  # a single input: its own one-line error, exit 2
            failed += 1
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"keen engagement predict: skipped {message}", file=sys.stderr)
            if args.json:
                print_json({"source": str(path), "error": message})
            continue
        prediction.model = str(args.weights)
        record = prediction.to_dict()
        if args.plot:
            record["plot"] = str(plot_timeline(prediction, _plot_path(args.plot, path, len(paths) > 1)))
        done += 1
        if args.json:
            print_json(record)
        else:
            timeline = " ".join(f"{v:.2f}" for v in prediction.per_segment)
            reason = "video features mapped to the OpenFace layout" if kind == "video" else \
                "no eye landmarks in the CSV, some features approximated"
            approximate = f" (approximate: {reason})" if prediction.approximate else ""
            print(f"{path}: engagement {prediction.intensity:.3f} -> level {prediction.level:g} "
                  f"({record['level_name']}){approximate}; segments: {timeline}"
                  + (f"; plot {record['plot']}" if args.plot else ""), flush=True)
    if done == 0:
        raise UsageError("no usable video or OpenFace CSV among the inputs" + (f" ({failed} failed)" if failed else ""))
    if failed:
        print(f"keen engagement predict: {done} input(s) scored, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def run_features(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.io import write_atomic
    from .openface import openface_csv_features
    from .video import make_detector, track_face, video_openface_features, video_segment_features

    options = _video_options(args)
    _positive(args.segments, "--segments")
    if not 0 <= args.overlap < 1:
        raise UsageError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.out.suffix.lower() != ".npz":
        raise UsageError(f"--out {args.out}: expected a .npz file name")
    paths = [Path(p) for p in args.paths]
    kinds = [_input_kind(path) for path in paths]
    if args.layout == "video" and "csv" in kinds:
        raise UsageError("OpenFace CSVs give 'openface' features; use --layout openface to write them (and the "
                         "videos' OpenFace approximation) into one file")
    detector = make_detector(args.min_face, args.device) if "video" in kinds else None
    results, used, failed = [], [], 0
    for path, kind in zip(paths, kinds):
        try:
            if kind == "other":
                raise _unsupported(path)
            if kind == "csv":
                result = openface_csv_features(path, args.segments, args.overlap)
            else:
                track = track_face(path, detector=detector, progress=not args.json, **options)
                build = video_segment_features if args.layout == "video" else video_openface_features
                result = build(track, args.segments, args.overlap)
        except _INPUT_ERRORS as error:
            if len(paths) == 1:
                raise
            failed += 1
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"keen engagement features: skipped {message}", file=sys.stderr)
            continue
        results.append(result)
        used.append(path)
        print(f"{path}: {result.features.shape[0]} segments x {result.features.shape[1]} ({result.feature_set}), "
              f"face in {float(result.presence.mean()):.0%} of the frames", file=sys.stderr, flush=True)
    if not results:
        raise UsageError("no usable video or OpenFace CSV among the inputs" + (f" ({failed} failed)" if failed else ""))
    first = results[0]
    arrays = {
        "features": np.stack([r.features for r in results]).astype(np.float32),
        "feature_set": np.array(first.feature_set), "names": np.array(first.names),
        "paths": np.array([str(p) for p in used]), "presence": np.stack([r.presence for r in results]),
        "segment_frames": np.stack([r.segmentation.bounds for r in results]),
        "fps": np.array([r.fps for r in results], np.float64),
        "description": np.array(f"keenvision engagement features: {first.feature_set}, {args.segments} segments "
                                f"(overlap {args.overlap}); per input notes: "
                                + " | ".join("; ".join(r.notes) for r in results)),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(args.out, buffer.getvalue())
    shape = arrays["features"].shape
    print(f"wrote {args.out}: features {shape[0]} x {shape[1]} x {shape[2]} ({first.feature_set})")
    if args.json:
        print_json({"out": str(args.out), "shape": list(shape), "feature_set": first.feature_set,
                    "paths": [str(p) for p in used], "failed": failed})
    return 1 if failed else 0
