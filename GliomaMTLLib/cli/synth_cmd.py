"""``gliomamtl synth``: generate a synthetic phantom cohort in the BraTS 2023 layout."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from GliomaMTLLib.progress import JsonLinesReporter


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic glioma phantom cohort (BraTS 2023 layout + labels.csv)",
        description=(
            "Generate N synthetic glioma cases (MNI152 anatomy, tumours with genotype-linked "
            "appearance, T1/T1c/T2/FLAIR with randomised contrast) as BraTS 2023 folders plus "
            "labels.csv (case_id, cohort, idh, codel_1p19q, braf, survival_days, event), and a "
            "preview PNG. Seeded: the same --seed gives the same cohort whatever --workers."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--n", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("--cohort", choices=("adult", "pediatric"), default="adult",
                        help="adult: IDH/1p19q genotypes (BraTS-GLI); pediatric: BRAF (BraTS-PED)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    parser.add_argument("--small", action="store_true",
                        help="64x64x52 grid at 3 mm instead of 240x240x155 at 1 mm (tests, demos)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--preview", type=Path, default=None, metavar="PNG",
                        help="preview image (default DIR/preview.png)")
    parser.add_argument("--no-preview", action="store_true", help="do not write a preview image")
    parser.add_argument("--json", action="store_true",
                        help="print progress as JSON lines (progress protocol) instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the cohort; returns the exit code. With ``--json`` a failure is one ``error`` event."""
    from GliomaMTLLib.cli.errors import one_line

    reporter = JsonLinesReporter() if args.json else None
    try:
        return _generate(args, reporter)
    except Exception as exc:
        if reporter is not None:
            reporter.error(one_line(exc), type=type(exc).__name__)
        raise


def _generate(args: argparse.Namespace, reporter: JsonLinesReporter | None) -> int:
    from GliomaMTLLib.io.output_folder import prepare_output_folder
    from GliomaMTLLib.synth.cohort import generate_cohort
    from GliomaMTLLib.synth.preview import preview_folder

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    prepare_output_folder(args.out)  # a file, under a file, read-only or full: one line before generating

    def progress(fraction: float, message: str) -> None:
        if reporter is not None:
            reporter.progress(fraction * 0.95, message)
        else:
            print(message, flush=True)

    t0 = time.perf_counter()
    if reporter is None:
        grid = "64x64x52 @ 3 mm" if args.small else "240x240x155 @ 1 mm"
        print(f"generating {args.n} {args.cohort} phantom case(s), seed {args.seed}, {grid}, "
              f"{args.workers} worker(s) -> {args.out}", flush=True)
    out = generate_cohort(args.out, args.n, cohort=args.cohort, seed=args.seed, small=args.small,
                          workers=args.workers, progress=progress)
    preview = None
    if not args.no_preview:
        preview = preview_folder(out, args.preview or out / "preview.png")
    elapsed = time.perf_counter() - t0
    if reporter is not None:
        reporter.done(out=str(out), labels=str(out / "labels.csv"), preview=str(preview) if preview else None,
                      cases=args.n, seconds=round(elapsed, 2))
    else:
        print(f"wrote {args.n} case(s) and {out / 'labels.csv'} in {elapsed:.1f} s", flush=True)
        if preview:
            print(f"preview: {preview}", flush=True)
    sys.stdout.flush()
    return 0
