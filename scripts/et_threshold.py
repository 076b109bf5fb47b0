#!/usr/bin/env python
"""Which small-enhancing-tumor threshold (``postprocess.et_min_ml``) a model should ship with.

    python scripts/et_threshold.py --model runs/bundles/gliomamtl_adult_large \\
        --run runs/gliomamtl_adult_large --tune val --extra 40 --report test \\
        --out runs/eval/et_threshold_large

Predicts each case once with the rule off (``et_min_ml`` 0) and keeps, per case, the predicted and
reference ET volumes and the ET Dice the rule would give at every candidate threshold (the rule:
if the predicted ET volume is below the threshold, every ET voxel becomes necrotic core; TC and WT
do not change). Tuning cases: the run's ``--tune`` split plus ``--extra`` phantoms at seeds
1,600,000 on (outside every recipe's seeds); the threshold with the best mean ET Dice on them is
then reported on the ``--report`` split, which played no part in the choice. The per-case values
go to ``--out/cases.csv`` so a rerun with other candidates needs no prediction. It measures, it
asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from GliomaMTLLib.metrics.segmentation import region_dice  # noqa: E402

CANDIDATES = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
EXTRA_SEED = 1_600_000


def et_dice_at(pred_labels: np.ndarray, ref_labels: np.ndarray, voxel_ml: float, thresholds) -> list[float]:
    """ET Dice (BraTS: both empty = 1) after the shipped small-ET rule at each threshold (ml)."""
    from GliomaMTLLib.inference.postprocess import PostprocessConfig, apply_postprocess
    from GliomaMTLLib.labels import ET, NCR

    out = []
    for t in thresholds:
        labels, _ = apply_postprocess(pred_labels.copy(), [NCR, ET], voxel_ml, PostprocessConfig(et_min_ml=t, min_component_ml=0))
        out.append(region_dice(labels, ref_labels, (ET,)))
    return out


def _cases(args):
    from GliomaMTLLib.train.evaluate import split_cases
    from GliomaMTLLib.train.config import load_recipe

    recipe = load_recipe(Path(args.run) / "recipe.yaml")
    import GliomaMTLLib.synth.generator as generator

    for group, split in (("tune", args.tune), ("report", args.report)):
        if args.only and group != args.only:
            continue
        for case in split_cases(recipe, split)[1]:
            yield group, case
        if group == "tune":
            for i in range(args.extra):
                yield group, generator.generate_case(EXTRA_SEED + i, "adult")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle name or folder")
    parser.add_argument("--run", required=True, help="the training run whose splits are used")
    parser.add_argument("--tune", default="val", help="split the threshold is chosen on")
    parser.add_argument("--extra", type=int, default=40, help="extra tuning phantoms")
    parser.add_argument("--report", default="test", help="split the chosen threshold is reported on")
    parser.add_argument("--only", choices=("tune", "report"), help="predict only this group (two processes)")
    parser.add_argument("--out", required=True, help="folder for cases.csv")
    parser.add_argument("--summarize", action="store_true", help="only read --out/cases*.csv and print the table")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        import torch

        torch.set_num_threads(1)
        from GliomaMTLLib.inference import Predictor
        from GliomaMTLLib.labels import ET

        predictor = Predictor(args.model, device="cpu", num_threads=1, postprocess={"et_min_ml": 0.0})
        path = out / f"cases{'_' + args.only if args.only else ''}.csv"
        done = set()
        if path.exists():
            done = {(r["group"], r["case_id"]) for r in csv.DictReader(path.open())}
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["group", "case_id", "ref_et_ml", "pred_et_ml", *[f"dice_{t:g}" for t in CANDIDATES]])
            for group, case in _cases(args):
                if (group, case.case_id) in done:
                    continue
                prediction = predictor.predict(case)
                voxel_ml = case.geometry.voxel_volume_ml
                pred_et, ref_et = prediction.labels == ET, case.label == ET
                dice = et_dice_at(prediction.labels, case.label, voxel_ml, CANDIDATES)
                writer.writerow([group, case.case_id, f"{ref_et.sum() * voxel_ml:.3f}", f"{pred_et.sum() * voxel_ml:.3f}",
                                 *[f"{d:.4f}" for d in dice]])
                f.flush()
                print(group, case.case_id, f"ref {ref_et.sum() * voxel_ml:.2f} ml pred {pred_et.sum() * voxel_ml:.2f} ml", flush=True)
    rows = [r for p in sorted(out.glob("cases*.csv")) for r in csv.DictReader(p.open())]
    print(f"| threshold (ml) | tune mean ET Dice (n={sum(r['group'] == 'tune' for r in rows)}) "
          f"| report mean ET Dice (n={sum(r['group'] == 'report' for r in rows)}) |")
    print("|---|---|---|")
    best, best_score = None, -1.0
    for t in CANDIDATES:
        tune = [float(r[f"dice_{t:g}"]) for r in rows if r["group"] == "tune"]
        report = [float(r[f"dice_{t:g}"]) for r in rows if r["group"] == "report"]
        score = float(np.mean(tune)) if tune else float("nan")
        if tune and score > best_score + 1e-9:
            best, best_score = t, score
        print(f"| {t:g} | {score:.3f} | {np.mean(report) if report else float('nan'):.3f} |")
    print(f"chosen on the tuning cases: {best} ml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
