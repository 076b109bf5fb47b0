"""`gliomamtl train`: train a recipe of training/configs (same code as ``python -m GliomaMTLLib.train.train``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a YAML recipe (training/configs/<recipe>.yaml)",
        description="Train a model from a YAML recipe: prepare the data (cached), train every stage with "
        "checkpoints (--resume continues a stopped run), optionally evaluate. Multi-GPU: run "
        "`torchrun --nproc_per_node=N -m GliomaMTLLib.train.train ...`.",
    )
    from GliomaMTLLib.train.train import add_arguments

    add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.train.train import run_from_args

    return run_from_args(args)
