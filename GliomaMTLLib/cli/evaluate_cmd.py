"""`gliomamtl evaluate`: the papers' tables for a training run or a model bundle."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice/HD95/sensitivity/specificity, genotype AUC/accuracy and C-index tables",
        description="Evaluate a training run (--run, held-out split at the recipe's resolution) or a model "
        "bundle (--model, on a folder or synthetic cases, through the inference pipeline). Writes "
        "report.md, CSV tables, metrics.json and roc.png into --out.",
    )
    from GliomaMTLLib.train.evaluate import add_arguments

    add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.train.evaluate import run_from_args

    return run_from_args(args)
