#!/usr/bin/env python
"""Where a model's false positives fall on phantoms with fluid spaces and look-alike structures.

The real-scan error analysis of issue 11 found the adult model labelling ventricles and cisterns
as necrotic core, choroid plexus and vessels as enhancing tumor, and periventricular caps and
bright grey matter as edema. This script asks the same questions on generator-2 phantoms (whose
ventricles, choroid plexus, vessels, dura, caps/WMH and bright grey matter are known voxel by
voxel), so a model can be checked for those failure modes without real scans:

    python scripts/distractor_errors.py --model gliomamtl_adult --n 8 [--seed 900000] [--sequences t1c,t2f] [--tta]
    python scripts/distractor_errors.py --model gliomamtl_pediatric --cohort pediatric --n 24

One row per case: whole-tumor Dice, false-positive volume (ml) and the share of it within 4 mm
of the ventricles, then the predicted-tumor share of each look-alike structure's voxels (by the
label a real error would take: NCR in the ventricles, ET on choroid/vessels/dura, ED on
caps/WMH and bright grey matter; any tumor label for a whole-tumor model such as the pediatric
one). Prints a mean row. It measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHECKS = (("ventricles", "NCR", (1,)), ("choroid", "ET", (3,)), ("vessel", "ET", (3,)), ("dura", "ET", (3,)),
          ("wmh", "ED", (2,)), ("gm_hyper", "ED", (2,)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gliomamtl_adult", help="bundle name or folder")
    parser.add_argument("--n", type=int, default=8, help="number of phantoms")
    parser.add_argument("--seed", type=int, default=900000, help="first phantom seed (outside the recipes' seeds)")
    parser.add_argument("--cohort", choices=("adult", "pediatric"), default="adult", help="phantom cohort")
    parser.add_argument("--sequences", help="comma-separated subset given to the model (default: all it needs)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time flips on or off (default: the model's setting on the CPU)")
    args = parser.parse_args()

    from scipy import ndimage

    from GliomaMTLLib.inference import Predictor
    from GliomaMTLLib.synth import synthesize

    predictor = Predictor(args.model, device="cpu", tta=args.tta)
    keep = args.sequences.split(",") if args.sequences else None
    whole_tumor_only = len(predictor.label_names) == 1  # e.g. the pediatric model's {1: tumor}
    head = ["case", "WT Dice", "FP ml", "FP <4mm vent"] + [f"{name}->{'tumor' if whole_tumor_only else lab}" for name, lab, _ in CHECKS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    rows = []
    for i in range(args.n):
        r = synthesize(args.seed + i, args.cohort)
        case = r.case
        if keep:
            case.images = {k: v for k, v in case.images.items() if k in keep}
        pred = predictor.predict(case).labels
        ref = r.case.label
        wt_p, wt_r = pred > 0, ref > 0
        dice = 2 * np.count_nonzero(wt_p & wt_r) / max(np.count_nonzero(wt_p) + np.count_nonzero(wt_r), 1)
        fp = wt_p & ~wt_r
        vent = r.tissue_full("ventricles") > 0.5
        near = ndimage.distance_transform_edt(~vent, sampling=r.case.geometry.spacing[::-1]) <= 4.0
        fp_ml = np.count_nonzero(fp) * r.case.geometry.voxel_volume_ml
        near_share = np.count_nonzero(fp & near) / max(np.count_nonzero(fp), 1)
        shares = []
        for name, _, labels in CHECKS:
            region = (vent if name == "ventricles" else r.distractor_full(name) > 0.5) & ~wt_r
            hit = pred[region] > 0 if whole_tumor_only else np.isin(pred[region], labels)
            shares.append(hit.mean() if region.any() else np.nan)
        row = [dice, fp_ml, near_share, *shares]
        rows.append(row)
        print(f"| {case.case_id} | " + " | ".join("n/a" if np.isnan(v) else f"{v:.3f}" for v in row) + " |")
    mean = np.nanmean(np.asarray(rows, dtype=float), axis=0)
    print("| mean | " + " | ".join(f"{v:.3f}" for v in mean) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
