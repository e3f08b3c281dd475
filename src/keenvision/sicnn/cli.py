"""``keen hallucinate`` and ``keen sicnn prepare|import-recogniser|train|eval|bench``: parse arguments, call the API, print."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..core.cli import UsageError, add_trainer_options, print_json, trainer_overrides
from ..core.cli import add_json_option as _add_json
from ..core.cli import require_positive as _positive
from ..core.registry import weights_help

WEIGHTS_HELP = weights_help("sicnn", "sicnn-celeba", "a CNN-H .safetensors export of `keen sicnn train`")
EVAL_WEIGHTS_HELP = ("CNN-H to score, repeatable: W (scored as 'sicnn') or NAME=W (scored as NAME), W being "
                     "sicnn-celeba or a .safetensors export; e.g. --weights pixel=a.safetensors --weights "
                     "si=b.safetensors for the ablation (default: sicnn-celeba)")


def add_commands(commands: argparse._SubParsersAction) -> None:
    hallucinate = commands.add_parser(
        "hallucinate", help="x8 face hallucination of the small faces in photos (SICNN)",
        description="Find faces (MTCNN), align each to the 96x112 template and super-resolve the small ones from "
                    "their 12x14 reduction with SICNN's CNN-H. Writes <stem>_face<k>.png per hallucinated face: "
                    "LR (nearest x8) | bicubic | SICNN | the aligned photo. Faces already larger than 96x112 are "
                    "passed through (reported, nothing written) unless --all-faces.")
    hallucinate.add_argument("paths", nargs="+", metavar="IMAGE|DIR", help="images or folders of images")
    hallucinate.add_argument("--out", type=Path, default=Path("hallucinated"),
                             help="output folder (default ./hallucinated)")
    hallucinate.add_argument("--weights", default="sicnn-celeba", help=WEIGHTS_HELP)
    hallucinate.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    hallucinate.add_argument("--all-faces", action="store_true",
                             help="also degrade faces larger than 96x112 to 12x14 and hallucinate them "
                                  "(to compare with the real face)")
    hallucinate.add_argument("--min-face-size", type=float, default=20,
                             help="smallest face searched, pixels (default 20, at least 12)")
    hallucinate.add_argument("--json", action="store_true", help="one JSON object per file on stdout")
    hallucinate.set_defaults(handler=run_hallucinate)

    sicnn = commands.add_parser("sicnn", help="SICNN tools: face preparation, training, evaluation, benchmark",
                                description="SICNN (Zhang et al., ECCV 2018) x8 face hallucination, 12x14 -> 96x112. "
                                            "--weights: " + WEIGHTS_HELP + ".")
    tools = sicnn.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True

    prepare = tools.add_parser("prepare", help="detect, align (96x112) and split identity photo folders",
                               description="Reads <src>/<identity>/<photo>, aligns the largest face of each photo "
                                           "with MTCNN's 5 points and writes <out>/<split>/<identity>/*.png and "
                                           "<out>/manifest.json; identities never straddle splits.")
    prepare.add_argument("--src", type=Path, required=True, action="append",
                         help="folder of identity folders of photos; repeat to join folders (each split on its own)")
    prepare.add_argument("--out", type=Path, required=True, help="output folder")
    prepare.add_argument("--val-fraction", type=float, default=0.1, help="share of identities for val (0.1)")
    prepare.add_argument("--test-fraction", type=float, default=0.1, help="share of identities for test (0.1)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the identity shuffle (0)")
    prepare.add_argument("--max-identities", type=int, help="only the first N identities (by name)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an earlier preparation in --out")
    _add_json(prepare)
    prepare.set_defaults(handler=run_prepare)

    importer = tools.add_parser(
        "import-recogniser", help="convert MobileFace_Identification_V2 (MXNet) into a CNN-R export",
        description="Reads an MXNet -0000.params (NDArray list) and its -symbol.json without MXNet, builds the "
                    "MobileFace network and writes a CNN-R .safetensors (fp16) for init_cnn_r in the recipes.")
    importer.add_argument("--params", type=Path, required=True, help="the MXNet -0000.params file")
    importer.add_argument("--symbol", type=Path, help="its -symbol.json (default: beside --params)")
    importer.add_argument("--out", type=Path, required=True, help="the .safetensors to write")
    importer.add_argument("--fit", choices=("pad", "resize"), default="pad",
                          help="96x112 faces to the 112x112 input: pad 8 columns each side (default) or resize")
    _add_json(importer)
    importer.set_defaults(handler=run_import_recogniser)

    train = tools.add_parser("train", help="train from a YAML recipe (configs/sicnn/*.yaml)")
    add_trainer_options(train, "configs/sicnn/<phase>.yaml (one phase)")
    train.add_argument("--data", type=Path, help="a `keen sicnn prepare` folder (default: the recipe's)")
    train.set_defaults(handler=run_train)

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
    evaluate.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="faces per forward (default 64)")
    evaluate.add_argument("--limit", type=int, help="first N faces only")
    _add_json(evaluate)
    evaluate.set_defaults(handler=run_eval)

    bench = tools.add_parser("bench", help="faces/s of CNN-H at batch 1 and 64 vs bicubic (random weights)")
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench.add_argument("--weights", help="time this CNN-H (default: the shipped architecture with random weights)")
    bench.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], help="default 1 64")
    bench.add_argument("--repeats", type=int, default=5, help="timed calls per row (default 5)")
    bench.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    _add_json(bench)
    bench.set_defaults(handler=run_bench)


def run_hallucinate(args: argparse.Namespace) -> int:
    from ..core.io import UniqueStems
    from ..core.progress import progress_bar
    from .hallucinate import Hallucinator, write_comparisons

    if args.min_face_size < 12:
        raise UsageError(f"--min-face-size must be >= 12 (MTCNN's window), got {args.min_face_size:g}")
    hallucinator = Hallucinator(args.weights, device=args.device, min_face_size=args.min_face_size)
    processed = failed = written_total = 0
    stems = UniqueStems()  # same file name in two folders: keep both
    results = hallucinator.hallucinate_files(args.paths, all_faces=args.all_faces)
    for result in progress_bar(results, desc="hallucinate", unit="file", enabled=not args.json):
        if result.note:
            print(f"keen hallucinate: {result.path}: {result.note}", file=sys.stderr)
        if result.error is not None:
            failed += 1
            print(f"keen hallucinate: skipped {result.error}", file=sys.stderr)
            if args.json:
                print_json(result.to_dict())
            continue
        written = write_comparisons(result, args.out, stem=stems(result.path))
        processed += 1
        written_total += sum(path is not None for path in written)
        record = result.to_dict()
        for face_record, path in zip(record["faces"], written):
            face_record["output"] = str(path) if path is not None else None
        if args.json:
            print_json(record)
            continue
        parts = []
        for index, (face, path) in enumerate(zip(result.faces, written)):
            width, height = face.box[2] - face.box[0], face.box[3] - face.box[1]
            what = (f"-> {path.name}" if path is not None else
                    "larger than 96x112: passed through (--all-faces hallucinates it from 12x14)")
            parts.append(f"face {index} ({width:.0f}x{height:.0f} px, scale x{face.alignment_scale:.2f}) {what}")
        print(f"{result.path}: " + "; ".join(parts), flush=True)
    if processed == 0:
        raise UsageError("no usable image among the inputs" + (f" ({failed} failed)" if failed else ""))
    print(f"keen hallucinate: {processed} image(s) with faces, {written_total} comparison(s) written to {args.out}, "
          f"{failed} failed", file=sys.stderr)
    return 1 if failed else 0


def run_import_recogniser(args: argparse.Namespace) -> int:
    from .mobileface import import_recogniser

    for option, path in (("--params", args.params), ("--symbol", args.symbol)):
        if path is not None and not path.is_file():
            raise UsageError(f"{option} {path}: no such file")
    try:
        out = import_recogniser(args.params, args.out, args.symbol, args.fit)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.json:
        print_json({"out": str(out), "fit": args.fit})
    else:
        print(f"wrote {out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from ..core.progress import progress_bar
    from .data import prepare_faces

    _positive(args.max_identities, "--max-identities")
    for option, value in (("--val-fraction", args.val_fraction), ("--test-fraction", args.test_fraction)):
        if not 0 <= value < 1:
            raise UsageError(f"{option} must be in [0, 1), got {value}")
    train_fraction = 1 - args.val_fraction - args.test_fraction
    if train_fraction <= 0:
        raise UsageError("--val-fraction plus --test-fraction must leave a share for training")
    for folder in args.src:
        if not folder.is_dir():
            raise UsageError(f"--src {folder}: no such folder")
    bar = progress_bar(desc="prepare", unit="identity", enabled=not getattr(args, "json", False))

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        manifest = prepare_faces(args.src, args.out, seed=args.seed, max_identities=args.max_identities,
                                 overwrite=args.overwrite, progress=progress,
                                 fractions={"train": train_fraction, "val": args.val_fraction,
                                            "test": args.test_fraction})
    except FileExistsError as error:
        raise UsageError(f"{error} (or pass --overwrite)") from None
    finally:
        bar.close()
    for failure in manifest["failures"]:  # one line per photo left out, so none is lost silently
        print(f"keen sicnn prepare: skipped {failure['source']}: {failure['reason']}", file=sys.stderr)
    for split, counts in manifest["counts"].items():
        print(f"{split}: {counts['identities']} identities, {counts['faces']} faces")
    print(f"wrote {args.out} ({len(manifest['failures'])} photo(s) skipped, reasons in manifest.json)")
    if args.json:
        print_json({"out": str(args.out), "counts": manifest["counts"], "failures": len(manifest["failures"])})
    return 0


def run_train(args: argparse.Namespace) -> int:
    from . import train_sicnn

    overrides = trainer_overrides(args)
    if args.data is not None and not args.data.is_dir():
        raise UsageError(f"--data {args.data}: no such folder")
    if args.data:
        overrides["data_root"] = str(args.data)
    weights = train_sicnn(args.config, overrides)
    print(f"trained weights: {weights}")
    return 0


def parse_weights(values: list[str] | None) -> dict[str, str]:
    """``--weights`` values -> {name: weights}: ``NAME=W`` keeps NAME, a plain ``W`` is ``sicnn`` (only one may
    be plain); default ``{"sicnn": "sicnn-celeba"}``."""
    named: dict[str, str] = {}
    for value in values or ["sicnn-celeba"]:
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
    from .evaluate import evaluate_hallucination
    from .hallucinate import resolve_device
    from .model import load_cnn_h

    _positive(args.batch_size, "--batch-size")
    _positive(args.limit, "--limit")
    if not args.data.is_dir():
        raise UsageError(f"--data {args.data}: no such folder")
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
        print_json(result)
    return 1 if result["skipped"] else 0  # scored, but not every face: say so in the exit status


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..core.bench import format_table
    from .evaluate import measure_throughput
    from .model import HallucinationNet, load_cnn_h

    for size in args.batch_sizes:
        _positive(size, "--batch-sizes")
    _positive(args.repeats, "--repeats")
    _positive(args.threads, "--threads")
    if args.threads:
        torch.set_num_threads(args.threads)
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
        print_json({"device": args.device, "threads": torch.get_num_threads(), "parameters": parameters,
                    "weights": source, "rows": rows})
    return 0
