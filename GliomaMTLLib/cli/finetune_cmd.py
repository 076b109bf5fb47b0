"""`gliomamtl finetune`: train a model version further on the correction store; the result is a new
version in the model registry, made active (see :mod:`GliomaMTLLib.finetune.job`).

::

    gliomamtl finetune --store DIR [--from NAME|VERSION] [--name NEW] [--iterations N]
                       [--stages localizer,main] [--progress-json]

SIGTERM or SIGINT (Ctrl-C) stops it at the next iteration without writing a version (exit status
128 + signal number; with ``--progress-json`` one ``error`` event with ``"cancelled": true``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from GliomaMTLLib.cli.correct_cmd import add_store_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a model version on the correction store into a new, active version",
        description="Start from a model version, train on the stored corrections mixed with synthetic cases of the "
        "model's own recipe (replay, so it does not forget), measure before and after on held-out corrections "
        "through the same Predictor as 'predict', and save the result as a new version in the model registry "
        "($GLIOMAMTL_DATA/models). Earlier versions are never changed; 'gliomamtl models rollback' undoes it.",
    )
    add_store_argument(parser)
    parser.add_argument("--from", dest="source", metavar="NAME|VERSION",
                        help="model to start from: a name (its active version), NAME@VERSION or a bundle folder "
                             "(default: the active version of gliomamtl_adult)")
    parser.add_argument("--name", help="model name of the new version (default: the parent's name)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per stage (default 40)")
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages to train, e.g. main (default: every stage); the others are "
                             "carried over unchanged")
    parser.add_argument("--holdout", type=float, default=None, help="fraction of corrections held out (default 0.2)")
    parser.add_argument("--replay", type=int, default=None, metavar="N",
                        help="synthetic cases of the model's recipe to replay (default 8; 0: none)")
    parser.add_argument("--replay-fraction", type=float, default=None,
                        help="fraction of training samples taken from the replay cases (default 0.3)")
    parser.add_argument("--lr-factor", type=float, default=None, help="multiplies the recipe's learning rate (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per iteration (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: a CUDA GPU when there is one, else the CPU (default)")
    parser.add_argument("--seed", type=int, default=None, help="seed of sampling and augmentation (default 0)")
    parser.add_argument("--no-activate", action="store_true", help="do not make the new version active")
    parser.add_argument("--progress-json", action="store_true",
                        help="print progress as JSON lines (event progress/log/done/error) on stdout")
    parser.set_defaults(func=run)


class _TextReporter:
    """Human-readable progress on stderr (the JSON-lines reporter's interface)."""

    def __init__(self) -> None:
        self.last = ""

    def progress(self, fraction: float, message: str = "") -> None:
        head = message.split(" ")[0]
        if head != self.last or fraction >= 1.0 or "/" not in message:
            print(f"[finetune {fraction:4.0%}] {message}", file=sys.stderr, flush=True)
        self.last = head

    def log(self, message: str, **_: Any) -> None:
        print(f"[finetune] {message}", file=sys.stderr, flush=True)


def settings_from_args(args: argparse.Namespace) -> Any:
    from GliomaMTLLib.finetune.job import FinetuneSettings

    settings = FinetuneSettings()
    pairs = {"iterations": args.iterations, "holdout": args.holdout, "replay_cases": args.replay,
             "replay_fraction": args.replay_fraction, "lr_factor": args.lr_factor, "batch_size": args.batch_size,
             "num_threads": args.threads, "seed": args.seed, "device": args.device}
    for key, value in pairs.items():
        if value is not None:
            setattr(settings, key, value)
    if args.stages:
        settings.stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    settings.activate = not args.no_activate
    if settings.iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {settings.iterations}")
    if not 0.0 <= settings.holdout < 1.0 or not 0.0 <= settings.replay_fraction <= 1.0:
        raise ValueError("--holdout must lie in [0, 1) and --replay-fraction in [0, 1]")
    return settings


def run(args: argparse.Namespace) -> int:
    from GliomaMTLLib.finetune.job import FinetuneCancelled, StopFlag, run_finetune
    from GliomaMTLLib.progress import JsonLinesReporter

    reporter: Any = JsonLinesReporter(sys.stdout) if args.progress_json else _TextReporter()
    stop = StopFlag()
    try:
        settings = settings_from_args(args)
        with stop.handle_signals():
            result = run_finetune(args.store, args.source, name=args.name, settings=settings,
                                  reporter=reporter, stop=stop)
    except FinetuneCancelled as exc:
        if args.progress_json:
            reporter.error(str(exc), type="FinetuneCancelled", cancelled=True)
        else:
            print(f"gliomamtl finetune: {exc}", file=sys.stderr)
        return 128 + int(stop.signal or 2)
    except Exception as exc:
        if args.progress_json:
            reporter.error(str(exc), type=type(exc).__name__)
        raise
    if args.progress_json:
        reporter.done(**result)
        return 0
    before, after = result["metrics_before"], result["metrics_after"]
    print(f"{result['version']} written to {result['folder']}" + (" (now active)" if result["active"] else ""))
    print(f"  from {result['parent']}; trained on {len(result['trained_on'])} correction(s), "
          f"held out {len(result['held_out'])}; {result['seconds']:.0f} s")
    for stage in result["stages"]:
        print(f"  {stage['stage']}: {stage['iterations']} iterations, {stage['sec_per_iteration']:.2f} s each"
              + (", genotype path trained" if stage["genotype_trained"] else ""))
    if before["n"]:
        for region in before["dice"]:
            print(f"  held-out {region} Dice {before['dice'][region]:.3f} -> {after['dice'][region]:.3f}")
    return 0
