"""`gliomamtl explain`: integrated-gradient heatmaps of a prediction, on the exact input grid.

::

    gliomamtl explain CASE --out DIR [--model M] [--task idh|codel_1p19q|braf|WT|TC|ET] [--steps N] [--progress-json]

writes into DIR ``<case_id>_ig_<task>_<sequence>.nii.gz`` (one heatmap per sequence),
``<case_id>_ig_<task>_combined.nii.gz``, ``explain.png`` and, last, ``explain.json`` (see
:mod:`GliomaMTLLib.explain.output`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from GliomaMTLLib.inference.options import DEFAULT_MODEL, DEVICE_CHOICES  # imports nothing heavy

#: ``--task`` values: genotype tasks, then regions (explained through the segmentation).
TASK_CHOICES = ("idh", "codel_1p19q", "braf", "WT", "TC", "ET")
#: Kept in step with GliomaMTLLib.explain.attribution (not imported here: it imports torch).
DEFAULT_STEPS = 8
DEFAULT_BATCH = 4
DEFAULT_BLUR_MM = 6.0
MAX_CASE_FILES = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="integrated-gradient heatmaps: which voxels of which sequence drove a genotype or region output",
        description="Explain a model's output on a case with integrated gradients (captum): the calibrated "
        "probability of the predicted class of a genotype task, or a region's soft volume (WT, TC, ET). The "
        "explained function is the one that gives predict's genotype probability. Baseline: the model's input "
        "window blurred inside the brain (the networks' instance normalization makes a constant baseline "
        "degenerate; see the README).",
        epilog="Writes into --out: <case_id>_ig_<task>_<sequence>.nii.gz per sequence and "
        "<case_id>_ig_<task>_combined.nii.gz (float32, on the exact grid of the input), explain.png and, last, "
        "explain.json (task, class explained, its probability, baseline, steps, convergence delta, per-sequence "
        "attribution share, share inside the predicted tumor).",
    )
    parser.add_argument("case", nargs="+", metavar="CASE",
                        help="case folder, or up to four sequence files (names must identify the sequence)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"bundle name (searched in $GLIOMAMTL_MODELS, then Resources/Models) or folder "
                             f"(default {DEFAULT_MODEL})")
    parser.add_argument("--task", choices=TASK_CHOICES, default=None,
                        help="genotype task (explains the predicted class) or region; default: the model's first "
                             "genotype task, WT for a model without one")
    parser.add_argument("--class", dest="target_class", default=None, metavar="NAME",
                        help="explain this class of the genotype task instead of the predicted one")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"points of the path integral (default {DEFAULT_STEPS}; more steps, smaller delta, "
                             "proportionally slower)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"path points per forward/backward pass (default {DEFAULT_BATCH}; memory vs speed)")
    parser.add_argument("--baseline", choices=("blur", "zero"), default="blur",
                        help="reference input: blur (default; the window blurred inside the brain) or zero (the "
                             "brain's mean intensity; converges badly with these networks, for comparison)")
    parser.add_argument("--blur-mm", type=float, default=DEFAULT_BLUR_MM,
                        help=f"Gaussian sigma of the blurred baseline in mm (default {DEFAULT_BLUR_MM:g})")
    parser.add_argument("--age", type=float, metavar="YEARS",
                        help="the patient's age (as given to predict): a genotype task is explained as the "
                        "age-aware model predicts it")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="auto: CUDA GPU when available, else CPU (default)")
    parser.add_argument("--progress-json", action="store_true",
                        help="print progress as JSON lines (event progress/log/done/error) on stdout")
    parser.set_defaults(func=run)


def _summary(report: dict[str, Any], written: dict[str, Path]) -> list[str]:
    head = f"case {report['case_id']}: {report['task']} = {report['class_explained']}"
    if report.get("probability") is not None:
        head += f" (p = {report['probability']:.3f})"
    shares = ", ".join(f"{s} {v:.0%}" for s, v in report["sequence_share"].items())
    inside = report["tumor_share"]["inside"]["positive"]
    near = report["tumor_share"]["near"]["positive"]
    lines = [
        head,
        f"  integrated gradients: {report['steps']} steps, delta {report['delta']:.3g} "
        f"({report['relative_delta']:.1%} of the output change {report['output'] - report['baseline_output']:.4g})",
        f"  attribution share by sequence: {shares}",
        f"  positive attribution inside the predicted tumor {inside:.0%}, within {report['near_tumor_mm']:g} mm {near:.0%}",
        f"  time {sum(report['timings_s'].values()):.1f} s ("
        + ", ".join(f"{k} {v:.2f}" for k, v in report["timings_s"].items()) + ")",
    ]
    lines += [f"  warning: {w}" for w in report["warnings"]]
    lines.append("  outputs: " + ", ".join(str(p) for p in written.values()))
    return lines


def run(args: argparse.Namespace) -> int:
    if len(args.case) > MAX_CASE_FILES:
        raise ValueError(f"at most {MAX_CASE_FILES} sequence files per case, got {len(args.case)}")
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    if args.age is not None:
        from GliomaMTLLib.io.case import check_age

        check_age(args.age, "--age")
    reporter = None
    if args.progress_json:
        from GliomaMTLLib.progress import JsonLinesReporter

        reporter = JsonLinesReporter(sys.stdout)
    try:
        from GliomaMTLLib.explain import explain, write_explanation
        from GliomaMTLLib.inference import Predictor

        source: Any = args.case[0] if len(args.case) == 1 else list(args.case)
        predictor = Predictor(args.model, device=args.device)
        case = predictor.read(source)
        case.age_years = args.age
        explanation = explain(case, args.task, predictor=predictor, steps=args.steps, internal_batch_size=args.batch,
                              target_class=args.target_class, baseline=args.baseline, blur_mm=args.blur_mm,
                              progress=reporter)
        if reporter is not None:
            reporter.progress(0.95, "writing heatmaps and figure")
        written = write_explanation(explanation, Path(args.out), images=case.images)
    except Exception as exc:
        if reporter is not None:
            reporter.error(str(exc), type=type(exc).__name__)
        raise
    report = explanation.report(written)
    if reporter is not None:
        reporter.done(case_id=report["case_id"], task=report["task"], class_explained=report["class_explained"],
                      probability=report["probability"], delta=report["delta"],
                      outputs={k: str(v) for k, v in written.items()}, warnings=report["warnings"])
    else:
        print("\n".join(_summary(report, written)))
    return 0
