"""`gliomamtl` command line: one sub-command per module in this package.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (called with the parsed namespace, returns an exit code).
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
    "GliomaMTLLib.cli.demo_cmd",
    "GliomaMTLLib.cli.train_cmd",
    "GliomaMTLLib.cli.evaluate_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gliomamtl",
        description="Glioma segmentation (NCR/ED/ET), genotype prediction and synthetic cohorts.",
    )
    parser.add_argument("--version", action="version", version=f"gliomamtl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        # User errors (bad file, bad value): one clear line, no traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"gliomamtl {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
