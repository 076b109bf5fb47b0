"""Time a recipe's training iterations on this machine and project the full run's duration.

``python -m GliomaMTLLib.train.benchmark --config gliomamtl_adult [--iterations 4] [--set KEY=VALUE ...]``

Runs the real trainer (sampling, augmentation, forward, backward, optimizer step) for a few
iterations of every phase on 2 freshly made training cases, then prints seconds per iteration
per phase, split into waiting for the batch (data) and forward + backward + step (compute), plus
the process's CPU seconds per iteration (comparable when other jobs share the CPU) (the
first iteration of each phase, which pays one-time costs, is left out) and the time the recipe's
own iteration counts would take. Compare settings with ``--set``, e.g. ``train.prefetch=0``
(batches drawn in the loop) against the default background prefetch. Use it to size ``phases.*.iterations`` for a
time budget; it measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from GliomaMTLLib.train.config import load_recipe, schedule_plan
    from GliomaMTLLib.train.trainer import train

    parser = argparse.ArgumentParser(prog="python -m GliomaMTLLib.train.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="recipe name or YAML")
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per phase (plus one warm-up)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cache-dir", help="prepared-array cache (default: a temporary folder)")
    args = parser.parse_args(argv)
    overrides = [o for group in args.overrides for o in group]
    full = load_recipe(args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="gliomamtl-bench-") as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        quick = load_recipe(args.config, [*overrides, "data.n_train=2", "data.n_val=0", "data.n_test=0",
                                          f"data.cache_dir={cache}", f"train.iterations={args.iterations + 1}",
                                          "train.log_every=1", "train.checkpoint_every=0"])
        run = Path(tmp) / "run"
        train(quick, run, quiet=True)
        log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    print("| stage | phase | batch | input | s/iteration | data s/it | compute s/it | CPU s/it | recipe iterations | projected hours |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    total = 0.0
    for stage, _, phase, n_iter in schedule_plan(full):
        rows = [e for e in log if e["stage"] == stage and e["phase"] == phase][1:]
        med = lambda key: statistics.median(e[key] for e in rows) if rows else float("nan")  # noqa: E731
        per_it = med("sec_per_it")
        conf = full["stages"][stage]
        phase_conf = next(p for p in conf["phases"] if p["name"] == phase)
        size = "x".join(map(str, phase_conf["input"]["size"]))
        hours = per_it * n_iter / 3600
        total += hours
        print(f"| {stage} | {phase} | {conf['batch_size']} | {phase_conf['input']['mode']} {size} | "
              f"{per_it:.2f} | {med('data_sec_per_it'):.2f} | {med('compute_sec_per_it'):.2f} | {med('cpu_sec_per_it'):.2f} | {n_iter} | {hours:.2f} |")
    import os

    print(f"\nprojected training time for {full['name']}: {total:.2f} h (plus data preparation); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
