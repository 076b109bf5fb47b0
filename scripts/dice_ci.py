#!/usr/bin/env python
"""Mean Dice per region with a bootstrap 95% interval over cases, from an evaluation's
``segmentation_cases.csv`` (``gliomamtl evaluate`` / ``python -m GliomaMTLLib.train.export``):

    python scripts/dice_ci.py runs/gliomamtl_adult_v3/eval-test/segmentation_cases.csv [--stage main]

With ``--paired OTHER.csv`` it also gives the mean paired difference (this csv minus OTHER, on the
cases both hold) with its bootstrap interval, and on how many cases this one is better.
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
    parser.add_argument("--paired", default=None, help="another evaluation's segmentation_cases.csv of the same cases")
    args = parser.parse_args()
    from GliomaMTLLib.metrics.segmentation import bootstrap_mean_ci

    rows = _dice(args.csv, args.stage)
    other = _dice(args.paired, args.stage) if args.paired else None
    header = "| region | n | mean Dice [95% CI] |"
    if other is not None:
        header += " paired difference to the other [95% CI] | better on |"
    print(header + "\n|---|---|---|" + ("---|---|" if other is not None else ""))
    for region in sorted(rows, key=lambda x: ("WT", "TC", "ET").index(x) if x in ("WT", "TC", "ET") else 9):
        d = np.array(list(rows[region].values()))
        lo, hi = bootstrap_mean_ci(d, n_boot=args.n_boot)
        line = f"| {region} | {len(d)} | {d.mean():.3f} [{lo:.3f}, {hi:.3f}] |"
        if other is not None:
            shared = sorted(set(rows[region]) & set(other.get(region, {})))
            diff = np.array([rows[region][c] - other[region][c] for c in shared])
            if len(diff):
                dlo, dhi = bootstrap_mean_ci(diff, n_boot=args.n_boot)
                line += f" {diff.mean():+.3f} [{dlo:+.3f}, {dhi:+.3f}] | {int((diff > 0).sum())} of {len(diff)} |"
            else:
                line += " no shared cases | - |"
        print(line)
    return 0


def _dice(path: str, stage: str | None) -> dict[str, dict[str, float]]:
    """{region: {case_id: Dice}} of one segmentation_cases.csv (rows of ``stage`` only, if given)."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if stage is None or r.get("stage", stage) == stage]
    if not rows:
        raise SystemExit(f"{path}: no rows" + (f" of stage {stage!r}" if stage else ""))
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["dice"] not in ("", "nan"):
            out.setdefault(r["region"], {})[r["case_id"]] = float(r["dice"])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
