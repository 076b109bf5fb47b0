"""Benchmark of `gliomamtl explain` on one full-size case (prints tables; not a test).

1. End to end: the real command (a child process: start, read, predict, integrated gradients,
   heatmaps on the input grid, explain.png, explain.json) with default settings; wall time,
   CPU time and peak memory of the child.
2. Convergence: the convergence delta (completeness error) against the number of steps
   (8, 16, 32, 64) for the default blurred baseline and for the zero baseline, in process, with
   the time of the integrated-gradient part alone.

Usage::

    .venv/bin/python scripts/bench_explain.py [--case DIR] [--model gliomamtl_adult] [--task idh]
        [--steps 8 16 32 64] [--baselines blur zero] [--threads 2]

Without ``--case`` a seeded 240x240x155 adult phantom is generated into a temporary folder.
The machine's load average is printed with the timings: on a shared machine, wall times grow
with it, CPU times much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_case(folder: Path, seed: int) -> Path:
    """One full-size adult phantom case folder, made by ``gliomamtl synth``."""
    cmd = [sys.executable, "-m", "GliomaMTLLib", "synth", "--out", str(folder / "cohort"), "--n", "1",
           "--cohort", "adult", "--seed", str(seed)]
    subprocess.run(cmd, check=True, capture_output=True)
    return next(p for p in sorted((folder / "cohort").iterdir()) if p.is_dir())


def end_to_end(case: Path, out: Path, model: str, task: str | None, threads: int) -> dict:
    cmd = [sys.executable, "-m", "GliomaMTLLib", "explain", str(case), "--out", str(out), "--model", model]
    if task:
        cmd += ["--task", task]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"explain failed ({result.returncode}):\n{result.stderr[-3000:]}")
    report = json.loads((out / "explain.json").read_text())
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_gb": after.ru_maxrss / 1e6,  # kB on Linux
        "load": load,
        "report": report,
    }


def convergence(case: Path, model: str, task: str | None, steps_list: list[int], baselines: list[str],
                threads: int) -> list[dict]:
    import torch

    from GliomaMTLLib.explain import explain
    from GliomaMTLLib.inference import Predictor

    torch.set_num_threads(threads)
    predictor = Predictor(model)
    loaded = predictor.read(case)
    rows = []
    for baseline in baselines:
        for steps in steps_list:
            load = os.getloadavg()[0]
            c0 = time.process_time()
            e = explain(loaded, task, predictor=predictor, steps=steps, baseline=baseline)
            a = e.attribution
            rows.append({
                "baseline": baseline, "steps": steps, "f(x)": a.output, "f(baseline)": a.baseline_output,
                "delta": a.delta, "relative delta": a.relative_delta,
                "IG wall s": e.timings["integrated_gradients"], "cpu s (all)": time.process_time() - c0,
                "load": load,
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, help="case folder (default: a generated full-size adult phantom)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default="gliomamtl_adult")
    parser.add_argument("--task", default=None, help="default: the model's first genotype task")
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--baselines", nargs="+", default=["blur", "zero"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--end-to-end-only", action="store_true")
    args = parser.parse_args()

    from GliomaMTLLib.metrics import markdown_table

    with tempfile.TemporaryDirectory(prefix="gliomamtl-bench-explain-") as tmp:
        case = args.case or make_case(Path(tmp), args.seed)
        print(f"case {case}, model {args.model}, {args.threads} threads, {os.cpu_count()} CPUs", flush=True)
        if not args.skip_end_to_end:
            e2e = end_to_end(case, Path(tmp) / "out", args.model, args.task, args.threads)
            r = e2e["report"]
            print("\nEnd to end (`gliomamtl explain CASE --out DIR`, default settings):\n")
            table = [{
                "task": f"{r['task']} = {r['class_explained']}", "steps": r["steps"],
                "wall s": round(e2e["wall_s"], 1), "child CPU s": round(e2e["cpu_s"], 1),
                "peak GB": round(e2e["peak_gb"], 2), "load avg": round(e2e["load"], 1),
                "delta": f"{r['delta']:.3g}", "relative delta": f"{r['relative_delta']:.1%}",
                **{f"{k} s": v for k, v in r["timings_s"].items()},
            }]
            print(markdown_table(table, list(table[0]), floatfmt=".2f"))
        if args.end_to_end_only:
            return
        rows = convergence(case, args.model, args.task, args.steps, args.baselines, args.threads)
        print("\nConvergence delta against steps (sum of attributions minus f(x) - f(baseline)):\n")
        for row in rows:
            row["relative delta"] = f"{row['relative delta']:.2%}"
            row["delta"] = f"{row['delta']:.3g}"
        print(markdown_table(rows, list(rows[0]), floatfmt=".3f"))


if __name__ == "__main__":
    main()
