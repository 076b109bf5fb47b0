#!/usr/bin/env python
"""Does fitting the genotype path also on phantoms of another contrast make it hold up under a shift?

    python -m GliomaMTLLib.train.genotype_fit --model gliomamtl_adult --cohort adult --collect \\
        --cache runs/genotype_fit/cache_adult_041 \\
        --counts train=320,val=100,test=200,transfer=100,train_shift=160 --out runs/genotype_fit/shift_on
    python scripts/genotype_shift_compare.py --model gliomamtl_adult --cache runs/genotype_fit/cache_adult_041

Fits the path several ways on one cache, as ``genotype_fit`` does: on ``train`` + ``val`` (what the
shipped path uses); on ``train`` + ``val`` + ``train_shift`` (phantoms rendered with contrast
spread 1.4); and both again without the features that read raw intensity levels
(:data:`LEVELS`: mean T2, FLAIR and enhancement in a compartment, FLAIR spread), keeping the
segmentation, shape, location and contrast-relative features. All are measured on the same
``test`` phantoms (spread 1.0) and ``transfer`` phantoms (spread 1.8, a setting neither the network
nor any fit saw). Prints per task and split the AUC of each fit, its paired AUC difference to the
shipped way with a bootstrap 95% interval (the same cases resampled for both), and the ECE; then
the features that move most between test and transfer (standardized mean difference). It
measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


#: Features that read an intensity level of a compartment (what a contrast change moves directly).
LEVELS = ("enhancement_core", "enhancement_et", "t2_ncr", "flair_ncr", "t2_edema", "flair_edema", "flair_sd_wt")


def paired_auc(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(AUC(b) - AUC(a), 2.5th and 97.5th bootstrap percentiles) on the known labels (y >= 0)."""
    from GliomaMTLLib.metrics.classification import roc_auc

    known = y >= 0
    y, p_a, p_b = y[known], p_a[known], p_b[known]
    diff = roc_auc(y, p_b) - roc_auc(y, p_a)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        boots.append(roc_auc(y[i], p_b[i]) - roc_auc(y[i], p_a[i]))
    return float(diff), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gliomamtl_adult", help="bundle the cache was collected with")
    parser.add_argument("--cohort", default="adult", choices=("adult", "pediatric"))
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()

    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.genotype.features import FEATURE_NAMES
    from GliomaMTLLib.train.genotype_fit import cohort_tasks, fit_and_measure, load_features

    bundle = load_bundle(args.model)
    tasks = dict(bundle.tasks) or cohort_tasks(args.cohort)
    data = load_features(args.cache, bundle.sequences, tasks, args.cohort)
    if "train_shift" not in data:
        raise SystemExit(f"{args.cache}: no train_shift phantoms; collect them with --counts ...,train_shift=N")
    quiet = lambda m: None  # noqa: E731
    keep = [i for i, n in enumerate(FEATURE_NAMES) if n not in LEVELS]
    no_levels = {k: {**v, "X": v["X"][:, keep]} for k, v in data.items()}
    variants = {  # label -> (data, feature names, development splits)
        "train + val (shipped)": (data, list(FEATURE_NAMES), ("train", "val")),
        "+ train_shift": (data, list(FEATURE_NAMES), ("train", "val", "train_shift")),
        "no levels": (no_levels, [FEATURE_NAMES[i] for i in keep], ("train", "val")),
        "no levels + train_shift": (no_levels, [FEATURE_NAMES[i] for i in keep], ("train", "val", "train_shift")),
    }
    fits = {label: fit_and_measure(d, tasks, band=(0.35, 0.65), temperatures={}, log=quiet, feature_names=names,
                                   development=dev) for label, (d, names, dev) in variants.items()}
    print(f"{bundle.name} {bundle.version}, cache {args.cache} (n: " + ", ".join(f"{k} {len(v['ids'])}" for k, v in data.items()) + ")")
    base = fits["train + val (shipped)"]
    for label, key in (("images", "arrays"), ("images + age", "age_arrays")):
        metrics = "metrics" if key == "arrays" else "age_metrics"
        print(f"\n{label}:\n")
        print("| task | split | fit | AUC | paired difference to the shipped fit [95% CI] | ECE |")
        print("|---|---|---|---|---|---|")
        for task, classes in tasks.items():
            for split in ("test", "transfer"):
                if task not in base[key] or split not in base[key][task]:
                    continue
                y, p_base = base[key][task][split]
                for name, fit in fits.items():
                    _, p = fit[key][task][split]
                    m = fit[metrics][task][split]
                    paired = ""
                    if fit is not base and len(classes) == 2:
                        d, lo, hi = paired_auc(np.asarray(y), p_base[:, 1], p[:, 1])
                        paired = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                    print(f"| {task} | {split} (n={len(y)}) | {name} | {m['auc']:.3f} | {paired} | {m['ece']:.3f} |")
    test, transfer = data["test"]["X"], data["transfer"]["X"]
    pooled = np.sqrt((test.var(axis=0) + transfer.var(axis=0)) / 2) + 1e-9
    smd = (transfer.mean(axis=0) - test.mean(axis=0)) / pooled
    print("\nFeatures that move most from test to transfer (standardized mean difference):")
    for i in np.argsort(-np.abs(smd))[:8]:
        print(f"- {FEATURE_NAMES[i]}: {smd[i]:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
