"""``keen hallucinate`` and ``keen sicnn prepare|import-recogniser|train|eval|bench``: parse arguments, call the API,
print."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..core import cli as shared
from ..core.errors import UsageError
from ..core.registry import weights_help

DEFAULT_WEIGHTS = "sicnn-celeba"
WEIGHTS_HELP = weights_help("sicnn", DEFAULT_WEIGHTS, "a CNN-H .safetensors export of `keen sicnn train`")  # and batch
EVAL_WEIGHTS_HELP = ("CNN-H to score, repeatable: W (scored as 'sicnn') or NAME=W (scored as NAME), W being "
                     "sicnn-celeba or a .safetensors export; e.g. --weights pixel=a.safetensors --weights "
                     "si=b.safetensors for the ablation (default: sicnn-celeba)")


def add_commands(commands: argparse._SubParsersAction, tools: argparse._SubParsersAction) -> None:
    hallucinate = shared.add_input_command(
        commands, "hallucinate", "x8 face hallucination of the small faces in photos (SICNN)",
        "Find faces (MTCNN), align each to the 96x112 template and super-resolve the small ones from their 12x14 "
        "reduction with SICNN's CNN-H. Writes <stem>_face<k>.png per hallucinated face: LR (nearest x8) | bicubic | "
        "SICNN | the aligned photo. Faces already larger than 96x112 are passed through (reported, nothing written) "
        "unless --all-faces.", "output folder (default ./hallucinated)", "hallucinated",
        "images or folders of images", "IMAGE|DIR", run_hallucinate)
    shared.add_weights_option(hallucinate, "sicnn", DEFAULT_WEIGHTS, help=WEIGHTS_HELP)
    shared.add_device_option(hallucinate)
    hallucinate.add_argument("--all-faces", action="store_true",
                             help="also degrade faces larger than 96x112 to 12x14 and hallucinate them "
                                  "(to compare with the real face)")
    shared.add_option(hallucinate, "--min-face", "--min-face-size", type=float, default=20, minimum=12,
                      help="smallest face searched, pixels (default 20, at least 12)")

    prepare = tools.add_parser("prepare", help="detect, align (96x112) and split identity photo folders",
                               description="Reads <src>/<identity>/<photo>, aligns the largest face of each photo "
                                           "with MTCNN's 5 points and writes <out>/<split>/<identity>/*.png and "
                                           "<out>/manifest.json; identities never straddle splits.")
    prepare.add_argument("--src", type=Path, required=True, action="append",
                         help="folder of identity folders of photos; repeat to join folders (each split on its own)")
    shared.add_out_option(prepare, "output folder", required=True)
    for split in ("val", "test"):
        shared.add_option(prepare, f"--{split}-fraction", type=float, default=0.1, minimum=0, below=1,
                          help=f"share of identities for {split} (0.1)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the identity shuffle (0)")
    shared.add_option(prepare, "--max-identities", type=int, minimum=1, help="only the first N identities (by name)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an earlier preparation in --out")
    shared.add_json_option(prepare)
    prepare.set_defaults(handler=run_prepare)

    importer = tools.add_parser(
        "import-recogniser", help="convert MobileFace_Identification_V2 (MXNet) into a CNN-R export",
        description="Reads an MXNet -0000.params (NDArray list) and its -symbol.json without MXNet, builds the "
                    "MobileFace network and writes a CNN-R .safetensors (fp16) for init_cnn_r in the recipes.")
    importer.add_argument("--params", type=Path, required=True, help="the MXNet -0000.params file")
    importer.add_argument("--symbol", type=Path, help="its -symbol.json (default: beside --params)")
    shared.add_out_option(importer, "the .safetensors to write", required=True)
    importer.add_argument("--fit", choices=("pad", "resize"), default="pad",
                          help="96x112 faces to the 112x112 input: pad 8 columns each side (default) or resize")
    shared.add_json_option(importer)
    importer.set_defaults(handler=run_import_recogniser)

    evaluate = tools.add_parser("eval", help="PSNR, SSIM and identity metrics (dlib) vs bicubic on a prepared split",
                                description="HR -> 8x8 average pooling -> {bicubic, each CNN-H} -> PSNR/SSIM against "
                                            "HR and identity similarity / verification accuracy by dlib's face "
                                            "recogniser (the eval extra; without it identity metrics are null). "
                                            "See docs/sicnn.md for the protocol.")
    evaluate.add_argument("--data", type=Path, required=True, help="a `keen sicnn prepare` output folder")
    evaluate.add_argument("--split", default="test", help="test (default), val or train")
    evaluate.add_argument("--origin", help="only identities prepared from this source folder (by name, e.g. "
                                           "celeba_identities_more: its own test split)")
    evaluate.add_argument("--weights", action="append", metavar="[NAME=]W", help=EVAL_WEIGHTS_HELP)
    evaluate.add_argument("--bicubic-only", action="store_true", help="score no CNN-H: the bicubic baseline only")
    shared.add_device_option(evaluate)
    shared.add_option(evaluate, "--batch-size", type=int, default=64, minimum=1, help="faces per forward (default 64)")
    shared.add_option(evaluate, "--limit", type=int, minimum=1, help="first N faces only")
    shared.add_json_option(evaluate)
    evaluate.set_defaults(handler=run_eval)

    bench = tools.add_parser("bench", help="faces/s of CNN-H at batch 1 and 64 vs bicubic (random weights)")
    shared.add_device_option(bench, "cpu", "cpu (default) or cuda")
    bench.add_argument("--weights", help="time this CNN-H (default: the shipped architecture with random weights)")
    shared.add_option(bench, "--batch-sizes", type=int, nargs="+", default=[1, 64], minimum=1, help="default 1 64")
    shared.add_option(bench, "--repeats", type=int, default=5, minimum=1, help="timed calls per row (default 5)")
    shared.add_threads_option(bench)
    shared.add_json_option(bench)
    bench.set_defaults(handler=run_bench)


def train_options(parser: argparse.ArgumentParser) -> None:
    """SICNN's own ``train`` options (`core.system.Training.options`)."""
    parser.add_argument("--data", type=Path, help="a `keen sicnn prepare` folder (default: the recipe's)")
    parser.add_argument("--gradient-norms", nargs=2, metavar=("CNN_H", "CNN_R"),
                        help="only measure |grad L_SR| / |grad L_SI| on CNN-H for these exports (choosing alpha), "
                             "on --data (default runs/sicnn/faces)")


def train_overrides(args: argparse.Namespace) -> dict | bool:
    shared.require_folder(args.data, "--data")
    if args.gradient_norms:
        import json

        import torch

        from .model import load_cnn_h, load_cnn_r
        from .train import loss_gradient_norms

        torch.set_num_threads(args.num_threads or torch.get_num_threads())
        cnn_h, cnn_r = load_cnn_h(args.gradient_norms[0]), load_cnn_r(args.gradient_norms[1])
        print(json.dumps(loss_gradient_norms(cnn_h.float(), cnn_r.float(), args.data or "runs/sicnn/faces")))
        return True
    return {"data_root": str(args.data)} if args.data else {}


def run_hallucinate(args: argparse.Namespace) -> int:
    from ..core.io import UniqueStems
    from .hallucinate import Hallucinator, write_comparisons

    hallucinator = Hallucinator(args.weights, device=args.device, min_face_size=args.min_face)
    stems = UniqueStems()  # same file name in two folders: keep both
    written_total = 0

    def results():
        nonlocal written_total
        for result in hallucinator.hallucinate_files(args.paths, all_faces=args.all_faces):
            note = f"{result.path}: {result.note}" if result.note else None
            if result.error is not None:
                yield shared.InputResult(result.to_dict(), error=result.error, note=note)
                continue
            written = write_comparisons(result, args.out, stem=stems(result.path))
            written_total += sum(path is not None for path in written)
            record = result.to_dict()
            parts = []
            for index, (face, face_record, path) in enumerate(zip(result.faces, record["faces"], written)):
                face_record["output"] = str(path) if path is not None else None
                width, height = face.box[2] - face.box[0], face.box[3] - face.box[1]
                what = (f"-> {path.name}" if path is not None else
                        "larger than 96x112: passed through (--all-faces hallucinates it from 12x14)")
                parts.append(f"face {index} ({width:.0f}x{height:.0f} px, scale x{face.alignment_scale:.2f}) {what}")
            yield shared.InputResult(record, f"{result.path}: " + "; ".join(parts), note=note)

    return shared.run_per_input("hallucinate", results(), args.json, "no usable image among the inputs",
                         lambda done, failed: f"{done} image(s) with faces, {written_total} comparison(s) written to "
                                              f"{args.out}, {failed} failed", unit="file")


def run_import_recogniser(args: argparse.Namespace) -> int:
    from .model import import_recogniser

    shared.require_file(args.params, "--params")
    shared.require_file(args.symbol, "--symbol")
    try:
        out = import_recogniser(args.params, args.out, args.symbol, args.fit)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.json:
        shared.print_json({"out": str(out), "fit": args.fit})
    else:
        print(f"wrote {out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from ..core.progress import progress_callback
    from .data import prepare_faces

    train_fraction = 1 - args.val_fraction - args.test_fraction
    if train_fraction <= 0:
        raise UsageError("--val-fraction plus --test-fraction must leave a share for training")
    for folder in args.src:
        shared.require_folder(folder, "--src")
    fractions = {"train": train_fraction, "val": args.val_fraction, "test": args.test_fraction}
    with progress_callback(desc="prepare", unit="identity", enabled=not args.json) as progress:
        try:
            manifest = prepare_faces(args.src, args.out, seed=args.seed, max_identities=args.max_identities,
                                     overwrite=args.overwrite, progress=progress, fractions=fractions)
        except FileExistsError as error:
            raise UsageError(f"{error} (or pass --overwrite)") from None
    for failure in manifest["failures"]:  # one line per photo left out, so none is lost silently
        print(f"keen sicnn prepare: skipped {failure['source']}: {failure['reason']}", file=sys.stderr)
    for split, counts in manifest["counts"].items():
        print(f"{split}: {counts['identities']} identities, {counts['faces']} faces")
    print(f"wrote {args.out} ({len(manifest['failures'])} photo(s) skipped, reasons in manifest.json)")
    if args.json:
        shared.print_json({"out": str(args.out), "counts": manifest["counts"], "failures": len(manifest["failures"])})
    return 0


def parse_weights(values: list[str] | None) -> dict[str, str]:
    """``--weights`` values -> {name: weights}: ``NAME=W`` keeps NAME, a plain ``W`` is ``sicnn`` (only one may
    be plain); default ``{"sicnn": "sicnn-celeba"}``."""
    named: dict[str, str] = {}
    for value in values or [DEFAULT_WEIGHTS]:
        name, separator, weights = value.partition("=")
        if not separator:
            name, weights = "sicnn", value
        name, weights = name.strip(), weights.strip()
        if not name or not weights:
            raise UsageError(f"--weights {value!r}: expected W or NAME=W")
        if name in ("bicubic", "hr", "images", "identities", "pairs", "data", "split", "recogniser", "threshold",
                    "skipped"):
            raise UsageError(f"--weights {value!r}: the name {name!r} is taken by the report")
        if name in named:
            raise UsageError(f"--weights: the name {name!r} is given twice (use NAME=W for each extra model)")
        named[name] = weights
    return named


def _format(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value * scale:.{digits}f}"


def run_eval(args: argparse.Namespace) -> int:
    from ..core.bench import format_table
    from ..core.device import resolve_device
    from .evaluate import evaluate_hallucination
    from .model import load_cnn_h

    shared.require_folder(args.data, "--data")
    if not (args.data / args.split).is_dir():
        raise UsageError(f"--split {args.split}: {args.data / args.split} does not exist (prepare the faces with "
                         "`keen sicnn prepare`)")
    if args.bicubic_only and args.weights:
        raise UsageError("--bicubic-only scores no CNN-H: leave out --weights")
    device = resolve_device(args.device)
    named = {} if args.bicubic_only else parse_weights(args.weights)
    models = {name: load_cnn_h(weights, device) for name, weights in named.items()}
    result = evaluate_hallucination(args.data, args.split, models, device=device, batch_size=args.batch_size,
                                    limit=args.limit, origin=args.origin, progress=not args.json)
    rows = [[name, _format(result[name]["psnr"]), _format(result[name]["ssim"], digits=4),
             _format(result[name]["identity_similarity"], digits=3),
             _format(result[name]["verification_accuracy"], 100, 1),
             _format(result[name]["verification_accuracy_best"], 100, 1)]
            for name in ["bicubic", *models, "hr"]]
    print(format_table(["method", "PSNR (dB)", "SSIM", "identity cos", "verif. acc. % (L2<0.6)",
                        "best-threshold acc. %"], rows))
    pairs = result["pairs"]
    print(f"{args.data} [{args.split}]: {result['images']} faces of {result['identities']} identities, "
          f"{pairs['positive']} positive / {pairs['negative']} negative pairs, recogniser "
          f"{result['recogniser'] or 'none (install the eval extra)'}; hr = HR photos paired with HR photos")
    for message in result["skipped"]:
        print(f"keen sicnn eval: skipped {message}", file=sys.stderr)
    if args.json:
        shared.print_json(result)
    return 1 if result["skipped"] else 0  # scored, but not every face: say so in the exit status


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..core.bench import format_table
    from .evaluate import measure_throughput
    from .model import HallucinationNet, load_cnn_h

    shared.set_threads(args.threads)
    if args.weights:
        model, source = load_cnn_h(args.weights, "cpu"), str(args.weights)
    else:
        torch.manual_seed(0)
        model, source = HallucinationNet(), "default architecture, random weights (speed does not depend on them)"
    rows = measure_throughput(model, args.batch_sizes, args.device, repeats=args.repeats)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"SICNN CNN-H ({parameters / 1e6:.2f} M parameters, {source}) vs bicubic, 12x14 -> 96x112, fp32 on "
          f"{args.device}, {torch.get_num_threads()} threads, median of {args.repeats} calls")
    print(format_table(["method", "batch", "latency (ms)", "faces/s"],
                       [[row["method"], row["batch_size"], f"{row['latency_ms']:.2f}",
                         f"{row['images_per_second']:.1f}"] for row in rows]))
    if args.json:
        shared.print_json({"device": args.device, "threads": torch.get_num_threads(), "parameters": parameters,
                    "weights": source, "rows": rows})
    return 0
