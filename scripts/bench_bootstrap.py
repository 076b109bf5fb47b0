"""Benchmark: bootstrapping a pediatric cohort from the adult model (issue 9, section 4).

    .venv/bin/python scripts/bench_bootstrap.py [--cases 20] [--k 5] [--model gliomamtl_adult@0.2.0]
                                                [--iterations N] [--threads 1] [--out DIR]

The reader's loop, simulated: for each case of a synthetic pediatric cohort (four sequences,
full size), predict with the current version, "correct" the prediction with the truth, store the
correction, and every ``k`` cases fine-tune the current version on the whole store (a new version
that the next cases are predicted with). Prints per case the whole-tumor (and TC, ET) Dice of the
prediction before correction and the number of voxels the reader had to change, and per round the
fine-tune time; writes ``bootstrap.png`` (both curves) and ``bootstrap.jsonl`` (one line per case
and per round, appended as they happen) under ``--out``. Goal: WT Dice from about 0.4 on the first
cases to at least 0.8 within 20 corrected cases, each round within 3 minutes.

Everything (store, registry, prepared replay arrays) lives under ``--out``; the user's folders are
not touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def plot(rows: list[dict[str, Any]], rounds: list[dict[str, Any]], path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["case"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for region, style in (("WT", "o-"), ("TC", "s--"), ("ET", "^:")):
        ax1.plot(x, [r["dice"].get(region, float("nan")) for r in rows], style, label=f"{region} Dice",
                 alpha=1.0 if region == "WT" else 0.5)
    if any("control_dice" in r for r in rows):
        ax1.plot(x, [r.get("control_dice", {}).get("WT", float("nan")) for r in rows], "x", color="grey",
                 label="WT Dice, starting model (control)")
    ax1.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("Dice before correction")
    ax1.legend(loc="lower right")
    ax2.plot(x, [r["changed_voxels"] for r in rows], "o-", color="tab:red")
    ax2.set_ylabel("voxels the reader changed")
    ax2.set_xlabel("case (in the order the reader saw them)")
    ax2.set_xticks(x)
    for rnd in rounds:
        for ax in (ax1, ax2):
            ax.axvline(rnd["after_case"] + 0.5, color="tab:green", lw=0.8, alpha=0.6)
    ax1.set_title(f"Pediatric cohort from the adult model: fine-tune every {k} cases (green lines)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--k", type=int, default=5, help="fine-tune after every k corrected cases")
    parser.add_argument("--model", default="gliomamtl_adult", help="the starting version (default: the shipped adult model)")
    parser.add_argument("--iterations", type=int, default=None, help="per stage and round (default: the job's)")
    parser.add_argument("--stages", default=None, help="e.g. main (default: every stage)")
    parser.add_argument("--replay", type=int, default=None, help="synthetic replay cases (default: the job's)")
    parser.add_argument("--holdout", type=float, default=None, help="held-out fraction of the store (default: the job's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=31000, help="first seed of the pediatric cohort")
    parser.add_argument("--out", default="out/bench_bootstrap")
    parser.add_argument("--control", action="store_true",
                        help="also predict every case with the starting model (the curve without fine-tuning)")
    parser.add_argument("--replot", action="store_true", help="only redraw bootstrap.png from bootstrap.jsonl")
    args = parser.parse_args(argv)

    out = Path(args.out).absolute()
    if args.replot:
        events = [json.loads(line) for line in (out / "bootstrap.jsonl").read_text().splitlines() if line.strip()]
        plot([e for e in events if e["event"] == "case"], [e for e in events if e["event"] == "round"],
             out / "bootstrap.png", args.k)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    os.environ["GLIOMAMTL_DATA"] = str(out / "data")
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.finetune.correct import add_correction
    from GliomaMTLLib.finetune.job import FinetuneSettings, run_finetune
    from GliomaMTLLib.finetune.store import CorrectionStore
    from GliomaMTLLib.inference import Predictor
    from GliomaMTLLib.io import write_case, write_labels
    from GliomaMTLLib.metrics.report import markdown_table
    from GliomaMTLLib.metrics.segmentation import region_metrics
    from GliomaMTLLib.synth import generate_case

    settings = FinetuneSettings(num_threads=args.threads, replay_cache=str(out / "cache" / "prepared"))
    for key, value in (("iterations", args.iterations), ("replay_cases", args.replay), ("holdout", args.holdout)):
        if value is not None:
            setattr(settings, key, value)
    if args.stages:
        settings.stages = tuple(args.stages.split(","))
    log = open(out / "bootstrap.jsonl", "a")
    current = load_bundle(args.model)
    store = CorrectionStore(out / "data" / "corrections")
    rows: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    predictor = Predictor(current, device="cpu", num_threads=args.threads)
    control = predictor if args.control else None
    print(f"start: {current.name} {current.version}; {args.cases} pediatric cases, fine-tune every {args.k}; "
          f"settings {settings}", flush=True)
    for i in range(1, args.cases + 1):
        case_id = f"BraTS-PED-{args.seed + i:05d}-000"
        case = generate_case(args.seed + i, cohort="pediatric", case_id=case_id)
        truth, genotype = case.label, dict(case.genotype)
        t0 = time.perf_counter()
        prediction = predictor.predict(case)
        t_pred = time.perf_counter() - t0
        scores = region_metrics(prediction.labels, truth, case.geometry.spacing)
        row = {"case": i, "case_id": case_id, "model": f"{predictor.bundle.name}@{predictor.bundle.version}",
               "dice": {r: round(float(s["dice"]), 4) for r, s in scores.items()},
               "changed_voxels": int(np.count_nonzero(prediction.labels != truth)),
               "tumor_voxels": int((truth > 0).sum()), "predict_s": round(t_pred, 1), "genotype": genotype}
        if control is not None:
            if control is predictor:
                row["control_dice"] = dict(row["dice"])
            else:
                labels = control.predict(case).labels
                row["control_dice"] = {r: round(float(s["dice"]), 4) for r, s in
                                       region_metrics(labels, truth, case.geometry.spacing).items()}
        rows.append(row)
        log.write(json.dumps({"event": "case", **row}) + "\n")
        log.flush()
        print(f"case {i:2d} {case_id}: WT {row['dice']['WT']:.3f} TC {row['dice']['TC']:.3f} ET {row['dice']['ET']:.3f}; "
              f"{row['changed_voxels']} voxels changed (tumor {row['tumor_voxels']}); model {row['model']}", flush=True)
        folder = out / "cases" / case_id
        case.label = None
        write_case(case, folder)
        write_labels(out / "cases" / f"{case_id}_corrected.nii.gz", truth, case.geometry)
        add_correction(folder, out / "cases" / f"{case_id}_corrected.nii.gz", store=store, model=current,
                       prediction=prediction.labels, genotype=genotype, replace=True)
        if i % args.k == 0 and i < args.cases:
            t0 = time.perf_counter()
            result = run_finetune(store, current.folder, name="gliomamtl_pediatric_bootstrap", settings=settings)
            seconds = time.perf_counter() - t0
            current = load_bundle(result["folder"])
            predictor = Predictor(current, device="cpu", num_threads=args.threads)
            rnd = {"after_case": i, "version": result["version"], "seconds": round(seconds, 1),
                   "stages": result["stages"], "held_out": result["held_out"],
                   "held_out_wt_before": result["metrics_before"]["dice"].get("WT"),
                   "held_out_wt_after": result["metrics_after"]["dice"].get("WT")}
            rounds.append(rnd)
            log.write(json.dumps({"event": "round", **rnd}) + "\n")
            log.flush()
            speeds = ", ".join(f"{s['stage']} {s['sec_per_iteration']:.2f} s/it" for s in result["stages"])
            print(f"round after case {i}: {result['version']} in {seconds:.0f} s ({speeds}); "
                  f"held-out WT {rnd['held_out_wt_before']} -> {rnd['held_out_wt_after']}", flush=True)
            plot(rows, rounds, out / "bootstrap.png", args.k)
    log.close()
    plot(rows, rounds, out / "bootstrap.png", args.k)
    table = [{"case": r["case"], "model": r["model"], "WT": r["dice"]["WT"], "TC": r["dice"]["TC"], "ET": r["dice"]["ET"],
              "voxels changed": r["changed_voxels"], "tumor voxels": r["tumor_voxels"],
              "control WT": r.get("control_dice", {}).get("WT")} for r in rows]
    columns = ["case", "model", "WT", "TC", "ET", "voxels changed", "tumor voxels"] + (["control WT"] if args.control else [])
    print(markdown_table(table, columns))
    print(markdown_table([{"after case": r["after_case"], "version": r["version"], "seconds": r["seconds"],
                           "held-out WT before": r["held_out_wt_before"], "after": r["held_out_wt_after"]} for r in rounds],
                         ["after case", "version", "seconds", "held-out WT before", "after"]))
    first = [r["dice"]["WT"] for r in rows[: args.k]]
    last = [r["dice"]["WT"] for r in rows[-args.k:]]
    print(f"mean WT Dice: first {len(first)} cases {np.mean(first):.3f}, last {len(last)} cases {np.mean(last):.3f}; "
          f"rounds {[r['seconds'] for r in rounds]} s; plot {out / 'bootstrap.png'}")
    if args.control:
        ctrl = [r["control_dice"]["WT"] for r in rows[-args.k:]]
        print(f"control (starting model, no fine-tune) on the last {len(ctrl)} cases: mean WT Dice {np.mean(ctrl):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
