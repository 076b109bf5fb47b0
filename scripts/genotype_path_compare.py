#!/usr/bin/env python
"""Which genotype inputs generalize: the radiological features, the CNN heads' logits, or both.

Runs the same fit as ``python -m GliomaMTLLib.train.genotype_fit`` (standardization, class-balanced
L2 logistic regression with cross-validated strength, 1p/19q conditional on IDH, Platt or
temperature-and-offsets calibration on out-of-fold logits; development = train + val, measured on test and
transfer) on three inputs from one phantom cache (``genotype_fit --collect``):

    python scripts/genotype_path_compare.py --model runs/bundles/gliomamtl_adult \\
        --cache runs/genotype_fit/cache_adult_v3

Prints a markdown table: task, input, test AUC [95% CI], ECE, transfer AUC. It measures; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="bundle whose tasks and sequences the cache was collected with")
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()

    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.genotype.features import FEATURE_NAMES
    from GliomaMTLLib.train.genotype_fit import fit_and_measure, load_features

    bundle = load_bundle(args.model)
    tasks = dict(bundle.tasks)
    data = load_features(args.cache, bundle.sequences, tasks)
    cnn_names = [f"cnn_{t}_{c}" for t, classes in tasks.items() for c in classes]

    def cnn(split: dict) -> np.ndarray:
        return np.concatenate([split["cnn"][t] for t in tasks], axis=1)

    inputs = {
        "radiological features": (lambda s: s["X"], list(FEATURE_NAMES)),
        "CNN heads' logits": (cnn, cnn_names),
        "both": (lambda s: np.concatenate([s["X"], cnn(s)], axis=1), list(FEATURE_NAMES) + cnn_names),
    }
    rows = ["| task | input | test AUC [95% CI] | test ECE | transfer AUC |", "|---|---|---|---|---|"]
    for label, (make, names) in inputs.items():
        variant = {k: {**v, "X": make(v)} for k, v in data.items() if len(v["X"])}
        result = fit_and_measure(variant, tasks, band=(0.35, 0.65), temperatures={}, log=lambda m: None, feature_names=names)
        for task in tasks:
            m = result["metrics"][task]["test"]
            t = result["metrics"][task].get("transfer")
            rows.append(f"| {task} | {label} | {m['auc']:.3f} [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}] | {m['ece']:.3f} | "
                        + (f"{t['auc']:.3f} |" if t else "- |"))
    print(f"{bundle.name} {bundle.version}, cache {args.cache} (n: " + ", ".join(f"{k} {len(v['ids'])}" for k, v in data.items()) + ")")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
