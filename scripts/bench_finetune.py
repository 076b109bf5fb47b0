"""Benchmark: one fine-tune round on corrected full-size cases (issue 9: under 3 minutes on the 2-core CPU).

    .venv/bin/python scripts/bench_finetune.py [--cases 5] [--model gliomamtl_adult] [--iterations N]
                                               [--stages localizer,main] [--threads 2] [--out DIR]

Makes ``--cases`` full-size (240x240x155) synthetic adult phantoms, "corrects" the model's
prediction of each with its truth (``gliomamtl correct``'s code path), then runs one fine-tune round
(`GliomaMTLLib.finetune.job.run_finetune`) and prints a table: time of the round, time per iteration
of each stage, held-out Dice before / after, peak memory (RSS). The synthetic replay cases are
prepared (and cached) once before the round is timed; that one-time cost is printed separately.
Everything is written under ``--out`` (its own store, registry and cache), never the user's folders.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--model", default="gliomamtl_adult", help="model or NAME@VERSION (default: the shipped adult model)")
    parser.add_argument("--iterations", type=int, default=None, help="per stage (default: the job's default)")
    parser.add_argument("--stages", default=None, help="e.g. main (default: every stage)")
    parser.add_argument("--replay", type=int, default=None, help="synthetic replay cases (default: the job's default)")
    parser.add_argument("--lr-factor", type=float, default=None, help="default: the job's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=9100, help="first phantom seed")
    parser.add_argument("--out", default="out/bench_finetune")
    args = parser.parse_args(argv)

    out = Path(args.out).absolute()
    os.environ["GLIOMAMTL_DATA"] = str(out / "data")  # this run's own store and registry
    import torch

    torch.set_num_threads(args.threads)
    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.finetune.correct import add_correction
    from GliomaMTLLib.finetune.data import replay_cases, replay_recipe
    from GliomaMTLLib.finetune.job import FinetuneSettings, run_finetune
    from GliomaMTLLib.finetune.store import CorrectionStore
    from GliomaMTLLib.inference import Predictor
    from GliomaMTLLib.io import write_case, write_labels
    from GliomaMTLLib.metrics.report import markdown_table
    from GliomaMTLLib.synth import generate_case

    settings = FinetuneSettings(num_threads=args.threads, replay_cache=str(out / "cache" / "prepared"))
    if args.iterations:
        settings.iterations = args.iterations
    if args.stages:
        settings.stages = tuple(args.stages.split(","))
    if args.replay is not None:
        settings.replay_cases = args.replay
    if args.lr_factor is not None:
        settings.lr_factor = args.lr_factor
    bundle = load_bundle(args.model)
    store = CorrectionStore(out / "data" / "corrections")
    predictor = Predictor(bundle, device="cpu", num_threads=args.threads)
    t0 = time.perf_counter()
    for i in range(args.cases):
        case_id = f"BraTS-GLI-{args.seed + i:05d}-000"
        if case_id in store:
            continue
        case = generate_case(args.seed + i, cohort="adult", case_id=case_id)
        folder = out / "cases" / case_id
        truth = case.label
        case.label = None
        write_case(case, folder)
        write_labels(out / "cases" / f"{case_id}_corrected.nii.gz", truth, case.geometry)
        case.label = truth
        prediction = predictor.predict(case).labels
        add_correction(folder, out / "cases" / f"{case_id}_corrected.nii.gz", store=store, model=bundle,
                       prediction=prediction)
        print(f"stored {case_id}", file=sys.stderr)
    t_cases = time.perf_counter() - t0

    t0 = time.perf_counter()
    recipe = replay_recipe(bundle.meta, settings.replay_cases, settings.replay_cache) if settings.replay_cases else None
    if recipe is not None:
        for stage in settings.stages or bundle.stages:
            replay_cases(recipe, stage, bundle.stages[stage])
    t_replay = time.perf_counter() - t0

    t0, cpu0 = time.perf_counter(), time.process_time()
    result = run_finetune(store, bundle.folder, settings=settings, name=f"{bundle.name}_bench")
    t_round, cpu_round = time.perf_counter() - t0, time.process_time() - cpu0
    load = os.getloadavg()[0]
    rows = [{"what": "fine-tune round, wall time (end to end)", "value": f"{t_round:.1f} s"},
            {"what": "fine-tune round, CPU time of this process", "value": f"{cpu_round:.1f} s"}]
    for stage in result["stages"]:
        n = max(stage["iterations"], 1)
        rows.append({"what": f"{stage['stage']}: {stage['iterations']} iterations", "value":
                     f"wall {stage['seconds']:.1f} s ({stage['sec_per_iteration']:.2f} s/iteration), CPU "
                     f"{stage['cpu_seconds']:.1f} s ({stage['cpu_seconds'] / n:.2f} s/iteration); "
                     f"{stage['replay_cases']} replay cases"})
    before, after = result["metrics_before"], result["metrics_after"]
    for region in before["dice"]:
        rows.append({"what": f"held-out {region} Dice ({before['n']} case)",
                     "value": f"{before['dice'][region]:.3f} -> {after['dice'][region]:.3f}"})
    rows += [
        {"what": "peak memory (RSS, whole script)", "value": f"{peak_rss_gb():.2f} GB"},
        {"what": f"making + predicting + storing {args.cases} cases (not part of the round)", "value": f"{t_cases:.1f} s"},
        {"what": "replay preparation (once, then cached)", "value": f"{t_replay:.1f} s"},
    ]
    print(f"model {bundle.name} {bundle.version}, {args.cases} corrected full-size cases, torch threads {args.threads}, "
          f"new version {result['version']}; load average at the end {load:.1f} on {os.cpu_count()} CPUs "
          "(on a shared machine the CPU time is the better estimate of a quiet machine's wall time with 1 thread)")
    print(markdown_table(rows, ["what", "value"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
