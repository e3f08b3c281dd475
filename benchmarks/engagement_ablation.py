"""Engagement regression by cross-validation over NEW LEARNERS: the shipped recipes against ridge and the training
mean, OpenFace and VGGFace2 alone and fused, per level, with a learner bootstrap of each row's gain over ridge.

    nice python benchmarks/engagement_ablation.py [--reports runs/engagement] [--layouts openface_15 ...]
                                                  [--folds 5] [--repeats 3] [--folds-by learner|video]
                                                  [--ablation] [--threads 1] [--json] [--save]

Folds. The EmotiW files carry no learner ids, but learners recur across the 146 training videos; `learner_groups`
recovers 59 pseudo-learners from the VGGFace2 face features and every fold holds whole learners, as EmotiW's
validation split does (``--folds-by video`` gives the old, optimistic folds for comparison).

Rows, all on the same folds (`keenvision.engagement.train.cv_folds`, seed + 7919 x repeat):
- the training folds' mean label, and ridge on the segment mean+std (its penalty chosen by a 4-fold CV by learner
  inside each training fold);
- the shipped recipe (configs/engagement/<layout>seg.yaml), whose blend of MIL-LSTMs and ridge is chosen inside
  each outer training fold (nested): read from ``<reports>/<layout>seg/report.json`` when `keen engagement train`
  wrote it with the same folds, else cross-validated here (about 15 minutes a layout on one core);
- ``--ablation``: the MIL-LSTM bag alone (ridge weight 0) and a single MIL-LSTM;
- fused: the mean of the OpenFace 15 and VGGFace2 15 predictions of the same kind.
``gain over ridge`` is ridge's MSE minus the row's, pooled over repeats, with a 95% interval from 2,000 bootstrap
resamples of LEARNERS (all videos of a drawn learner together): an interval that includes 0 means the row does not
reliably beat ridge, whatever its mean. ``--save`` writes benchmarks/results/engagement_cv.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from keenvision.core.bench import format_table
from keenvision.core.data import data_root
from keenvision.engagement.baseline import fit_ridge
from keenvision.engagement.data import LEVEL_NAMES, evaluate_predictions, learner_groups, load_features
from keenvision.engagement.train import _quiet_lightning, cross_validate, cv_folds, load_config, with_setting

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "engagement"
LAYOUTS = ("openface_15", "vggface2_15", "openface_21")
FUSED = ("openface_15", "vggface2_15")


def features_path(layout: str) -> Path:
    feature_set, segments = layout.split("_")
    return data_root() / "engagement" / f"emotiw2019_{feature_set}_{segments}seg_train.npz"


def reference_predictions(features, labels, groups, folds: int, repeats: int, seed: int) -> dict[str, np.ndarray]:
    """Out-of-fold predictions ``[repeats, N]`` of the training-fold mean and of ridge."""
    mean, ridge = np.zeros((repeats, len(labels))), np.zeros((repeats, len(labels)))
    for repeat in range(repeats):
        assignment = cv_folds(labels, folds, seed + 7919 * repeat, groups)
        for fold in range(folds):
            train, held_out = assignment != fold, assignment == fold
            mean[repeat, held_out] = labels[train].mean()
            inner = cv_folds(labels[train], 4, seed + fold, None if groups is None else groups[train])
            ridge[repeat, held_out] = fit_ridge(features[train], labels[train], inner).predict(features[held_out])
    return {"training-fold mean": mean, "ridge on segment mean+std": ridge}


def recipe_predictions(layout: str, features, labels, groups, args, overrides: dict) -> tuple[np.ndarray, str]:
    """The recipe's out-of-fold predictions: from its training report when that used these folds, else computed."""
    name = f"{layout}seg"
    report = Path(args.reports) / name / "report.json" if args.reports else None
    if not overrides and report is not None and report.is_file():
        cv = json.loads(report.read_text()).get("cv", {})
        same = (cv.get("folds_by"), cv.get("seed")) == (args.folds_by, args.seed)
        predictions = np.asarray(cv.get("predictions", []))
        if same and predictions.shape == (args.repeats, len(labels)):
            return predictions, f"read from {report}"
    config = load_config(CONFIGS / f"{name}.yaml", {"cv_folds": args.folds, "cv_repeats": args.repeats,
                                                     "seed": args.seed, "num_threads": args.threads})
    for key, value in overrides.items():
        config = with_setting(config, key, value)
    return cross_validate(features, labels, config, groups=groups)["predictions"], "computed"


def learner_bootstrap(gain_per_video: np.ndarray, groups: np.ndarray, seed: int = 0,
                      draws: int = 2000) -> tuple[float, float]:
    """95% interval of the mean of ``gain_per_video`` ``[N]`` over bootstrap resamples of whole learners."""
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    members = [np.flatnonzero(groups == name) for name in names]
    means = []
    for _ in range(draws):
        chosen = np.concatenate([members[i] for i in rng.integers(0, len(names), len(names))])
        means.append(gain_per_video[chosen].mean())
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summarise(predictions: np.ndarray, labels: np.ndarray, ridge: np.ndarray, groups: np.ndarray) -> dict:
    repeats = predictions.shape[0]
    fold_free = [float(np.mean((predictions[r] - labels) ** 2)) for r in range(repeats)]
    pooled = evaluate_predictions(predictions.reshape(-1), np.tile(labels, repeats))
    gain = ((ridge - labels) ** 2 - (predictions - labels) ** 2).mean(0)  # per video, over repeats
    return {"mse": float(np.mean(fold_free)), "mse_std_over_repeats": float(np.std(fold_free)),
            "mse_per_level": pooled["mse_per_level"], "mean_prediction_per_level": pooled["mean_prediction_per_level"],
            "gain_over_ridge": float(gain.mean()), "gain_interval": learner_bootstrap(gain, groups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--reports", default="runs/engagement", help="folder of `keen engagement train` runs")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="CV repeats with re-drawn folds")
    parser.add_argument("--seed", type=int, default=0, help="fold seed (the recipes' own CV uses 0)")
    parser.add_argument("--folds-by", choices=("learner", "video"), default="learner")
    parser.add_argument("--ablation", action="store_true", help="also the MIL bag alone and a single MIL-LSTM")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/engagement_cv.txt")
    parser.add_argument("--plot", type=Path, help="PNG: out-of-fold predicted vs true per level (calibration)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _quiet_lightning()
    load_before, started = os.getloadavg()[0], time.time()
    learners = learner_groups(load_features(features_path("vggface2_15")).features)
    groups = learners if args.folds_by == "learner" else None
    record = {"benchmark": "engagement_ablation", "folds": args.folds, "repeats": args.repeats, "seed": args.seed,
              "folds_by": args.folds_by, "learners": int(learners.max() + 1), "results": []}
    rows, kept, labels = [], {}, None
    for layout in args.layouts:
        features, labels, _ = load_features(features_path(layout))
        named = reference_predictions(features, labels, groups, args.folds, args.repeats, args.seed)
        recipe, source = recipe_predictions(layout, features, labels, groups, args, {})
        named[f"shipped recipe (nested; {source})"] = recipe
        if args.ablation:
            named["MIL-LSTM bag x10 alone"] = recipe_predictions(layout, features, labels, groups, args,
                                                                 {"select": None, "ridge_weight": 0.0})[0]
            named["one MIL-LSTM"] = recipe_predictions(layout, features, labels, groups, args,
                                                       {"select": None, "ridge_weight": 0.0, "bag_models": 1})[0]
        kept[layout] = named
        for name, predictions in named.items():
            rows.append((layout, name, summarise(predictions, labels, named["ridge on segment mean+std"], learners)))
        print(f"done: {layout}", flush=True)
    if all(layout in kept for layout in FUSED):
        ridge = np.mean([kept[layout]["ridge on segment mean+std"] for layout in FUSED], 0)
        recipe = np.mean([next(v for k, v in kept[layout].items() if k.startswith("shipped")) for layout in FUSED], 0)
        baseline = kept["openface_15"]["ridge on segment mean+std"]
        rows.append(("fused OF15+VG15", "ridge on segment mean+std", summarise(ridge, labels, baseline, learners)))
        rows.append(("fused OF15+VG15", "shipped recipes", summarise(recipe, labels, baseline, learners)))
        if args.plot:
            from keenvision.engagement.predict import plot_calibration

            first = {"ridge, OpenFace 15": baseline[0], "shipped recipe, OpenFace 15": next(
                v for k, v in kept["openface_15"].items() if k.startswith("shipped"))[0],
                     "fused shipped recipes": recipe[0]}
            plot_calibration(first, labels, args.plot, title=f"out-of-fold predictions, CV by {args.folds_by} "
                                                              "(first repeat)")
            print(f"wrote {args.plot}")
    table_rows = []
    for layout, name, result in rows:
        low, high = result["gain_interval"]
        table_rows.append([layout, name, f"{result['mse']:.4f} ± {result['mse_std_over_repeats']:.4f}",
                           *(f"{result['mse_per_level'][level]:.3f}" for level in LEVEL_NAMES),
                           " / ".join(f"{result['mean_prediction_per_level'][level]:.2f}" for level in LEVEL_NAMES),
                           f"{result['gain_over_ridge']:+.4f} [{low:+.4f}, {high:+.4f}]"])
        record["results"].append({"layout": layout, "recipe": name, **result})
    header = (f"Engagement CV by {args.folds_by} ({record['learners']} pseudo-learners from VGGFace2 features): EmotiW "
              f"2019 training features (146 videos), {args.folds}-fold CV x {args.repeats} repeats (fold seed "
              f"{args.seed}); CPU {args.threads} thread(s), {os.cpu_count()} CPUs, load average {load_before:.1f} "
              f"before, {os.getloadavg()[0]:.1f} after; {time.time() - started:.0f} s. Fused rows: gain over the "
              "OpenFace 15 ridge.")
    table = format_table(["layout", "recipe", "CV MSE (± sd over repeats)",
                          *(f"MSE level {level}" for level in LEVEL_NAMES), "mean prediction per level",
                          "gain over ridge [95% learner bootstrap]"], table_rows)
    print(f"\n{header}\n\n{table}")
    if args.save:
        path = RESULTS / "engagement_cv.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{header}\n\n{table}\n{json.dumps(record, separators=(',', ':'))}\n")
        print(f"wrote {path}")
    if args.json:
        print(json.dumps(record, separators=(",", ":")))


if __name__ == "__main__":
    main()
