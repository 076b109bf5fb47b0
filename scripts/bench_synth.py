#!/usr/bin/env python
"""Benchmark and calibration report of the synthetic phantom generator.

Speed (default): generates full-size cases in memory, then writes them as BraTS NIfTI files, and
prints one row per case: generate s, write s, peak RSS MB (process peak so far).

    python scripts/bench_synth.py --adult 3 --pediatric 2

Calibration (``--stats N``): z-scores each sequence over the brain, as REAL_STATS.md does, and
prints normal-brain percentiles and per-compartment mean +- sd averaged over N adult
IDH-wildtype ring-enhancing cases, next to the real scan's numbers. ``--spread 0`` renders the
calibrated base contrast without acquisition effects (what the base means were tuned on);
``--spread 1`` shows the randomised training distribution (mean and case-to-case sd).
Also prints how often the label-defining cues hold over the randomised cases.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from GliomaMTLLib.labels import ED, ET, NCR, SEQUENCES  # noqa: E402

REAL = {  # REAL_STATS.md
    "t1n": ((-1.77, -0.41, 0.22, 0.87, 1.44), (-2.01, 0.40), (-0.51, 0.74), (-1.54, 0.53)),
    "t1c": ((-1.53, -0.41, 0.11, 0.59, 1.21), (-1.34, 0.78), (-0.71, 0.69), (2.51, 1.70)),
    "t2w": ((-1.01, -0.71, -0.42, -0.06, 1.08), (2.54, 0.51), (1.31, 0.84), (2.00, 0.75)),
    "t2f": ((-1.12, -0.63, -0.35, -0.04, 0.49), (1.37, 0.88), (2.08, 0.90), (1.87, 0.76)),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(args: argparse.Namespace) -> None:
    from GliomaMTLLib.synth.anatomy import load_anatomy
    from GliomaMTLLib.synth.cohort import case_id_for, case_seed, write_case_files
    from GliomaMTLLib.synth.generator import synthesize

    t = time.perf_counter()
    load_anatomy(2 if args.small else 1)
    print(f"anatomy load: {time.perf_counter() - t:.2f} s (first use in this process; ~10 s more without "
          f"the on-disk cache); cpus={os.cpu_count()} load avg={os.getloadavg()[0]:.2f}")
    jobs = [("adult", i) for i in range(args.adult)] + [("pediatric", i) for i in range(args.pediatric)]
    print(f"{'case':<22} {'subtype':<15} {'generate s':>10} {'gen CPU s':>9} {'write s':>8} {'peak RSS MB':>11}   stages (s)")
    gen_times, write_times, cpus = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for cohort, i in jobs:
            cid = case_id_for(cohort, i)
            c0 = time.process_time()
            t0 = time.perf_counter()
            r = synthesize(case_seed(args.seed, i), cohort=cohort, small=args.small, case_id=cid)
            t1 = time.perf_counter()
            cpu = time.process_time() - c0
            write_case_files(r.case, Path(tmp) / cid, int16=r.store_int16)
            t2 = time.perf_counter()
            gen_times.append(t1 - t0)
            write_times.append(t2 - t1)
            stages = " ".join(f"{k}={v:.2f}" for k, v in r.timings.items() if k not in ("total", "anatomy"))
            cpus.append(cpu)
            print(f"{cid:<22} {r.subject.subtype:<15} {t1 - t0:>10.2f} {cpu:>9.2f} {t2 - t1:>8.2f} {peak_rss_mb():>11.0f}   {stages}")
    print(f"{'mean':<22} {'':<15} {np.mean(gen_times):>10.2f} {np.mean(cpus):>9.2f} {np.mean(write_times):>8.2f}")
    print(f"load avg after: {os.getloadavg()[0]:.2f} (other processes share the CPU when this is above ~1)")


def stats(args: argparse.Namespace) -> None:
    from GliomaMTLLib.synth.distractors import DISTRACTOR_CLASSES
    from GliomaMTLLib.synth.generator import synthesize

    per_case = []
    vent_ml = []
    cues = {"ED>brain FLAIR": [], "ED>brain T2": [], "ET>brain T1c": [], "ET>ED T1c": [],
            "CSF<WM FLAIR": [], "CSF>WM T2": [], "CSF<WM T1": []}
    seed = args.seed
    tried = 0
    wt = []
    while len(per_case) < args.stats and tried < 40 * args.stats:
        r = synthesize(seed + tried, "adult", small=args.small, contrast_spread=args.spread, degrade=args.spread > 0)
        tried += 1
        if r.subject.subtype != "idh_wt" or r.lesions[0].pattern != "ring":
            continue
        c = r.case
        brain = r.brain
        lab = c.label
        csf, wm, vent = r.tissue_full("csf"), r.tissue_full("wm"), r.tissue_full("ventricles")
        vent_ml.append(float(vent.sum()) * c.geometry.voxel_volume_ml)
        wt.append([(lab == k).sum() * c.geometry.voxel_volume_ml for k in (NCR, ED, ET)])
        row = {}
        for seq in SEQUENCES:
            x = c.images[seq]
            v = x[brain]
            z = (x - v.mean()) / v.std()
            normal = z[brain & (lab == 0)]
            row[seq] = (np.percentile(normal, [5, 25, 50, 75, 95]),
                        [(z[lab == k].mean(), z[lab == k].std()) if (lab == k).any() else (np.nan, np.nan)
                         for k in (NCR, ED, ET)],
                        z[brain & (csf > 0.9)].mean(), z[brain & (wm > 0.9)].mean(), normal.mean(),
                        z[brain & (vent > 0.9)].mean(), z[brain & (lab == NCR)].mean() if (lab == NCR).any() else np.nan,
                        {d: z[(r.distractor_full(d) > 0.5) & (lab == 0)].mean() if np.any(r.distractor_full(d) > 0.5) else np.nan
                         for d in DISTRACTOR_CLASSES})
        per_case.append(row)
        cues["ED>brain FLAIR"].append(row["t2f"][1][1][0] > row["t2f"][4] + 0.5)
        cues["ED>brain T2"].append(row["t2w"][1][1][0] > row["t2w"][4] + 0.3)
        cues["ET>brain T1c"].append(row["t1c"][1][2][0] > row["t1c"][4] + 0.5)
        cues["ET>ED T1c"].append(row["t1c"][1][2][0] > row["t1c"][1][1][0])
        cues["CSF<WM FLAIR"].append(row["t2f"][2] < row["t2f"][3])
        cues["CSF>WM T2"].append(row["t2w"][2] > row["t2w"][3])
        cues["CSF<WM T1"].append(row["t1n"][2] < row["t1n"][3])
    n = len(per_case)
    wt = np.asarray(wt)
    print(f"{n} adult IDH-wildtype ring cases, spread={args.spread}; mean volumes ml NCR {wt[:, 0].mean():.1f} "
          f"ED {wt[:, 1].mean():.1f} ET {wt[:, 2].mean():.1f} (real: 14.3 / 108.6 / 21.9)")
    print("sequence | normal brain p5/p25/p50/p75/p95 (synthetic; real) | NCR | ED | ET  (mean, case sd across cases; real mean +- sd)")
    for seq in SEQUENCES:
        pct = np.nanmean([r[seq][0] for r in per_case], axis=0)
        comp = np.asarray([r[seq][1] for r in per_case])  # (n, 3, 2)
        m = np.nanmean(comp[:, :, 0], axis=0)
        s = np.nanstd(comp[:, :, 0], axis=0)
        w = np.nanmean(comp[:, :, 1], axis=0)
        real = REAL[seq]
        print(f"{seq} | " + "/".join(f"{p:+.2f}" for p in pct) + " ; " + "/".join(f"{p:+.2f}" for p in real[0])
              + " | " + " | ".join(f"{m[k]:+.2f} (case sd {s[k]:.2f}, within {w[k]:.2f}; real {real[k + 1][0]:+.2f} +- {real[k + 1][1]:.2f})"
                                   for k in range(3)))
    print("fluid spaces and distractors (z over the brain; mean over cases): ventricle volume ml "
          f"min {min(vent_ml):.1f} / median {np.median(vent_ml):.1f} / max {max(vent_ml):.1f}")
    print("| sequence | ventricles (pure fluid) | NCR | " + " | ".join(DISTRACTOR_CLASSES) + " |")
    print("|---|---|---|" + "---|" * len(DISTRACTOR_CLASSES))
    for seq in SEQUENCES:
        vz = np.nanmean([r[seq][5] for r in per_case])
        nz = np.nanmean([r[seq][6] for r in per_case])
        dz = [np.nanmean([r[seq][7][d] for r in per_case]) for d in DISTRACTOR_CLASSES]
        print(f"| {seq} | {vz:+.2f} | {nz:+.2f} | " + " | ".join(f"{v:+.2f}" for v in dz) + " |")
    flair_ok = [r["t2f"][6] > r["t2f"][5] + 1.0 for r in per_case if np.isfinite(r["t2f"][6])]
    print(f"necrotic core FLAIR-brighter than the ventricles by > 1 z: {np.mean(flair_ok):.2f} of cases")
    print("cue holds in fraction of cases: " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in cues.items()))


def calibrate(args: argparse.Namespace) -> None:
    """Fit the base means of csf, gm, wm, necrosis, edema, et per sequence so that the rendered
    base contrast (no jitter, no acquisition effects) matches REAL_STATS.md.

    The base rendering is linear in the class means, and z-scores ignore offset and scale, so the
    fit only needs each case's per-voxel class weights (+ fixed texture) once.
    """
    from scipy.optimize import minimize

    from GliomaMTLLib.synth.appearance import BASE_MEANS, TEXTURE
    from GliomaMTLLib.synth.generator import synthesize
    from GliomaMTLLib.synth.tumor import CORE_CLASSES

    free = ("csf", "gm", "wm", "necrosis", "edema", "et")
    cases = []
    tried = 0
    rng = np.random.default_rng(0)
    while len(cases) < args.calibrate and tried < 60 * args.calibrate:
        r = synthesize(args.seed + tried, "adult", contrast_spread=0.0, degrade=False)
        tried += 1
        if r.subject.subtype != "idh_wt" or r.lesions[0].pattern != "ring":
            continue
        sc = r.scene
        lab_full = r.case.label[r.crop_box]
        wt_ml = np.count_nonzero(lab_full) * r.case.geometry.voxel_volume_ml
        if not 80 <= wt_ml <= 220:
            continue
        brain = sc.brain
        sel = np.flatnonzero(brain.ravel())
        sel = np.sort(rng.choice(sel, size=min(len(sel), 250_000), replace=False))
        w = {c: sc.weights[c].ravel()[sel].astype(np.float64) for c in ("csf", "gm", "wm")}
        tex = {"csf": sc.textures["fine"], "gm": sc.textures["tissue"], "wm": sc.textures["tissue"]}
        extra = {c: np.zeros(len(sel)) for c in ("necrosis", "edema", "et")}
        t = sc.tumor
        fixed_tex = sum(w[c] * TEXTURE[c] * tex[c].ravel()[sel] for c in ("csf", "gm", "wm"))
        if t is not None:
            boxmask = np.zeros(brain.shape, dtype=bool)
            boxmask[t.box] = True
            inbox = boxmask.ravel()[sel]
            idx_box = np.flatnonzero(boxmask.ravel())
            pos = np.searchsorted(idx_box, sel[inbox])
            total = sum(t.core[c] for c in CORE_CLASSES).ravel()[pos]
            keep = 1.0 - total - t.edema.ravel()[pos]
            for c in ("csf", "gm", "wm"):
                w[c][inbox] *= keep
            fixed_tex[inbox] *= keep
            extra["edema"][inbox] = t.edema.ravel()[pos]
            extra["necrosis"][inbox] = t.core["necrosis"].ravel()[pos]
            extra["et"][inbox] = t.core["et"].ravel()[pos]
            fixed_tex[inbox] += t.edema.ravel()[pos] * TEXTURE["edema"] * sc.tumor_textures["edema"].ravel()[pos]
            for c in ("necrosis", "et"):
                fixed_tex[inbox] += t.core[c].ravel()[pos] * TEXTURE[c] * sc.tumor_textures["core"].ravel()[pos]
        w.update(extra)
        lab = lab_full[brain]
        lab = lab.ravel()[np.searchsorted(np.flatnonzero(brain.ravel()), sel)]
        cases.append((w, fixed_tex, lab))
        print(f"calibration case {len(cases)}: seed {args.seed + tried - 1}, WT {wt_ml:.0f} ml", flush=True)

    for seq in SEQUENCES:
        pct_t, ncr_t, ed_t, et_t = REAL[seq]

        def stats_for(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pcts, comps = [], []
            for w, ft, lab in cases:
                x = ft + sum(w[c] * m for c, m in zip(free, mu))
                z = (x - x.mean()) / x.std()
                pcts.append(np.percentile(z[lab == 0], [5, 25, 50, 75, 95]))
                comps.append([z[lab == k].mean() for k in (NCR, ED, ET)])
            return np.mean(pcts, axis=0), np.nanmean(comps, axis=0)

        target_c = np.array([ncr_t[0], ed_t[0], et_t[0]])

        def loss(mu: np.ndarray) -> float:
            p, c = stats_for(mu)
            return float(np.sum((p - pct_t) ** 2) + 2.0 * np.sum((c - target_c) ** 2))

        x0 = np.array([BASE_MEANS[seq][c] for c in free])
        res = minimize(loss, x0, method="Nelder-Mead", options=dict(maxiter=1500, xatol=1e-3, fatol=1e-5))
        # z-units are relative: re-express so the normal classes keep their mean and spread.
        mu = res.x
        p, c = stats_for(mu)
        print(f"{seq}: loss {res.fun:.4f}; normal " + "/".join(f"{v:+.2f}" for v in p)
              + " target " + "/".join(f"{v:+.2f}" for v in pct_t)
              + "; NCR/ED/ET " + "/".join(f"{v:+.2f}" for v in c) + " target " + "/".join(f"{v:+.2f}" for v in target_c))
        print("   suggested: " + ", ".join(f'"{k}": {v:.2f}' for k, v in zip(free, mu)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adult", type=int, default=3)
    parser.add_argument("--pediatric", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--stats", type=int, default=0, help="calibration report over N IDH-wt ring cases")
    parser.add_argument("--spread", type=float, default=0.0, help="contrast spread for --stats (0 = base)")
    parser.add_argument("--calibrate", type=int, default=0, help="fit the base means on N base-contrast cases")
    args = parser.parse_args()
    if args.calibrate:
        calibrate(args)
    elif args.stats:
        stats(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
