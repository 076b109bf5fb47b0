"""Train a recipe: ``python -m GliomaMTLLib.train.train --config training/configs/<recipe>.yaml [--out runs/<name>] [--resume]``.

The same code runs as ``gliomamtl train`` and under ``torchrun`` for several GPUs or nodes::

    torchrun --nproc_per_node=4 -m GliomaMTLLib.train.train --config training/configs/gliomamtl_adult.yaml

Stages: prepare (cached preprocessed arrays) -> train (checkpoints, train_log.jsonl) ->
evaluate (``python -m GliomaMTLLib.train.evaluate --run runs/<name>``) -> export
(``python -m GliomaMTLLib.train.export --run runs/<name> --out Resources/Models/<name>``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="recipe YAML, or a recipe name in training/configs (shi2023, sgpnet, nuechterlein, "
                             "vafaeikia_plgg, huang_dt, gliomamtl_adult, gliomamtl_pediatric)")
    parser.add_argument("--out", help="run folder (default runs/<recipe name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", nargs="+",
                        help="override recipe values by dotted key, e.g. --set train.iterations=5 data.n_train=4 "
                             "stages.main.input.size=[64,64,64]")
    parser.add_argument("--smoke", action="store_true",
                        help="apply the recipe's smoke overrides (tiny data and network, a few iterations)")
    parser.add_argument("--prepare-only", action="store_true", help="only run the prepare stage (cache the arrays)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate on the test split when training finishes")
    parser.add_argument("--progress-json", action="store_true", help="print JSON-lines progress events on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    from GliomaMTLLib.train.config import load_recipe
    from GliomaMTLLib.train.data import prepare
    from GliomaMTLLib.train.trainer import train

    overrides = [item for group in args.overrides for item in group]
    recipe = load_recipe(args.config, overrides, smoke=args.smoke)
    run_dir = Path(args.out) if args.out else Path("runs") / recipe["name"]
    reporter = None
    is_main = int(os.environ.get("RANK", "0")) == 0
    if args.progress_json and is_main:
        from GliomaMTLLib.progress import JsonLinesReporter

        reporter = JsonLinesReporter(sys.stdout)
    try:
        if args.prepare_only:
            report = prepare(recipe, run_dir, progress=reporter)
            message = {stage: str(folder) for stage, folder in report.folders.items()}
            if reporter is not None:
                reporter.done(prepared=message, built=report.built, reused=report.reused)
            else:
                print(f"prepared {report.built} case(s), reused {report.reused}: {message}")
            return 0
        info = train(recipe, run_dir, resume=args.resume, reporter=reporter, quiet=args.quiet or args.progress_json)
        if args.evaluate and info["status"] == "finished" and is_main:
            from GliomaMTLLib.train.evaluate import evaluate_run

            evaluate_run(run_dir)
        if reporter is None and is_main:
            print(f"{info['status']}: {info['iterations']} iterations in {info['seconds']:.1f} s -> {run_dir}")
        return 0
    except Exception as exc:
        if reporter is not None:
            reporter.error(str(exc), type=type(exc).__name__)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m GliomaMTLLib.train.train", description="Train a GliomaMTL recipe.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
