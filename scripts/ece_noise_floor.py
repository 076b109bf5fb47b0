#!/usr/bin/env python
"""How much expected calibration error (ECE) 100 test phantoms show by chance alone.

Fits the genotype path exactly as ``python -m GliomaMTLLib.train.genotype_fit`` does (on the cache's
train + val phantoms, on the features of the bundle's own path when it has one), then for each
task compares the measured test ECE (15 bins, top label) with the ECE of a perfectly calibrated
model that gives the same probabilities: labels drawn from those probabilities, ``--draws`` times. When the measured ECE lies inside that chance range, the test set
cannot tell the path from a perfectly calibrated one.

    python scripts/ece_noise_floor.py --model gliomamtl_adult --cache runs/genotype_fit/cache_adult_v3

Prints a markdown table; it measures, it asserts nothing.
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
    parser.add_argument("--model", required=True, help="bundle whose tasks and sequences the cache was collected with")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--draws", type=int, default=2000)
    add_counts_option(parser)
    args = parser.parse_args()

    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.metrics.calibration import chance_ece, expected_calibration_error
    from GliomaMTLLib.train.genotype_fit import (fit_and_measure, load_features, path_features,
                                                 restrict_features)

    bundle = load_bundle(args.model)
    tasks = dict(bundle.tasks)
    data = load_features(args.cache, bundle.sequences, tasks, counts=args.counts)
    try:  # the bundle's own path (its features), as training/reproduce.sh refits it
        names = path_features(bundle.folder)
        data = restrict_features(data, names)
    except ValueError:  # no path yet: every feature, as genotype_fit without --features-of
        names = None
    result = fit_and_measure(data, tasks, band=(0.35, 0.65), temperatures={}, log=lambda m: None, feature_names=names)
    print(f"{bundle.name} {bundle.version}, cache {args.cache}, {args.draws} draws, "
          f"{len(names) if names else 'all'} features")
    print("| task | test cases | measured ECE | ECE of a perfectly calibrated model: median [95th percentile] |")
    print("|---|---|---|---|")
    for task in tasks:
        y, probs = result["arrays"][task]["test"]
        known = np.asarray(y) >= 0
        floor = chance_ece(probs[known], draws=args.draws)
        print(f"| {task} | {int(known.sum())} | {expected_calibration_error(probs, y):.3f} | "
              f"{np.median(floor):.3f} [{np.percentile(floor, 95):.3f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
