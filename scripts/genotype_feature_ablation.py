#!/usr/bin/env python
"""Does a radiological feature earn its place: the genotype path with and without it, paired.

Fits the path exactly as ``python -m GliomaMTLLib.train.genotype_fit`` does (same cache, same
development splits, same cross-validated regression and calibration) twice: with every feature
(or, with ``--features-of BUNDLE``, that bundle's path features plus the ``--drop`` ones: "does a
new feature improve the shipped path"), and without the ``--drop`` features. Each held-out
phantom is scored by both fits, so the AUC difference is paired; its 95% interval comes from
resampling phantoms (the same resample for both).

    python scripts/genotype_feature_ablation.py --model gliomamtl_pediatric \\
        --cache runs/genotype_fit/cache_pediatric --drop fluid_smooth_share_wt

Prints a markdown table per task and held-out split (test, transfer, texture_shift where the cache
has them; with ``--age`` also the regressions that see the patient's age): AUC without, AUC with, difference [95% CI]. It measures; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from GliomaMTLLib.train.genotype_fit import add_counts_option

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="bundle the cache was collected with")
    parser.add_argument("--cohort", choices=("adult", "pediatric"), default=None,
                        help="tasks of this cohort's recipe when the bundle has none (segmentation-only)")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--drop", nargs="+", required=True, help="feature names to leave out")
    parser.add_argument("--features-of", metavar="BUNDLE",
                        help="start from this bundle's genotype-path features (plus the --drop ones) instead of every feature")
    parser.add_argument("--age", action="store_true", help="also compare the regressions that see the age")
    add_counts_option(parser)
    args = parser.parse_args()

    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.genotype.features import FEATURE_NAMES, feature_indices
    from GliomaMTLLib.metrics.classification import headline_auc, paired_auc_difference
    from GliomaMTLLib.train.genotype_fit import (HELD_OUT, cohort_tasks, fit_and_measure, load_features,
                                                 path_features, restrict_features, with_features)

    try:
        feature_indices(args.drop, "--drop")
    except ValueError as err:
        parser.error(str(err))
    bundle = load_bundle(args.model)
    tasks = dict(bundle.tasks) or (cohort_tasks(args.cohort) if args.cohort else {})
    if not tasks:
        parser.error(f"{bundle.name} has no genotype tasks: pass --cohort")
    data = {k: v for k, v in load_features(args.cache, bundle.sequences, tasks, args.cohort, args.counts).items() if len(v["X"])}
    start = list(FEATURE_NAMES)
    if args.features_of:
        try:
            base = path_features(args.features_of)
        except (OSError, ValueError) as err:
            parser.error(f"--features-of {args.features_of}: {err}")
        start = with_features(base, [n for n in args.drop if n not in base])  # as genotype_fit --add-features
    keep = [n for n in start if n not in args.drop]
    quiet = {"band": (0.35, 0.65), "temperatures": {}, "log": lambda m: None}
    full = fit_and_measure(restrict_features(data, start), tasks, feature_names=start, **quiet)
    less = fit_and_measure(restrict_features(data, keep), tasks, feature_names=keep, **quiet)
    print(f"{bundle.name} {bundle.version}, cache {args.cache}, dropped {', '.join(args.drop)} (n: "
          + ", ".join(f"{k} {len(v['ids'])}" for k, v in data.items()) + ")")
    print("| task | split | AUC without | AUC with | difference [95% CI] |")
    print("|---|---|---|---|---|")
    variants = [("", "arrays")] + ([(" + age", "age_arrays")] if args.age else [])
    for suffix, key in variants:
        for task in tasks:
            for split in HELD_OUT:
                if split not in full[key].get(task, {}):
                    continue
                y, p_with = full[key][task][split]
                _, p_without = less[key][task][split]
                d, lo, hi = paired_auc_difference(y, p_without, p_with)
                known = np.asarray(y) >= 0
                print(f"| {task}{suffix} | {split} ({int(known.sum())}) | {headline_auc(y[known], p_without[known]):.3f} | "
                      f"{headline_auc(y[known], p_with[known]):.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
