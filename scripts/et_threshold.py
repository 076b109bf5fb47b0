#!/usr/bin/env python
"""Which enhancing-tumor rules (``postprocess.et_min_ml``, ``et_min_confidence``) a model should ship with.

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

The unsure-ET rule (``et_min_confidence``, rule 3 of :mod:`GliomaMTLLib.inference.postprocess`) is
chosen the same way, after the volume threshold: each case also keeps the mean ET probability over
its predicted ET and the ET Dice with all ET relabelled; the rule at confidence ``c`` (ET under
``et_confidence_max_ml``) gives the second Dice when it fires and the first otherwise. ``--shift N``
adds N phantoms rendered with a contrast spread training never used, reported beside the others:
how a threshold holds when the network's probabilities drop (adult 0.4.1 ships 0.7 rather than the
tuning best, 0.74, for that reason; ``training/results/adult_041.md``).
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
CONFIDENCES = (0.0, 0.6, 0.65, 0.7, 0.72, 0.74, 0.75, 0.76, 0.78, 0.8, 0.85, 0.9)
SHIFT_SEED, SHIFT_SPREAD = 1_300_000, 1.8  # as scripts/render_shift_dice.py
CONFIDENCE_MAX_ML = (10.0, float("inf"))
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
    if args.shift and args.only in (None, "shift"):
        from GliomaMTLLib.synth import synthesize

        for i in range(args.shift):
            yield "shift", synthesize(SHIFT_SEED + i, "adult", contrast_spread=SHIFT_SPREAD).case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle name or folder")
    parser.add_argument("--run", required=True, help="the training run whose splits are used")
    parser.add_argument("--tune", default="val", help="split the threshold is chosen on")
    parser.add_argument("--extra", type=int, default=40, help="extra tuning phantoms")
    parser.add_argument("--report", default="test", help="split the chosen threshold is reported on")
    parser.add_argument("--shift", type=int, default=0,
                        help=f"also report on this many phantoms rendered with contrast spread {SHIFT_SPREAD} "
                             "(a setting training never used; not used for the choice)")
    parser.add_argument("--only", choices=("tune", "report", "shift"), help="predict only this group (parallel processes)")
    parser.add_argument("--out", required=True, help="folder for cases.csv")
    parser.add_argument("--summarize", action="store_true", help="only read --out/cases*.csv and print the table")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        import torch

        torch.set_num_threads(1)
        from GliomaMTLLib.inference import Predictor
        from GliomaMTLLib.labels import ET, NCR

        from GliomaMTLLib.inference.postprocess import et_mean_probability

        predictor = Predictor(args.model, device="cpu", num_threads=1, postprocess={"et_min_ml": 0.0, "et_min_confidence": 0.0})
        path = out / f"cases{'_' + args.only if args.only else ''}.csv"
        done = set()
        if path.exists():
            done = {(r["group"], r["case_id"]) for r in csv.DictReader(path.open())}
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["group", "case_id", "ref_et_ml", "pred_et_ml", *[f"dice_{t:g}" for t in CANDIDATES],
                                 "et_confidence", "dice_no_et"])
            for group, case in _cases(args):
                if (group, case.case_id) in done:
                    continue
                prediction = predictor.predict(case)
                voxel_ml = case.geometry.voxel_volume_ml
                pred_et, ref_et = prediction.labels == ET, case.label == ET
                dice = et_dice_at(prediction.labels, case.label, voxel_ml, CANDIDATES)
                probs = prediction.probabilities
                confidence, _ = et_mean_probability(prediction.labels, probs.box_values("ET"), probs.slices, voxel_ml)
                no_et = region_dice(np.where(pred_et, NCR, prediction.labels).astype(np.uint8), case.label, (ET,))
                writer.writerow([group, case.case_id, f"{ref_et.sum() * voxel_ml:.3f}", f"{pred_et.sum() * voxel_ml:.3f}",
                                 *[f"{d:.4f}" for d in dice], "" if confidence is None else f"{confidence:.4f}",
                                 f"{no_et:.4f}"])
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
    rows = [r for r in rows if "et_confidence" in r]
    if rows and best is not None:
        print(f"\nUnsure-ET rule after the {best:g} ml rule ({len(rows)} cases with the mean ET probability):")
        groups = [g for g in ("tune", "report", "shift") if any(r["group"] == g for r in rows)]
        counts = {g: sum(r["group"] == g for r in rows) for g in groups}
        print(f"| et_min_confidence | et_confidence_max_ml | {' | '.join(f'{g} mean ET Dice (n={counts[g]})' for g in groups)} "
              f"| cases changed ({' / '.join(groups)}) |")
        print("|---|---|" + "---|" * (len(groups) + 1))
        choice, choice_score = None, -1.0
        for cap in CONFIDENCE_MAX_ML:
            for c in CONFIDENCES:
                scores, changed = {}, {}
                for group in groups:
                    d = [confidence_rule_dice(r, best, c, cap) for r in rows if r["group"] == group]
                    scores[group] = float(np.mean([x for x, _ in d])) if d else float("nan")
                    changed[group] = sum(f for _, f in d)
                if cap == CONFIDENCE_MAX_ML[0] and scores["tune"] > choice_score + 1e-9:
                    choice, choice_score = c, scores["tune"]
                print(f"| {c:g} | {cap:g} | {' | '.join(f'{scores[g]:.3f}' for g in groups)} | {' / '.join(str(changed[g]) for g in groups)} |")
        print(f"chosen on the tuning cases: et_min_confidence {choice:g} (et_confidence_max_ml {CONFIDENCE_MAX_ML[0]:g})")
    return 0


def confidence_rule_dice(row: dict, et_min_ml: float, confidence: float, max_ml: float) -> tuple[float, bool]:
    """(ET Dice of one case under the volume rule then the unsure-ET rule, whether the latter fired)."""
    after_volume = float(row[f"dice_{et_min_ml:g}"])
    pred_ml = float(row["pred_et_ml"])
    if pred_ml < et_min_ml or not row["et_confidence"]:  # no ET left for rule 3
        return after_volume, False
    fires = float(row["et_confidence"]) < confidence and pred_ml < max_ml
    return (float(row["dice_no_et"]) if fires else after_volume), fires


if __name__ == "__main__":
    sys.exit(main())
