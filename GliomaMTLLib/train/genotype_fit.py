"""Fit, calibrate and measure the radiological-feature genotype path of a shipped bundle.

    python -m GliomaMTLLib.train.genotype_fit --model gliomamtl_adult --cohort adult \\
        --cache runs/genotype_fit/cache_adult --counts train=120,val=100,test=100,transfer=30 \\
        --out runs/genotype_fit/adult [--collect [--workers 2]] [--update-bundle] [--version 0.3.0] \\
        [--check-against Resources/Models/gliomamtl_adult]

Stages (each reads what the one before left on disk, so a killed run resumes):

1. ``--collect``: generate the phantoms of ``--counts`` (seeds in
   :data:`GliomaMTLLib.genotype.collect.SPLIT_SEEDS`; ``transfer`` renders with a contrast spread
   training never used, ``texture_shift`` every tissue with white matter's texture), run the
   bundle through :class:`~GliomaMTLLib.inference.Predictor`, keep its genotype window, soft
   segmentation and location maps (one ``.npz`` per case).
2. Features of every cached case (the model's own segmentation, never the reference labels).
3. Per task, on the development pool (``--development``, default ``train`` + ``val``; the optional
   ``train_shift`` split is rendered with contrast spread 1.4): standardization; class-balanced L2
   logistic regression, its strength chosen by 5-fold cross-validated AUC; Platt calibration
   (multinomial: temperature with class offsets) on 5-fold out-of-fold logits (refused for near-constant or unvalidated logits); the Mahalanobis
   OOD threshold at <= 5% out-of-fold false alarms. Then, on the held-out splits (``test``,
   ``transfer``, ``texture_shift``; never seen before): AUC with a bootstrap CI, accuracy,
   sensitivity, specificity at 0.5 and at the development Youden threshold, ECE, abstained
   fraction; "not learned" when the test AUC interval includes 0.5. Survival: Cox on the features, C-index overall and per WHO subtype.
4. Outputs in ``--out``: ``results.json``, ``card_section.md``, ``reliability.png``, ``roc.png``,
   ``km.png``, ``genotype_path.json``. ``--update-bundle`` then writes the path, status, abstain
   band and metrics into the bundle's ``model.json`` (one load-modify-write), sets its version,
   appends the card section and copies the PNGs beside the card.

Progress: JSON lines on stdout with ``--progress-json`` (``progress`` events, then ``done``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_BAND = (0.35, 0.65)
#: Phantom splits of a collection (:data:`GliomaMTLLib.genotype.collect.SPLIT_SEEDS`).
SPLITS = ("train", "train_shift", "val", "test", "transfer", "texture_shift")
#: Splits only ever measured: ``test``; ``transfer`` (contrast spread 1.8) and ``texture_shift``
#: (every tissue with white matter's texture), rendering settings training never used.
HELD_OUT = ("test", "transfer", "texture_shift")
#: Splits the path may be fitted on; never a held-out one.
DEVELOPMENT = ("train", "val", "train_shift")
#: What the shipped paths are fitted on: adding ``train_shift`` changed no AUC beyond noise
#: (training/results/genotype_shift.md).
DEFAULT_DEVELOPMENT = ("train", "val")


def parse_counts(text: str) -> dict[str, int]:
    """``"train=320,val=100"`` -> ``{"train": 320, "val": 100}``; exits naming a bad part."""
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in SPLITS or not value.isdigit():
            raise SystemExit(f"--counts: expected split=N for {', '.join(SPLITS)}; got {part!r}")
        out[key] = int(value)
    return out


def add_counts_option(parser: Any) -> None:
    """``--counts`` for a measurement script: parsed by :func:`parse_counts`, None (every cached
    phantom) when not given."""
    parser.add_argument("--counts", type=parse_counts, default=None,
                        help="use only the first N cached phantoms of each split named, as genotype_fit --counts "
                             "(default: every cached phantom)")


def in_counts(path: Path, counts: dict[str, int] | None) -> bool:
    """Whether the cached case ``<split>-<index>.npz`` is among the first ``counts[split]`` of its
    split (every case when ``counts`` is None)."""
    if counts is None:
        return True
    split, _, index = path.stem.rpartition("-")
    return split in counts and index.isdigit() and int(index) < counts[split]


def load_features(cache: Path, sequences: tuple[str, ...], tasks: dict[str, tuple[str, ...]],
                  cohort: str | None = None, counts: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """Split -> {"ids", "X" (N, F), "y" {task: (N,)}, "cnn" {task: (N, K)}, "age" (N,), "meta" [...]} of
    the cached cases (age NaN where unknown); with ``counts``, only the first ``counts[split]`` cases
    of the splits it names, so a cache grown for another run does not change this one."""
    from GliomaMTLLib.genotype.collect import iter_cache
    from GliomaMTLLib.genotype.features import features_numpy

    out: dict[str, dict[str, Any]] = {}
    for path in iter_cache(cache):
        if not in_counts(path, counts):
            continue
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            if "probs" not in z.files:
                meta["found"] = False
            split = out.setdefault(meta["split"], {"ids": [], "X": [], "y": {t: [] for t in tasks}, "cnn": {t: [] for t in tasks},
                                                   "meta": []})
            if not meta.get("found", False):
                split.setdefault("not_found", []).append(meta["case_id"])
                continue
            arrays = {k: z[k] for k in ("probs", "image", "depth", "position", "spacing_zyx")}
            split["X"].append(features_numpy(arrays, sequences))
            for t, classes in tasks.items():
                label = meta.get(t)
                split["y"][t].append(classes.index(label) if label in classes else -1)
                key = f"cnn_logits_{t}"
                if key in z.files:  # a segmentation-only network has no heads (no CNN comparison)
                    split["cnn"][t].append(np.asarray(z[key], float))
        split["ids"].append(meta["case_id"])
        split["meta"].append(meta)
        split.setdefault("age", []).append(_phantom_age(meta, cohort))
    for split in out.values():
        split["X"] = np.asarray(split["X"], float)
        split["age"] = np.asarray(split.get("age", []), float)
        split["y"] = {t: np.asarray(v, int) for t, v in split["y"].items()}
        # CNN logits only where every case has them
        split["cnn"] = {t: np.asarray(v, float) for t, v in split["cnn"].items() if v and len(v) == len(split["X"])}
    return out


def restrict_features(data: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``data`` (of :func:`load_features`) with ``X`` reduced to the features ``names``, in that order.

    Raises:
        ValueError: for a name that is not a radiological feature.
    """
    from GliomaMTLLib.genotype.features import feature_indices

    cols = feature_indices(names)
    return {s: {**d, "X": np.asarray(d["X"])[:, cols] if len(d["X"]) else d["X"]} for s, d in data.items()}


def path_features(bundle: str | Path) -> list[str]:
    """The feature names of a bundle's radiological-feature path (a bundle folder or a shipped name).

    Raises:
        ValueError: when the bundle has no such path or names an unknown feature.
    """
    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.genotype.features import feature_indices

    folder = load_bundle(bundle).folder
    for spec in json.loads((folder / "model.json").read_text()).get("genotype_paths") or []:
        if spec.get("features"):
            feature_indices(spec["features"], str(folder / "model.json"))
            return list(spec["features"])
    raise ValueError(f"{folder / 'model.json'} has no radiological-feature genotype path to take the features of")


def with_features(names: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``names`` (in their order) followed by ``extra`` (in :data:`~GliomaMTLLib.genotype.features.FEATURE_NAMES` order).

    Raises:
        ValueError: for an unknown name in either list, or an ``extra`` name already in ``names``.
    """
    from GliomaMTLLib.genotype.features import FEATURE_NAMES, feature_indices

    feature_indices(list(names) + list(extra), "--add-features")
    repeated = [n for n in extra if n in names]
    if repeated:
        raise ValueError(f"{repeated} already in the path")
    return list(names) + [n for n in FEATURE_NAMES if n in extra]


def _phantom_age(meta: dict[str, Any], cohort: str | None) -> float:
    """The phantom's patient age: stored by the collection, else drawn again from its seed (the
    generator draws the subject first from ``default_rng(seed)``); NaN when neither is possible."""
    if meta.get("age") is not None:
        return float(meta["age"])
    if cohort is None or meta.get("seed") is None:
        return float("nan")
    from GliomaMTLLib.synth.genotype import sample_subject

    return float(sample_subject(np.random.default_rng(int(meta["seed"])), cohort).age)


def cohort_tasks(cohort: str) -> dict[str, tuple[str, ...]]:
    """The genotype tasks of a cohort's shipped recipe (``gliomamtl_<cohort>``): what a path fitted
    to a segmentation-only network (a bundle without tasks) predicts."""
    from GliomaMTLLib.train.config import load_recipe

    return {t: tuple(c) for t, c in load_recipe(f"gliomamtl_{cohort}")["tasks"].items()}


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def youden_threshold(y: np.ndarray, p1: np.ndarray) -> float:
    """Threshold on P(class 1) maximizing sensitivity + specificity (ties: the one nearest 0.5)."""
    from GliomaMTLLib.metrics.classification import roc_curve_points

    fpr, tpr, thr = roc_curve_points(np.asarray(y), np.asarray(p1, float))
    j = tpr - fpr
    finite = np.isfinite(thr) & np.isfinite(j)
    if not finite.any():
        return 0.5
    best = np.flatnonzero(finite & (j >= np.nanmax(j[finite]) - 1e-12))
    return float(thr[best[np.argmin(np.abs(thr[best] - 0.5))]])


def _task_metrics(y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...], band: tuple[float, float],
                  threshold: float | None = None) -> dict[str, Any]:
    from GliomaMTLLib.metrics.calibration import chance_ece, expected_calibration_error
    from GliomaMTLLib.metrics.classification import classification_metrics

    m = classification_metrics(y, probs, class_names=classes, threshold=0.5, n_boot=1000, seed=0)
    m["ece"] = expected_calibration_error(probs, y)
    keep = y >= 0
    if keep.any():  # what a perfectly calibrated path with these probabilities would measure here
        chance = chance_ece(probs[keep], draws=1000)
        m["ece_chance_median"], m["ece_chance_p95"] = float(np.median(chance)), float(np.percentile(chance, 95))
    if probs.shape[1] == 2 and threshold is not None:
        at = classification_metrics(y, probs, class_names=classes, threshold=threshold, n_boot=0)
        m.update(chosen_threshold=float(threshold), accuracy_at_chosen=at["accuracy"],
                 sensitivity_at_chosen=at["sensitivity"], specificity_at_chosen=at["specificity"])
    if probs.shape[1] == 2:
        p1 = probs[keep, 1]
        decided = (p1 < band[0]) | (p1 > band[1])
        m["abstained_fraction"] = float(1 - decided.mean()) if len(p1) else float("nan")
        m["accuracy_when_decided"] = float(((p1[decided] >= 0.5) == (y[keep][decided] == 1)).mean()) if decided.any() else float("nan")
    return m


def _pool(data: dict[str, dict[str, Any]], splits: tuple[str, ...]) -> dict[str, Any]:
    parts = [data[s] for s in splits if s in data and len(data[s]["X"])]
    return {"X": np.concatenate([p["X"] for p in parts]),
            "y": {t: np.concatenate([p["y"][t] for p in parts]) for t in parts[0]["y"]},
            "ids": [i for p in parts for i in p["ids"]]}


def fit_and_measure(data: dict[str, dict[str, Any]], tasks: dict[str, tuple[str, ...]], *, band: tuple[float, float],
                    temperatures: dict[str, float], log: Any = print,
                    feature_names: Sequence[str] | None = None,
                    development: Sequence[str] = DEFAULT_DEVELOPMENT) -> dict[str, Any]:
    """Fit the path on the development phantoms (the ``development`` splits present in ``data``,
    default ``train`` + ``val``), measure on the held-out splits (:data:`HELD_OUT`) present.

    The regression strength is chosen by 5-fold cross-validation on the development pool; the
    calibration and the OOD threshold are fitted on out-of-fold logits / distances of the same pool
    (every development case is a validation case once); the final regression uses the whole pool.
    Held-out splits are never used before measuring. ``feature_names`` names the columns
    of ``X`` (default :data:`~GliomaMTLLib.genotype.features.FEATURE_NAMES`; other inputs, e.g. the
    CNN heads' logits, serve comparisons, not bundles). When every case has an ``"age"`` (years), a
    second set of regressions on the features plus the standardized age is fitted and measured the
    same way (``spec["age"]``; metrics under ``result["age_metrics"]``).

    Returns ``{"spec": genotype_path dict, "status", "metrics", "cnn_metrics", "arrays", "standardize",
    "age_metrics", "age_arrays"}``.
    """
    from GliomaMTLLib.genotype.features import FEATURE_NAMES
    from GliomaMTLLib.genotype.fit import fit_lesion_limit, fit_ood_cv, fit_standardization
    from GliomaMTLLib.genotype.model import KIND

    if set(HELD_OUT) & set(development):
        raise ValueError(f"development splits {list(development)} include a held-out split")
    development = tuple(s for s in development if s in data and len(data[s]["X"]))
    dev = _pool(data, development)
    # features constant on the development phantoms carry nothing (e.g. the core features of a
    # whole-tumor model): the path leaves them out
    cols = np.flatnonzero(dev["X"].std(axis=0) > 1e-8)
    names = [list(feature_names or FEATURE_NAMES)[i] for i in cols]
    if feature_names is not None and len(cols) < len(feature_names):
        left = [n for n in feature_names if n not in names]
        log(f"warning: features {left} are constant on the development phantoms and are left out")
    mean, scale = fit_standardization(dev["X"][:, cols])

    def std(x: np.ndarray) -> np.ndarray:
        return (np.asarray(x)[:, cols] - mean) / scale

    z_dev = std(dev["X"])
    held_out = [s for s in HELD_OUT if s in data and len(data[s]["X"])]
    spec: dict[str, Any] = {"kind": KIND, "features": names, "mean": mean.tolist(), "scale": scale.tolist(), "tasks": {}}
    fitted = _fit_tasks(tasks, z_dev, dev["y"], {s: std(data[s]["X"]) for s in held_out},
                        {s: data[s]["y"] for s in held_out}, band, log, "", names)
    spec["tasks"] = fitted["spec"]
    cnn_metrics: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    for task, classes in tasks.items():
        for split in held_out:
            if task in data[split]["cnn"]:
                cnn = _softmax(data[split]["cnn"][task] / temperatures.get(task, 1.0))
                cnn_metrics[task][split] = _task_metrics(data[split]["y"][task], cnn, classes, band)
        if "test" in cnn_metrics[task]:
            log(f"{task}: CNN head test AUC {cnn_metrics[task]['test']['auc']:.3f}")
    ood = fit_ood_cv(z_dev)
    spec["ood"] = ood.to_dict()
    for split in held_out:
        spec["ood"][f"{split}_false_alarm_rate"] = float(np.mean(ood.distance(std(data[split]["X"])) > ood.threshold))
    counts = {s: [m.get("core_lesions") for m in data[s]["meta"]] for s in data}
    dev_counts = [c for s in development for c in counts.get(s, [])]
    if dev_counts and all(isinstance(c, int) for c in dev_counts):  # caches collected before counting lack them
        spec["lesions"] = fit_lesion_limit(dev_counts)
        for split in held_out:
            if counts.get(split) and all(isinstance(c, int) for c in counts[split]):
                spec["lesions"][f"{split}_false_alarm_rate"] = float(np.mean(np.asarray(counts[split]) > spec["lesions"]["max_core_lesions"]))
    age_metrics: dict[str, Any] = {}
    age_arrays: dict[str, Any] = {}
    if all("age" in data[s] and np.isfinite(data[s]["age"]).all() for s in [*development, *held_out] if s in data):
        ages = np.concatenate([data[s]["age"] for s in development])
        a_mean, a_scale = float(ages.mean()), float(ages.std() or 1.0)

        def with_age(z: np.ndarray, age: np.ndarray) -> np.ndarray:
            return np.concatenate([z, ((np.asarray(age, float) - a_mean) / a_scale)[:, None]], axis=1)

        aged = _fit_tasks(tasks, with_age(z_dev, ages), dev["y"],
                          {s: with_age(std(data[s]["X"]), data[s]["age"]) for s in held_out},
                          {s: data[s]["y"] for s in held_out}, band, log, " with age", [*names, "age"])
        spec["age"] = {"mean": a_mean, "scale": a_scale, "min": float(ages.min()), "max": float(ages.max()),
                       "tasks": aged["spec"], "status": aged["status"]}
        age_metrics, age_arrays = aged["metrics"], aged["arrays"]
    spec["fit"] = fitted["info"]
    spec["n_development"] = int(len(dev["ids"]))
    spec["development_splits"] = list(development)
    return {"spec": spec, "status": fitted["status"], "metrics": fitted["metrics"], "cnn_metrics": cnn_metrics,
            "arrays": fitted["arrays"], "standardize": std, "age_metrics": age_metrics, "age_arrays": age_arrays}


def _fit_tasks(tasks: dict[str, tuple[str, ...]], z_dev: np.ndarray, y_dev: dict[str, np.ndarray],
               z_split: dict[str, np.ndarray], y_split: dict[str, dict[str, np.ndarray]],
               band: tuple[float, float], log: Any, label: str, names: Sequence[str]) -> dict[str, Any]:
    """One regression per task on the standardized inputs ``z_dev`` (parents first; a conditional
    task on its parent class's rows), calibrated on out-of-fold logits, measured on the
    held-out splits. Returns ``{"spec": task -> regression dict, "info", "status", "metrics", "arrays"}``."""
    from GliomaMTLLib.genotype.fit import HIERARCHY, fit_calibration, fit_task, out_of_fold_logits, task_status
    from GliomaMTLLib.genotype.model import TaskRegression

    spec_tasks: dict[str, Any] = {}
    fit_info, status, metrics, arrays = {}, {}, {}, {}
    dev_probs: dict[str, np.ndarray] = {}  # task -> out-of-fold calibrated development probabilities
    split_logits: dict[str, dict[str, np.ndarray]] = {}  # task -> split -> calibrated logits
    order = sorted(tasks, key=lambda t: t in HIERARCHY and HIERARCHY[t][0] in tasks)  # parents first
    for task in order:
        classes = tasks[task]
        given = HIERARCHY.get(task) if HIERARCHY.get(task, ("",))[0] in tasks else None
        y = y_dev[task]
        fit_rows = np.ones(len(y), bool)
        if given is not None:
            # the conditional regression sees only the parent class (e.g. IDH-mutant) cases
            fit_rows = y_dev[given[0]] == tasks[given[0]].index(given[1])
        reg, info = fit_task(z_dev[fit_rows], y[fit_rows], classes)
        oof_rows = out_of_fold_logits(z_dev[fit_rows], y[fit_rows], info["C"])
        cal = fit_calibration(oof_rows, y[fit_rows])
        reg.calibration = {k: cal[k] for k in ("method", "a", "b", "temperature", "bias") if k in cal}
        reg.given = given
        spec_tasks[task] = reg.to_dict()
        stored = TaskRegression.from_dict(spec_tasks[task], z_dev.shape[1], task)
        # development logits: out-of-fold for the rows the regression was fitted on, the final
        # regression for the others (it never saw them)
        oof = _calibrated(stored, z_dev)
        oof[fit_rows] = _cal(stored, oof_rows)
        split_logits[task] = {s: _calibrated(stored, z) for s, z in z_split.items()}
        if given is not None:
            p_index = tasks[given[0]].index(given[1])
            parent_dev = np.log(np.clip(dev_probs[given[0]], 1e-12, 1.0))
            oof = _conditional(parent_dev, p_index, oof)
            split_logits[task] = {s: _conditional(split_logits[given[0]][s], p_index, v) for s, v in split_logits[task].items()}
        fit_info[task] = {**info, "calibration": cal, "given": list(given) if given else None,
                          "coefficients": dict(zip(names, reg.coef[0].round(4).tolist()))
                          if reg.coef.shape[0] == 1 else None}
        metrics[task], arrays[task] = {}, {}
        known = y >= 0
        oof_probs = _softmax(np.nan_to_num(oof))
        dev_probs[task] = oof_probs
        chosen = youden_threshold(y[known], oof_probs[known, 1]) if len(classes) == 2 else None
        metrics[task]["development (out-of-fold)"] = _task_metrics(np.where(known, y, -1), oof_probs, classes, band, chosen)
        for split, logits in split_logits[task].items():
            probs = _softmax(logits)
            metrics[task][split] = _task_metrics(y_split[split][task], probs, classes, band, chosen)
            arrays[task][split] = (y_split[split][task], probs)
        status[task] = task_status(metrics[task]["test"])
        m = metrics[task]["test"]
        log(f"{task}{label}{f' (given {given[0]} = {given[1]})' if given else ''}: test AUC {m['auc']:.3f} "
            f"[{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}], ECE {m['ece']:.3f}, "
            f"out-of-fold AUC {metrics[task]['development (out-of-fold)']['auc']:.3f}; calibration: {cal['why']}")
    return {"spec": spec_tasks, "info": fit_info, "status": status,
            "metrics": {t: metrics[t] for t in tasks}, "arrays": arrays}


def _conditional(parent_logits: np.ndarray, index: int, logits: np.ndarray) -> np.ndarray:
    """:func:`GliomaMTLLib.genotype.model.conditional_logits` on numpy arrays (log-probabilities are logits too)."""
    import torch

    from GliomaMTLLib.genotype.model import conditional_logits

    with torch.no_grad():
        return conditional_logits(torch.as_tensor(parent_logits, dtype=torch.float64), index,
                                  torch.as_tensor(np.nan_to_num(logits), dtype=torch.float64)).numpy()


def _cal(reg: Any, logits: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return reg.calibrate(torch.as_tensor(logits, dtype=torch.float64)).numpy()


def _raw(reg: Any, z: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return reg.raw_logits(torch.as_tensor(z, dtype=torch.float64)).numpy()


def _calibrated(reg: Any, z: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return reg.calibrate(reg.raw_logits(torch.as_tensor(z, dtype=torch.float64))).numpy()


def survival_analysis(data: dict[str, dict[str, Any]], result: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """Cox on the standardized features (train -> test), C-index by true WHO subtype; KM PNG by
    the predicted subtype (calls at 0.5 on the calibrated probabilities)."""
    from GliomaMTLLib.metrics.survival import plot_kaplan_meier, survival_by_subtype, who_subtype

    if not {"idh", "codel_1p19q"} <= set(result["arrays"]):
        return None
    std = result["standardize"]

    def surv(split: str) -> tuple[np.ndarray, np.ndarray]:
        m = data[split]["meta"]
        found = [x for x in m if x.get("found")]
        return np.array([x["survival_days"] for x in found], float), np.array([x["event"] for x in found], int)

    t_tr, e_tr = (np.concatenate(v) for v in zip(surv("train"), surv("val")))
    t_te, e_te = surv("test")
    true_sub = [who_subtype(x.get("idh"), x.get("codel_1p19q")) for x in data["test"]["meta"] if x.get("found")]
    x_dev = np.concatenate([data["train"]["X"], data["val"]["X"]])
    table = survival_by_subtype(std(x_dev), t_tr, e_tr, std(data["test"]["X"]), t_te, e_te, true_sub)
    p_idh = result["arrays"]["idh"]["test"][1][:, 1]
    p_codel = result["arrays"]["codel_1p19q"]["test"][1][:, 1]
    predicted = [who_subtype("mutant" if a >= 0.5 else "wildtype", "codeleted" if b >= 0.5 else "intact")
                 for a, b in zip(p_idh, p_codel)]
    plot_kaplan_meier(t_te, e_te, predicted, str(out / "km.png"), title="Test phantoms: Kaplan-Meier by predicted subtype")
    table["km_png"] = "km.png"
    return table


def card_section(model: str, version: str, result: dict[str, Any], data: dict[str, Any], command: str,
                 band: tuple[float, float], survival: dict[str, Any] | None) -> str:
    """Markdown section for the model card."""
    whole_tumor = "ncr_share_of_core" not in result["spec"]["features"]
    described = ("whole-tumor volume and shape, FLAIR inside the tumor (cyst-like share, heterogeneity), margin "
                 "sharpness, location in the brain including the posterior fossa; the model predicts the whole tumor "
                 "only, so its core features are left out" if whole_tumor else
                 "compartment volumes and shares, rim thickness and completeness, T2-FLAIR mismatch, calcification-like "
                 "foci, edema/core ratio, margin sharpness, location in the brain")
    lines = [f"## Genotype: radiological-feature path (v{version})", "",
             "Genotype is predicted from named radiological features of the model's own predicted soft "
             f"segmentation and the sequences in the main crop ({described}), standardized, into an L2 logistic "
             "regression per task (multinomial for more than two classes), calibrated (Platt; for "
             "multinomial, a temperature with class offsets) on "
             "out-of-fold logits. "
             + ("1p/19q is conditional on IDH (WHO CNS5 2021 defines codeletion within IDH-mutant tumours): its "
                "regression is fitted on IDH-mutant phantoms and the probability shown is P(IDH-mutant) x "
                "P(codeleted | IDH-mutant), so it never exceeds the IDH-mutant probability. "
                if result["spec"]["tasks"].get("codel_1p19q", {}).get("given") else "")
             + "The path is fitted to this bundle's own CNN weights (their predicted segmentations) and stored in "
             "`model.json` (`genotype_paths`, `genotype_status`, `abstain_band`); the CNN heads' logits are not shown.", "",
             f"Phantoms: {len(data['train']['ids']) + len(data['val']['ids'])} development (fit; regression strength, "
             "calibration and the OOD threshold from 5-fold out-of-fold logits and distances), "
             f"{len(data['test']['ids'])} test" + (f", {len(data['transfer']['ids'])} transfer (contrast spread 1.8, "
                                                   "a rendering setting training never used)" if "transfer" in data else "")
             + (f", {len(data['texture_shift']['ids'])} texture shift (every tissue rendered with white matter's texture: no "
                "class smoother or rougher than another, as training never saw)" if "texture_shift" in data else "")
             + "; the fit used the model's predicted segmentation, never the reference labels.", "",
             "| task | split | n | AUC [95% CI] | accuracy | sensitivity | specificity | at threshold t: acc / sens / spec | ECE (chance) | abstained | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, per_split in result["metrics"].items():
        for split in ("development (out-of-fold)", *HELD_OUT):
            m = per_split.get(split)
            if not m:
                continue
            st = result["status"][task]
            lines.append(f"| {task} | {split} | {m['n']} | {m['auc']:.3f} [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}] | "
                         f"{m['accuracy']:.3f} | {m.get('sensitivity', float('nan')):.3f} | {m.get('specificity', float('nan')):.3f} | "
                         + (f"t={m['chosen_threshold']:.2f}: {m['accuracy_at_chosen']:.3f} / {m['sensitivity_at_chosen']:.3f} / "
                            f"{m['specificity_at_chosen']:.3f} | " if "chosen_threshold" in m else "| ")
                         + f"{_ece_cell(m)} | {m.get('abstained_fraction', float('nan')):.2f} | "
                         f"{('learned' if st['available'] else 'not learned') if split == 'test' else ''} |")
    if result.get("age_metrics"):
        age = result["spec"]["age"]
        lines += ["", f"**With the patient's age** (optional input: `gliomamtl predict --age YEARS`, the panel's age field). "
                  "A second regression per task on the same features plus the standardized age, fitted, calibrated and "
                  f"measured the same way on the same phantoms; used when an age within the development phantoms' range "
                  f"({age['min']:.0f}-{age['max']:.0f} years) is given, else the image-only regression above serves. "
                  "The phantoms draw age from each subtype's published distribution, as real cohorts show it.", "",
                  "| task | split | n | AUC [95% CI] | accuracy | sensitivity | specificity | ECE (chance) | abstained | status |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for task, per_split in result["age_metrics"].items():
            for split in ("development (out-of-fold)", *HELD_OUT):
                m = per_split.get(split)
                if not m:
                    continue
                st = age["status"][task]
                lines.append(f"| {task} + age | {split} | {m['n']} | {m['auc']:.3f} [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}] | "
                             f"{m['accuracy']:.3f} | {m.get('sensitivity', float('nan')):.3f} | {m.get('specificity', float('nan')):.3f} | "
                             f"{_ece_cell(m)} | {m.get('abstained_fraction', float('nan')):.2f} | "
                             f"{('learned' if st['available'] else 'not learned') if split == 'test' else ''} |")
    heads = [t for t in result["cnn_metrics"] if "test" in result["cnn_metrics"][t]]
    lines += ["", ("For comparison, the CNN heads of the same weights on the same test phantoms: " + ", ".join(
        f"{t} AUC {result['cnn_metrics'][t]['test']['auc']:.3f}" for t in heads) + ".") if heads else
        "The network has no genotype heads (segmentation only): the genotype comes from this path alone.", "",
        "ECE: top-label expected calibration error (15 bins); in brackets what a perfectly calibrated path giving "
        "the same probabilities would measure on as many phantoms by chance (median, 95th percentile of 1,000 label "
        "draws): an ECE inside that range cannot be told from perfect calibration. "
        "Accuracy, sensitivity and specificity are at P = 0.5 of the calibrated probability (the call); "
        "\"at threshold t\": at the threshold maximizing sensitivity + specificity on the out-of-fold development "
        "probabilities (chosen before the test phantoms were seen). "
        f"Inside the abstention band [{band[0]}, {band[1]}] the call is \"uncertain\" (fraction above).", ""]
    ood = result["spec"]["ood"]
    lines += [f"Out-of-distribution warning: Mahalanobis distance of the standardized features, threshold "
              f"{ood['threshold']:.2f} (out-of-fold development false alarms {ood['val_false_alarm_rate']:.3f}; "
              f"{_held_out_false_alarms(ood, '; ')}). Above it, predict warns \"input unlike the training data\" and withholds the genotype.", ""]
    lesions = result["spec"].get("lesions")
    if lesions:
        lines += [f"Separate tumor cores (each >= {lesions['min_core_ml']} ml on the main grid; several ring-enhancing "
                  f"lesions suggest metastases, which training never saw): more than {lesions['max_core_lesions']} also "
                  "withholds the genotype as \"input unlike the training data\" (development phantoms' counts "
                  f"{lesions['development_counts']}; false alarms: development {lesions['development_false_alarm_rate']:.3f}, "
                  f"{_held_out_false_alarms(lesions, ', ')}).", ""]
    for task, st in result["status"].items():
        if not st["available"]:
            lines.append(f"- **{task}: not available** ({st['reason']}).")
    if survival:
        rows = survival["by_subtype"]
        lines += ["", f"Survival (paper 002): {survival['model']}, fitted on the development phantoms; C-index on the test phantoms (by true WHO subtype): "
                  + ", ".join(f"{k} {v['c_index']:.3f} (n={int(v['n'])})" for k, v in rows.items())
                  + ". Kaplan-Meier by predicted subtype: [km.png](km.png)."]
    lines += ["", "Reliability diagram (test): [reliability.png](reliability.png); ROC: [roc.png](roc.png).", "",
              f"Command: `{command}`", ""]
    return "\n".join(lines)


def _ece_cell(m: dict[str, Any]) -> str:
    """"0.032 (0.042 [0.062])": the measured ECE and, when known, its chance median [95th percentile]."""
    if "ece_chance_median" not in m:
        return f"{m['ece']:.3f}"
    return f"{m['ece']:.3f} ({m['ece_chance_median']:.3f} [{m['ece_chance_p95']:.3f}])"


def _held_out_false_alarms(rates: dict[str, Any], sep: str) -> str:
    """"test R, transfer R[, texture shift R]" from ``{split}_false_alarm_rate`` entries (test and
    transfer always, NaN when absent; the texture shift only when measured)."""
    return sep.join(f"{split.replace('_', ' ')} {rates.get(f'{split}_false_alarm_rate', float('nan')):.3f}"
                    for split in HELD_OUT if split in ("test", "transfer") or f"{split}_false_alarm_rate" in rates)


def update_bundle(folder: Path, version: str, result: dict[str, Any], band: tuple[float, float], section: str,
                  out: Path) -> None:
    """One load-modify-write of ``folder/model.json`` (other engineers edit it too), then the card."""
    from GliomaMTLLib.io.atomic import write_text_atomic

    path = folder / "model.json"
    meta = json.loads(path.read_text())
    spec = {k: v for k, v in result["spec"].items() if k != "fit"}
    meta["version"] = version
    from GliomaMTLLib.genotype.model import KIND

    # a segmentation-only network's bundle gets its tasks from the path (keeping any it declares)
    meta["tasks"] = {**{t: list(r["classes"]) for t, r in spec["tasks"].items()}, **(meta.get("tasks") or {})}

    meta["genotype_paths"] = [p for p in meta.get("genotype_paths") or [] if p.get("kind") != KIND] + [spec]
    meta["abstain_band"] = list(band)
    meta["genotype_status"] = {**(meta.get("genotype_status") or {}), **result["status"]}
    meta.setdefault("metrics", {})["genotype_path"] = {
        task: {split: {k: v for k, v in m.items() if isinstance(v, (int, float, str))} for split, m in per.items()}
        for task, per in result["metrics"].items()}
    write_text_atomic(path, json.dumps(meta, indent=2) + "\n")
    card = folder / "card.md"
    text = card.read_text() if card.exists() else ""
    marker = "## Genotype: radiological-feature path"
    if marker in text:
        text = text[: text.index(marker)].rstrip() + "\n"
    lines = text.splitlines()
    if lines and lines[0].startswith("# Model card:"):
        lines[0] = f"# Model card: {meta['name']} {version}"
        heads = bool(((meta.get("stages") or {}).get("main") or {}).get("network", {}).get("tasks"))
        note = (f"> **{version}**: the genotype comes from the radiological-feature path (section \"Genotype: "
                "radiological-feature path\" at the end)"
                + (", which replaces the CNN heads' outputs described below." if heads else "."))
        # a note the card already has for this version (written by hand, e.g. what changed) stays
        if not any(ln.startswith(f"> **{version}**") for ln in lines[1:]):
            lines[1:1] = ["", note]
        text = "\n".join(lines) + "\n"
    write_text_atomic(card, text.rstrip() + "\n\n" + section)
    for png in ("reliability.png", "roc.png", "km.png"):
        if (out / png).exists():
            shutil.copyfile(out / png, folder / png)


def collect_parallel(model: str, cohort: str, counts: dict[str, int], cache: Path, workers: int, log: Any) -> None:
    """:func:`GliomaMTLLib.genotype.collect.collect` in ``workers`` processes (one torch thread each;
    each takes every ``workers``-th case, and a case already in ``cache`` is skipped)."""
    from GliomaMTLLib.genotype.collect import collect

    cache.mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        collect(model, cohort, counts, cache, log=log)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=collect, args=(model, cohort, counts, cache), kwargs={"worker": w, "n_workers": workers})
             for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [w for w, proc in enumerate(procs) if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"phantom collection worker(s) {failed} failed; rerun with --collect to resume")


def check_against(metrics: dict[str, Any], bundle: Path, tolerance: float) -> list[str]:
    """Differences beyond ``tolerance`` between these test metrics and a bundle's stored ones."""
    from GliomaMTLLib.bundle import load_bundle

    stored = (load_bundle(bundle).meta.get("metrics") or {}).get("genotype_path") or {}
    out = []
    for task, per_split in metrics.items():
        ref = (stored.get(task) or {}).get("test")
        if not ref:
            out.append(f"{task}: no stored genotype-path test metrics to compare with")
            continue
        for key in ("auc", "ece"):
            a, b = per_split["test"].get(key), ref.get(key)
            if a is not None and b is not None and abs(float(a) - float(b)) > tolerance:
                out.append(f"{task} test {key}: {float(a):.3f} here, {float(b):.3f} stored (tolerance {tolerance})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m GliomaMTLLib.train.genotype_fit", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gliomamtl_adult")
    parser.add_argument("--cohort", default="adult", choices=("adult", "pediatric"))
    parser.add_argument("--cache", type=Path, required=True, help="phantom cache folder (under runs/)")
    parser.add_argument("--counts", default="train=120,val=100,test=100,transfer=30",
                        help="phantoms per split (the first N of each): collected with --collect, and the only "
                             "cached ones the fit and the measurements use")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--collect", action="store_true", help="generate and predict missing phantoms first")
    parser.add_argument("--update-bundle", action="store_true")
    parser.add_argument("--version", default=None, help="bundle version to write with --update-bundle")
    parser.add_argument("--abstain-band", default=f"{DEFAULT_BAND[0]},{DEFAULT_BAND[1]}")
    parser.add_argument("--development", default=",".join(DEFAULT_DEVELOPMENT),
                        help=f"splits the path is fitted on, of {', '.join(DEVELOPMENT)} (default %(default)s)")
    parser.add_argument("--features-of", metavar="BUNDLE",
                        help="fit on the features of this bundle's genotype path only (default: every feature not "
                             "constant on the development phantoms); training/reproduce.sh passes the shipped bundle")
    parser.add_argument("--add-features", nargs="+", default=[], metavar="NAME",
                        help="with --features-of: also these features (a new feature joining the shipped path; "
                             "measure it first with scripts/genotype_feature_ablation.py --features-of)")
    parser.add_argument("--min-cases", type=int, default=10, help="fewest cases with a tumor per split")
    parser.add_argument("--workers", type=int, default=1, help="with --collect: processes generating and predicting phantoms")
    parser.add_argument("--check-against", metavar="BUNDLE", type=Path,
                        help="compare the test AUC and ECE of each task with this bundle's model.json (exit 1 beyond --tolerance)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed absolute difference (default 0.05)")
    parser.add_argument("--progress-json", action="store_true")
    args = parser.parse_args(argv)

    from GliomaMTLLib.progress import JsonLinesReporter

    reporter = JsonLinesReporter() if args.progress_json else None

    def log(msg: str) -> None:
        if reporter:
            reporter.log(msg)
        else:
            print(msg, flush=True)

    try:
        import torch

        torch.set_num_threads(1)
        from GliomaMTLLib.bundle import load_bundle

        band = tuple(float(v) for v in args.abstain_band.split(","))
        if len(band) != 2 or not 0 <= band[0] <= band[1] <= 1:
            raise SystemExit(f"--abstain-band: expected low,high within [0, 1], got {args.abstain_band!r}")
        bundle = load_bundle(args.model)
        counts = parse_counts(args.counts)
        feature_names = None
        if args.add_features and not args.features_of:
            raise SystemExit("--add-features needs --features-of (without it the path already uses every feature)")
        if args.features_of:  # checked before a long collection, not after it
            try:
                feature_names = with_features(path_features(args.features_of), args.add_features)
            except (OSError, ValueError) as err:
                added = f" --add-features {' '.join(args.add_features)}" if args.add_features else ""
                raise SystemExit(f"--features-of {args.features_of}{added}: {err}") from None
        if args.collect:
            collect_parallel(args.model, args.cohort, counts, args.cache, args.workers, log)
        if reporter:
            reporter.progress(0.1, "computing features")
        tasks = dict(bundle.tasks) or cohort_tasks(args.cohort)
        data = load_features(args.cache, bundle.sequences, tasks, args.cohort, counts)
        for split in ("train", "val", "test"):
            if split not in data or len(data[split]["X"]) < args.min_cases:
                raise SystemExit(f"{args.cache}: split {split!r} has fewer than {args.min_cases} cases with a tumor found; "
                                 "run with --collect")
        development = tuple(v for v in args.development.split(",") if v)
        unknown = [v for v in development if v not in DEVELOPMENT]
        if unknown:
            raise SystemExit(f"--development: {unknown} cannot be fitted on; choose from {', '.join(DEVELOPMENT)}")
        n_dev = sum(len(data[s]["X"]) for s in development if s in data)
        if n_dev < 100 or len(data["test"]["X"]) < 100:
            log(f"warning: {n_dev} development (calibration) / {len(data['test']['X'])} test cases (issue 12 asks >= 100)")
        temps = {t: float(v if not isinstance(v, dict) else v.get("temperature", 1.0))
                 for t, v in (bundle.meta.get("calibration") or {}).items()}
        if reporter:
            reporter.progress(0.5, "fitting")
        if feature_names is not None:
            data = restrict_features(data, feature_names)
        result = fit_and_measure(data, tasks, band=band, temperatures=temps, log=log, development=development,
                                 feature_names=feature_names)
        result["spec"]["sequences"] = list(bundle.sequences)  # the image channels its features read
        args.out.mkdir(parents=True, exist_ok=True)
        from GliomaMTLLib.metrics.calibration import plot_reliability
        from GliomaMTLLib.metrics.classification import plot_roc

        plot_reliability({**{t: a["test"] for t, a in result["arrays"].items()},
                          **{f"{t} + age": a["test"] for t, a in (result.get("age_arrays") or {}).items()}},
                         str(args.out / "reliability.png"))
        plot_roc({t: {"y_true": a["test"][0], "probs": a["test"][1], "class_names": tasks[t]}
                  for t, a in result["arrays"].items()}, args.out / "roc.png")
        survival = survival_analysis(data, result, args.out) if args.cohort == "adult" else None
        version = args.version or bundle.version
        command = "python -m GliomaMTLLib.train.genotype_fit " + " ".join(argv if argv is not None else sys.argv[1:])
        section = card_section(bundle.name, version, result, data, command, band, survival)
        from GliomaMTLLib.io.atomic import write_text_atomic

        summary = {"model": bundle.name, "version": version, "command": command, "status": result["status"],
                   "metrics": result["metrics"], "age_metrics": result.get("age_metrics"), "cnn_metrics": result["cnn_metrics"], "ood": result["spec"]["ood"] | {"precision": None},
                   "fit": result["spec"]["fit"], "survival": survival,
                   "n": {s: len(d["ids"]) for s, d in data.items()},
                   "not_found": {s: d.get("not_found", []) for s, d in data.items()}}
        write_text_atomic(args.out / "results.json", json.dumps(summary, indent=2, default=float) + "\n")
        write_text_atomic(args.out / "genotype_path.json", json.dumps(result["spec"], indent=1) + "\n")
        write_text_atomic(args.out / "card_section.md", section)
        if args.update_bundle:
            update_bundle(bundle.folder, version, result, band, section, args.out)
            log(f"updated {bundle.folder / 'model.json'} to version {version}")
        problems = check_against(result["metrics"], args.check_against, args.tolerance) if args.check_against else []
        for line in problems:
            log(f"differs from {args.check_against}: {line}")
        if reporter:
            reporter.done(out=str(args.out), status=result["status"])
        else:
            print(section)
        return 1 if problems else 0
    except SystemExit as exc:
        if reporter and exc.code not in (0, None):
            reporter.error(str(exc.code))
        raise
    except Exception as exc:  # noqa: BLE001 - one error event, then the traceback on stderr
        if reporter:
            reporter.error(f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    sys.exit(main())
