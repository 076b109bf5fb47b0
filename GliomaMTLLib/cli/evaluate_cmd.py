"""`gliomamtl evaluate`: the papers' tables for a training run or a model bundle.

The flags are defined here (no heavy import: ``gliomamtl --help`` stays fast); the work is done by
:mod:`GliomaMTLLib.train.evaluate`, imported only when the command runs.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``gliomamtl evaluate`` (also ``python -m GliomaMTLLib.train.evaluate``)."""
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="a training run folder (runs/<name>)")
    what.add_argument("--model", help="a model bundle folder or name (Resources/Models/<name>)")
    parser.add_argument("--data", help="with --model: a BraTS-style folder (+ labels.csv) or "
                        "synth:<adult|pediatric>[:n=N][:seed=S][:small] (default synth:<cohort>:n=8)")
    parser.add_argument("--clinical-csv", help="with --model and a folder: the genotype / survival CSV")
    parser.add_argument("--sequences", metavar="SEQ[,SEQ...]", nargs="+",
                        help="evaluate with only these input sequences (e.g. t1c,t2f): the others are removed from "
                        "every case before prediction, as if the scan lacked them (default: all). Several subsets "
                        "(e.g. all t1c,t2f t2w,t2f t2f) with --model: one report each in --out/<t1c+t2f>/ and "
                        "a comparison in --out/subsets.md, every case built once")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="with --model: test-time flips on or off (default: the model's setting)")
    parser.add_argument("--split", choices=("train", "val", "test"), help="with --run: split to evaluate (default test)")
    parser.add_argument("--max-cases", type=int, help="evaluate at most this many cases")
    parser.add_argument("--out", help="output folder (default <run>/eval-<split>)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--progress-json", action="store_true", help="print JSON-lines progress events on stdout")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice/HD95/sensitivity/specificity, genotype AUC/accuracy and C-index tables",
        description="Evaluate a training run (--run, its held-out split) or a model bundle (--model, on a "
        "folder or synthetic cases). Both run through the inference pipeline (GliomaMTLLib.inference."
        "Predictor) on each case's input grid, so the numbers are what `gliomamtl predict` gives. Writes "
        "report.md, CSV tables, metrics.json and roc.png into --out.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.train.evaluate import run_from_args

    return run_from_args(args)
