#!/usr/bin/env python
"""Which of the generator's draws the genotype path fails to see, and what seeing it would be worth.

Every cached phantom is redrawn from its seed up to its main lesion's centre (the generator draws
the subject, the pose, then the centre, first, from ``default_rng(seed)``), which gives its hidden
draws: pattern, calcified or not, T2-FLAIR mismatch, edema margin, the centre's brain region and
grey-matter fraction. The regressions below are class-balanced L2 logistic regressions on the
path's features (strength by 5-fold cross-validation), fitted on the development phantoms and
scored on the held-out ``test`` phantoms: the shipped path's inputs, not its exact fit.

* the features alone, the draws alone (what these phantoms allow), and both;
* recovery: how well the features tell each draw (a continuous draw split at its development
  median);
* worth: the AUC with that draw appended, as if it were a perfectly measured feature, minus the
  AUC without it.

A draw with high worth and low recovery is where a better feature would pay. A task with a parent
(1p/19q, given IDH-mutant) is also scored within the parent class, where only its own signs decide.

    python scripts/genotype_latent_recovery.py --model gliomamtl_adult --cache runs/genotype_fit/cache_adult

Prints markdown tables; it measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEV = ("train", "val")


def redraw(seed: int, cohort: str) -> dict[str, float]:
    """The hidden draws of the phantom of ``seed`` (as ``synthesize(seed, cohort)`` on the full grid draws them)."""
    from GliomaMTLLib.synth.anatomy import REGIONS, load_anatomy
    from GliomaMTLLib.synth.generator import replay_main_lesion

    subject, _, centre = replay_main_lesion(seed, cohort)
    anatomy = load_anatomy(1)  # cached: the replay loaded it
    nearest = int(np.linalg.norm(anatomy.cand_ras - centre, axis=1).argmin())
    flags = int(anatomy.cand_region[nearest])
    plan = subject.lesions[0]
    p = plan.params
    row = {f"pattern_{q}": float(plan.pattern == q) for q in ("ring", "patchy", "none", "cyst", "solid")}
    row.update({f"region_{r}": float(bool(flags & bit)) for r, bit in REGIONS.items()})
    row.update(calcified=float(p.get("calcifications", 0) > 0), mismatch=float(bool(p.get("mismatch", False))),
               edema_margin=float(p.get("edema_margin", 0.0)), margin_blur=float(p.get("margin_blur", 0.0)),
               radius=float(plan.radius), multifocal=float(len(subject.lesions) > 1),
               centre_grey_matter=float(anatomy.cand_gm[nearest]), centre_depth=float(anatomy.cand_depth[nearest]),
               centre_lateral=float(abs(centre[0])), centre_anterior=float(centre[1]), centre_superior=float(centre[2]))
    return row


def logistic_auc(x_dev: np.ndarray, y_dev: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out AUC (macro one-vs-rest for more than 2 classes) of a class-balanced L2 logistic
    regression whose strength is chosen by 5-fold cross-validation on the development rows;
    NaN when a class is missing."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    from GliomaMTLLib.metrics.classification import headline_auc

    classes = np.unique(y_dev)
    if len(classes) < 2 or len(np.unique(y_test)) < 2 or not set(np.unique(y_test)) <= set(classes):
        return float("nan")
    scaler = StandardScaler().fit(x_dev)
    model = LogisticRegressionCV(Cs=[0.01, 0.03, 0.1, 0.3, 1.0], class_weight="balanced", max_iter=5000, cv=5,
                                 scoring="roc_auc" if len(classes) == 2 else "roc_auc_ovr").fit(scaler.transform(x_dev), y_dev)
    probs = model.predict_proba(scaler.transform(x_test))
    return headline_auc(np.searchsorted(classes, y_test), probs)


def populations(tasks: dict[str, tuple[str, ...]]) -> list[tuple[str, str, tuple[str, str] | None]]:
    """(column label, task, parent condition or None): every task on all phantoms, and a task with
    a parent (1p/19q given IDH-mutant) also within the parent class, where its own signs decide."""
    from GliomaMTLLib.genotype.fit import HIERARCHY

    out: list[tuple[str, str, tuple[str, str] | None]] = [(task, task, None) for task in tasks]
    for task in tasks:
        parent = HIERARCHY.get(task)
        if parent and parent[0] in tasks:
            out.append((f"{task} among {parent[0]} {parent[1]}", task, parent))
    return out


def main() -> int:
    from GliomaMTLLib.train.genotype_fit import add_counts_option

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="bundle the cache was collected with (its path's features)")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--cohort", choices=("adult", "pediatric"), default="adult")
    parser.add_argument("--split", default="test", help="held-out split to score (default test)")
    add_counts_option(parser)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-learn 1.10 renames, not ours
    warnings.filterwarnings("ignore", category=UserWarning)  # rare draws: folds with one class

    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.train.genotype_fit import (cohort_tasks, load_features, path_features,
                                                 restrict_features)

    bundle = load_bundle(args.model)
    tasks = dict(bundle.tasks) or cohort_tasks(args.cohort)
    names = path_features(args.model)
    data = restrict_features(load_features(args.cache, bundle.sequences, tasks, args.cohort, args.counts), names)
    if args.split not in data:
        parser.error(f"{args.cache} has no {args.split!r} phantoms")

    def part(splits: tuple[str, ...]) -> dict[str, Any]:
        metas = [m for s in splits for m in data[s]["meta"]]
        rows = [redraw(int(m["seed"]), args.cohort) for m in metas]
        return {"X": np.concatenate([data[s]["X"] for s in splits]),
                "y": {t: np.concatenate([data[s]["y"][t] for s in splits]) for t in tasks},
                "draws": {k: np.array([r[k] for r in rows]) for k in rows[0]}}

    dev, test = part(DEV), part((args.split,))
    keys = [k for k, v in dev["draws"].items() if np.ptp(v) > 0]  # a draw constant in the cohort carries nothing
    columns = populations(tasks)

    def rows_of(d: dict[str, Any], task: str, parent: tuple[str, str] | None) -> np.ndarray:
        keep = d["y"][task] >= 0
        if parent is not None:
            keep &= d["y"][parent[0]] == tasks[parent[0]].index(parent[1])
        return keep

    def score(task: str, parent: tuple[str, str] | None, extra: Sequence[str] = (), features: bool = True) -> float:
        a, b = rows_of(dev, task, parent), rows_of(test, task, parent)
        xd = np.column_stack([dev["draws"][k][a] for k in extra]) if extra else np.zeros((int(a.sum()), 0))
        xt = np.column_stack([test["draws"][k][b] for k in extra]) if extra else np.zeros((int(b.sum()), 0))
        if features:
            xd, xt = np.c_[dev["X"][a], xd], np.c_[test["X"][b], xt]
        return logistic_auc(xd, dev["y"][task][a], xt, test["y"][task][b])

    base = {label: score(task, parent) for label, task, parent in columns}
    print(f"{bundle.name} {bundle.version}: {len(names)} path features, {len(dev['X'])} development / "
          f"{len(test['X'])} {args.split} phantoms (AUC; macro one-vs-rest for more than two classes)")
    print()
    print("| input | " + " | ".join(label for label, _, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    print("| the path's features | " + " | ".join(f"{base[c[0]]:.3f}" for c in columns) + " |")
    print("| the generator's draws alone | " + " | ".join(f"{score(t, p, keys, features=False):.3f}" for _, t, p in columns) + " |")
    print("| features + every draw | " + " | ".join(f"{score(t, p, keys):.3f}" for _, t, p in columns) + " |")
    print()
    print("| draw | share (dev) | recovered by the features | " + " | ".join(f"{label}: + draw" for label, _, _ in columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for key in keys:
        d_dev, d_test = dev["draws"][key], test["draws"][key]
        binary = set(np.unique(d_dev)) <= {0.0, 1.0}
        cut = 0.5 if binary else float(np.median(d_dev))
        recovered = logistic_auc(dev["X"], d_dev > cut, test["X"], d_test > cut)
        worth = [f"{score(task, parent, [key]) - base[label]:+.3f}" for label, task, parent in columns]
        share = f"{np.mean(d_dev > cut):.2f}" + ("" if binary else f" (> {cut:.2f})")
        print(f"| {key} | {share} | {recovered:.3f} | " + " | ".join(worth) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
