#!/usr/bin/env python
"""Mean Dice per region with a bootstrap 95% interval over cases, from an evaluation's
``segmentation_cases.csv`` (``gliomamtl evaluate`` / ``python -m GliomaMTLLib.train.export``):

    python scripts/dice_ci.py runs/gliomamtl_adult_v3/eval-test/segmentation_cases.csv [--stage main]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv")
    parser.add_argument("--stage", default=None, help="only rows of this stage (column 'stage', if present)")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args()
    with open(args.csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if args.stage is None or r.get("stage", args.stage) == args.stage]
    if not rows:
        raise SystemExit(f"{args.csv}: no rows" + (f" of stage {args.stage!r}" if args.stage else ""))
    from GliomaMTLLib.metrics.segmentation import bootstrap_mean_ci

    print("| region | n | mean Dice [95% CI] |\n|---|---|---|")
    for region in sorted({r["region"] for r in rows}, key=lambda x: ("WT", "TC", "ET").index(x) if x in ("WT", "TC", "ET") else 9):
        d = np.array([float(r["dice"]) for r in rows if r["region"] == region and r["dice"] not in ("", "nan")])
        lo, hi = bootstrap_mean_ci(d, n_boot=args.n_boot)
        print(f"| {region} | {len(d)} | {d.mean():.3f} [{lo:.3f}, {hi:.3f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
