"""`gliomamtl` command line: one sub-command per module in this package.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (called with the parsed namespace, returns an exit code). Building the parser imports
every sub-command module, so none may import torch, MONAI, NumPy, SciPy or SimpleITK at module
level (only inside the function that runs the command): ``gliomamtl --help`` then takes a few
tenths of a second. ``Testing/test_startup.py`` checks it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from GliomaMTLLib import __version__

# Sub-command modules, in the order `gliomamtl --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "GliomaMTLLib.cli.synth_cmd",
    "GliomaMTLLib.cli.predict_cmd",
    "GliomaMTLLib.cli.explain_cmd",
    "GliomaMTLLib.cli.demo_cmd",
    "GliomaMTLLib.cli.train_cmd",
    "GliomaMTLLib.cli.evaluate_cmd",
    "GliomaMTLLib.cli.correct_cmd",
    "GliomaMTLLib.cli.store_cmd",
    "GliomaMTLLib.cli.finetune_cmd",
    "GliomaMTLLib.cli.models_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gliomamtl",
        description="Glioma segmentation (NCR/ED/ET), genotype prediction and synthetic cohorts.",
    )
    parser.add_argument("--version", action="version", version=f"gliomamtl {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also GLIOMAMTL_DEBUG=1); allowed anywhere")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from GliomaMTLLib.cli.errors import run_guarded, split_debug_flag

    # --debug (anywhere) or GLIOMAMTL_DEBUG=1: tracebacks; errors.py turns every exception into one line.
    argv, debug = split_debug_flag(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(args.func, args, args.command, debug)


if __name__ == "__main__":
    sys.exit(main())
