"""`gliomamtl demo`: one synthetic full-size case, predicted end to end and compared with its truth.

Steps: generate a seeded synthetic case (:func:`GliomaMTLLib.synth.generate_case`, 240x240x155 at
1 mm), write it as a BraTS 2023 folder (``OUT/input/<case_id>/``), run the same code as
``gliomamtl predict`` into ``OUT/prediction/``, then print where the outputs are, the genotype and
volumes next to the known truth, and Dice per region. Explanations (integrated gradients) come
with ``gliomamtl explain`` (a later issue); :func:`_explain_step` is where the demo will call it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from GliomaMTLLib.cli.predict_cmd import add_model_arguments, make_predictor, predict_one, summary_lines


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on one synthetic case and compare with its known truth",
        description="Generate one seeded synthetic full-size case, write it as a BraTS 2023 folder, predict "
        "it (segmentation, genotype, volumes, report) and compare with the synthetic ground truth.",
    )
    parser.add_argument("--out", default="gliomamtl_demo", metavar="DIR", help="output folder (default ./gliomamtl_demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic case (default 0)")
    parser.add_argument("--cohort", choices=("adult", "pediatric"), default=None,
                        help="synthetic cohort (default: pediatric for a FLAIR-only/pediatric model, else adult)")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def _cohort_for(predictor: Any) -> str:
    meta = predictor.bundle.meta
    if meta.get("cohort") in ("adult", "pediatric"):
        return str(meta["cohort"])
    return "pediatric" if "pediatric" in predictor.bundle.name or "braf" in predictor.tasks else "adult"


def _explain_step(predictor: Any, case_folder: Path, out_dir: Path) -> Path | None:
    """Seam for the explanation step (``GliomaMTLLib.explain``, a later issue): returns the heatmap
    folder once that module exists; until then the demo skips it."""
    return None


def run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.io.writers import write_case
    from GliomaMTLLib.metrics import region_metrics
    from GliomaMTLLib.synth import generate_case

    out = Path(args.out)
    predictor = make_predictor(args)  # first: a missing model fails before minutes of synthesis
    cohort = args.cohort or _cohort_for(predictor)
    print(f"demo: generating synthetic {cohort} case (seed {args.seed}, 240x240x155 at 1 mm) ...")
    t0 = time.perf_counter()
    truth = generate_case(args.seed, cohort=cohort)
    case_folder = out / "input" / truth.case_id
    write_case(truth, case_folder, layout="brats2023")
    print(f"demo: case written to {case_folder} ({time.perf_counter() - t0:.1f} s)")

    _, written, prediction = predict_one(predictor, case_folder, out / "prediction", args, case_id=truth.case_id)
    print("\n".join(summary_lines(prediction, written)))
    heatmaps = _explain_step(predictor, case_folder, out / "explain")
    print(f"demo: explanations: {heatmaps or 'not available yet (gliomamtl explain comes with a later release)'}")

    print("\ncomparison with the synthetic ground truth")
    for task, probs in prediction.genotype.items():
        true = truth.genotype.get(task, "unknown")
        predicted = max(probs, key=probs.get)
        print(f"  {task}: predicted {predicted} ({probs[predicted]:.2f}), true {true}")
    voxel_ml = truth.geometry.voxel_volume_ml
    true_labels = truth.label if truth.label is not None else np.zeros(truth.geometry.shape, np.uint8)
    regions = {name: members for name, members in predictor.regions.items()}
    if len(predictor.label_names) == 1:  # whole-tumor-only model: compare with the union of the truth's labels
        true_labels = (true_labels > 0).astype(np.uint8)
    scores = region_metrics(prediction.labels, true_labels, truth.geometry.spacing, regions=regions)
    print(f"  {'region':<6} {'Dice':>6} {'predicted ml':>13} {'true ml':>9}")
    for name, members in regions.items():
        true_ml = float(np.isin(true_labels, members).sum()) * voxel_ml
        print(f"  {name:<6} {scores[name]['dice']:>6.3f} {prediction.volumes_ml[name]:>13.1f} {true_ml:>9.1f}")
    print(f"\ndemo: outputs in {out / 'prediction'} (report.png, report.json, segmentation)")
    return 0
