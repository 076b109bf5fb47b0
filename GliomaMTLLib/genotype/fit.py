"""Fitting the feature path on feature matrices (scikit-learn), with the honesty rules of issue 12.

* :func:`fit_standardization`: feature means and standard deviations of the training phantoms.
* :func:`fit_task`: L2-regularized, class-balanced logistic regression; the strength is chosen by
  stratified cross-validated AUC (binary) or log-loss (multinomial) on the training split.
* :func:`fit_calibration`: Platt scaling (binary) or a temperature with class offsets
  (multinomial; bias-corrected temperature scaling) on the validation split, refused - left at identity, or limited to softening - when it would sharpen logits that
  carry no validated signal (near-constant logits, or a validation AUC interval that includes 0.5).
* :func:`fit_ood`: Mahalanobis distance with a Ledoit-Wolf covariance of the training features;
  the threshold is the validation quantile that gives at most ``max_false_alarm`` false alarms.
* :func:`task_status`: "not learned" when the held-out AUC interval includes 0.5.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from GliomaMTLLib.genotype.model import OodModel, TaskRegression
from GliomaMTLLib.metrics.calibration import fit_temperature_bias
from GliomaMTLLib.metrics.classification import bootstrap_auc_ci, roc_auc

DEFAULT_CS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
#: Conditional tasks: task -> (parent task, parent class). WHO CNS5 (2021) defines 1p/19q codeletion
#: within IDH-mutant tumours (oligodendroglioma), so its regression is fitted on IDH-mutant cases.
HIERARCHY: dict[str, tuple[str, str]] = {"codel_1p19q": ("idh", "mutant")}
#: Below this standard deviation of the validation logits, a task's scores are "near constant".
MIN_LOGIT_SD = 0.05


def fit_standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) -> (mean, scale); a constant feature gets scale 1 (it then contributes nothing)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need an (N >= 2, F) feature matrix, got shape {x.shape}")
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    return mean, np.where(sd > 1e-8, sd, 1.0)


def fit_task(z: np.ndarray, y: np.ndarray, classes: Sequence[str], *, cs: Sequence[float] = DEFAULT_CS,
             folds: int = 5, seed: int = 0) -> tuple[TaskRegression, dict[str, Any]]:
    """Logistic regression of class ids ``y`` (``-1`` = unknown, dropped) on standardized ``z``.

    Returns:
        The regression (no calibration yet) and ``{"C", "cv_score", "n"}``.

    Raises:
        ValueError: fewer than two classes among the known labels.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    keep = np.asarray(y) >= 0
    z, y = np.asarray(z, float)[keep], np.asarray(y, int)[keep]
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(f"task with classes {list(classes)} has only class ids {present.tolist()} among {len(y)} known labels")
    k = len(classes)
    n_folds = int(min(folds, np.bincount(y).min()))
    best, best_score = cs[len(cs) // 2], -np.inf
    if n_folds >= 2:
        cv = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        for c in cs:
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
            p = cross_val_predict(model, z, y, cv=cv, method="predict_proba")
            if k == 2:
                score = roc_auc(y == 1, p[:, 1])
            else:
                score = float(np.mean(np.log(np.clip(p[np.arange(len(y)), np.searchsorted(present, y)], 1e-9, 1))))
            if score > best_score + 1e-9:
                best, best_score = c, score
    model = LogisticRegression(C=best, class_weight="balanced", max_iter=5000).fit(z, y)
    if k == 2:
        coef, intercept = model.coef_[:1], model.intercept_[:1]
    else:
        coef = np.zeros((k, z.shape[1]))
        intercept = np.full(k, -30.0)  # a class never seen in training is never predicted
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
    reg = TaskRegression(list(classes), coef, intercept)
    return reg, {"C": float(best), "cv_score": float(best_score), "n": int(len(y))}


def fit_calibration(logits: np.ndarray, y: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Calibration of one task from validation logits (N, K) and class ids (``-1`` dropped).

    Binary: Platt ``a z + b`` on the class-1 logit. Multinomial: ``z / T + bias`` (a temperature and
    class offsets, so class-balanced training's priors are moved back to the real ones). The fit is
    refused (identity) when the logits are near constant, and limited to softening (``0 <= a <= 1``,
    ``T >= 1``; else a prevalence shift only) when the validation AUC interval includes 0.5.

    Returns:
        ``{"method", parameters..., "n", "val_auc", "val_auc_ci", "why"}``.
    """
    from sklearn.linear_model import LogisticRegression

    logits = np.asarray(logits, float)
    keep = np.asarray(y) >= 0
    s, y = logits[keep], np.asarray(y, int)[keep]
    k = s.shape[1]
    base: dict[str, Any] = {"n": int(len(y))}
    if len(np.unique(y)) < 2:
        return {"method": "none", **base, "why": "validation split has one class only: not calibrated"}
    probs = np.exp(s - s.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    lo, hi, _ = bootstrap_auc_ci(y, probs, n_boot=n_boot, seed=seed)
    auc = roc_auc(y == 1, s[:, 1] - s[:, 0]) if k == 2 else float("nan")
    base.update(val_auc=auc, val_auc_ci=[lo, hi])
    informative = not (lo <= 0.5 <= hi)
    if k == 2:
        z = s[:, 1] - s[:, 0]
        if z.std() < MIN_LOGIT_SD:
            return {"method": "none", **base, "why": f"validation logits near constant (sd {z.std():.3g}): refused"}
        platt = LogisticRegression(C=1e6, max_iter=5000).fit(z[:, None], y)
        a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        why = "Platt scaling on the calibration logits"
        if informative and a <= 0:
            return {"method": "none", **base, "why": "Platt slope not positive on an informative validation split: refused"}
        if not informative and not 0.0 <= a <= 1.0:
            # only a shift of the log-odds to the validation prevalence; no sharpening, no reversal
            a, b = 1.0, float(np.log(max(np.mean(y), 1e-6) / max(1 - np.mean(y), 1e-6)) - np.mean(z))
            why = "validation AUC interval includes 0.5: sharpening refused, prevalence shift only"
        return {"method": "platt", "a": a, "b": b, **base, "why": why}
    if np.std(s - s.mean(axis=1, keepdims=True)) < MIN_LOGIT_SD:
        return {"method": "none", **base, "why": "validation logits near constant: refused"}
    t, bias = fit_temperature_bias(s, y)
    why = "temperature and class offsets (bias-corrected temperature scaling) on the calibration logits"
    if not informative and t < 1.0:
        t, bias = fit_temperature_bias(s, y, temperature=1.0)
        why = "validation AUC interval includes 0.5: sharpening refused, class offsets only"
    return {"method": "temperature_bias", "temperature": float(t), "bias": [float(v) for v in bias], **base, "why": why}


def fit_ood(z_train: np.ndarray, z_val: np.ndarray, *, max_false_alarm: float = 0.05) -> OodModel:
    """Mahalanobis OOD model: Ledoit-Wolf covariance of the training features; threshold = the
    smallest validation-distance quantile giving at most ``max_false_alarm`` false alarms."""
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(np.asarray(z_train, float))
    model = OodModel(lw.location_, lw.precision_, float("inf"))
    d_val = model.distance(np.asarray(z_val, float))
    ordered = np.sort(d_val)
    allowed = int(np.floor(max_false_alarm * len(ordered)))
    threshold = float(ordered[len(ordered) - 1 - allowed]) if len(ordered) else float("inf")
    model.threshold = threshold
    model.info = {"score": "Mahalanobis distance of the standardized genotype features (Ledoit-Wolf covariance)",
                  "n_train": int(len(z_train)), "n_val": int(len(z_val)),
                  "val_false_alarm_rate": float(np.mean(d_val > threshold)) if len(d_val) else float("nan"),
                  "max_false_alarm": float(max_false_alarm)}
    return model


def task_status(metrics: dict[str, Any], n_label: str = "held-out synthetic cases") -> dict[str, Any]:
    """``{"available", "reason"}`` of a task from its held-out metrics (AUC with CI)."""
    auc, lo, hi, n = metrics.get("auc"), metrics.get("auc_ci_low"), metrics.get("auc_ci_high"), metrics.get("n")
    text = f"held-out AUC {auc:.2f} [{lo:.2f}, {hi:.2f}] on {n} {n_label}"
    if auc is None or not np.isfinite(auc) or not (np.isfinite(lo) and np.isfinite(hi)):
        return {"available": False, "reason": f"held-out AUC undefined on {n} {n_label} (not learned)"}
    if lo <= 0.5 <= hi or hi < 0.5:
        return {"available": False, "reason": text + " includes 0.5 (not learned)"}
    return {"available": True, "reason": text}


def out_of_fold_logits(z: np.ndarray, y: np.ndarray, reg_c: float, *, folds: int = 5, seed: int = 1) -> np.ndarray:
    """(N, K) logits of every known-label case from a regression (strength ``reg_c``, class-balanced)
    fitted without it (stratified ``folds``-fold); unknown labels (``-1``) get NaN rows. Binary
    logits are ``[0, w.z + b]``. What calibration and thresholds are fitted on when the validation
    cases also train the final model (as scikit-learn's ``CalibratedClassifierCV(ensemble=False)``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    z, y = np.asarray(z, float), np.asarray(y, int)
    known = np.nonzero(y >= 0)[0]
    classes = np.unique(y[known])
    out = np.full((len(y), max(2, int(y.max()) + 1)), np.nan)
    cv = StratifiedKFold(int(min(folds, np.bincount(y[known]).min())), shuffle=True, random_state=seed)
    for train, test in cv.split(z[known], y[known]):
        tr, te = known[train], known[test]
        model = LogisticRegression(C=reg_c, class_weight="balanced", max_iter=5000).fit(z[tr], y[tr])
        s = model.decision_function(z[te])
        if len(classes) == 2 and out.shape[1] == 2:
            out[te] = np.stack([np.zeros_like(s), s], 1)
        else:
            out[te] = -30.0
            out[np.ix_(te, model.classes_)] = s
    return out


def fit_ood_cv(z: np.ndarray, *, folds: int = 5, max_false_alarm: float = 0.05, seed: int = 2) -> OodModel:
    """OOD model on all of ``z`` with the threshold set on out-of-fold distances (each case measured
    against a covariance fitted without it): at most ``max_false_alarm`` of them exceed it."""
    from sklearn.covariance import LedoitWolf

    z = np.asarray(z, float)
    order = np.random.default_rng(seed).permutation(len(z))
    d = np.zeros(len(z))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        lw = LedoitWolf().fit(z[train])
        d[test] = OodModel(lw.location_, lw.precision_, float("inf")).distance(z[test])
    lw = LedoitWolf().fit(z)
    ordered = np.sort(d)
    threshold = float(ordered[len(ordered) - 1 - int(np.floor(max_false_alarm * len(ordered)))])
    return OodModel(lw.location_, lw.precision_, threshold, {
        "score": "Mahalanobis distance of the standardized genotype features (Ledoit-Wolf covariance)",
        "threshold_from": f"{folds}-fold out-of-fold distances of the {len(z)} development phantoms",
        "n_train": int(len(z)), "val_false_alarm_rate": float(np.mean(d > threshold)),
        "max_false_alarm": float(max_false_alarm)})


def fit_lesion_limit(counts: Sequence[int], *, max_false_alarm: float = 0.05) -> dict[str, Any]:
    """The fewest separate tumor cores ``t`` (at least 1) such that at most ``max_false_alarm`` of
    the development phantoms have more than ``t``: a case with more is flagged out of distribution.

    Raises:
        ValueError: no counts.
    """
    from GliomaMTLLib.inference.lesions import MIN_CORE_ML

    c = np.asarray(list(counts), int)
    if c.size == 0:
        raise ValueError("no tumor-core counts to fit the lesion limit on")
    t = 1
    while np.mean(c > t) > max_false_alarm:
        t += 1
    return {"max_core_lesions": int(t), "min_core_ml": MIN_CORE_ML, "n_development": int(c.size),
            "development_false_alarm_rate": float(np.mean(c > t)), "max_false_alarm": float(max_false_alarm),
            "development_counts": {str(k): int(v) for k, v in zip(*np.unique(c, return_counts=True))}}
