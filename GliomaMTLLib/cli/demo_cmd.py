"""`gliomamtl demo`: one synthetic full-size case, predicted end to end and compared with its truth.

Steps: generate a seeded synthetic case (:func:`GliomaMTLLib.synth.generate_case`, 240x240x155 at
1 mm), write it as a BraTS 2023 folder (``OUT/input/<case_id>/``), run the same code as
``gliomamtl predict`` into ``OUT/prediction/``, then print where the outputs are, the genotype and
volumes next to the known truth, and Dice per region, and explain the first genotype task (whole
tumor for a model without one) with integrated gradients into ``OUT/explain/`` (the same code as
``gliomamtl explain``: heatmaps on the input grid, ``explain.png``, ``explain.json``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

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


def _explain_step(predictor: Any, case_folder: Path, out_dir: Path) -> dict[str, Any]:
    """Integrated-gradient explanation of the model's first genotype task (WT without one), with
    the default settings of ``gliomamtl explain``; returns its ``explain.json`` report."""
    from GliomaMTLLib.explain import explain, write_explanation

    case = predictor.read(case_folder)
    explanation = explain(case, predictor=predictor)
    return explanation.report(write_explanation(explanation, out_dir, images=case.images))


def run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.io.writers import write_case
    from GliomaMTLLib.metrics import region_metrics
    from GliomaMTLLib.synth import generate_case

    from GliomaMTLLib.cli.predict_cmd import check_options, prepare_out

    check_options(args)
    out = prepare_out(args.out)  # an unusable --out fails before anything is computed
    args.overwrite = True  # the demo's folder is its own: a rerun replaces its outputs
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
    t0 = time.perf_counter()
    explained = _explain_step(predictor, case_folder, out / "explain")
    print(f"demo: integrated gradients of {explained['task']} ({explained['class_explained']}) in "
          f"{out / 'explain'} (explain.png, heatmaps per sequence; completeness delta {explained['delta']:.3g}; "
          f"{time.perf_counter() - t0:.1f} s)")

    print("\ncomparison with the synthetic ground truth")
    from GliomaMTLLib.inference.genotype_call import describe_call

    for task, entry in prediction.calls().items():
        true = truth.genotype.get(task, "unknown")
        print(f"  {task}: predicted {describe_call(entry)}, true {true}")
    import numpy as np  # here, not at module level: `gliomamtl --help` imports this module

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
    print(f"\ndemo: outputs in {out / 'prediction'} (report.png, report.json, segmentation) and "
          f"{out / 'explain'} (explain.png, heatmaps)")
    return 0
