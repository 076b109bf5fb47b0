"""Genotype classification metrics: AUC (with bootstrap CI), accuracy, sensitivity, specificity, ROC plots.

Conventions: ``y_true`` holds class ids ``0..K-1`` and ``-1`` for "unknown", which is left out of
every metric (the same convention the losses use). ``probs`` is ``(N, K)``; for binary tasks a
1D array is read as the probability of class 1. Class 1 is the positive class of a binary task
(``mutant``, ``codeleted`` in :data:`GliomaMTLLib.labels.GENOTYPE_TASKS`).

AUC is the Mann-Whitney statistic computed from average ranks, so ties count one half. MONAI's
``compute_roc_auc`` gives the same numbers (the tests check both against a brute-force pair count)
but loops in Python per sample, which is too slow for a 1000-sample bootstrap; hence the few lines
here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from GliomaMTLLib.io.atomic import atomic_path

UNKNOWN = -1


def _as_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be (N, K) with K >= 2, or (N,) for a binary task; got shape {p.shape}")
    return p


def _known(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and drop unknown (-1) labels."""
    y = np.asarray(y_true)
    p = _as_probs(probs)
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true must be 1D with one entry per row of probs; got {y.shape} and {p.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true must hold integer class ids (-1 = unknown)")
    y = y.astype(np.int64)
    k = p.shape[1]
    bad = (y < UNKNOWN) | (y >= k)
    if np.any(bad):
        raise ValueError(f"y_true holds class ids {sorted(set(y[bad].tolist()))} outside -1..{k - 1}")
    keep = y != UNKNOWN
    return y[keep], p[keep]


def roc_auc(y_binary: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of 0/1 labels against scores (Mann-Whitney U / (n_pos n_neg), ties count 1/2).

    Returns NaN when only one class is present.
    """
    y = np.asarray(y_binary).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # average ranks (ties share the mean of their ranks); leaner than scipy.stats.rankdata
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _per_class_auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC of every class (NaN where a class is absent or alone)."""
    return np.array([roc_auc(y == c, p[:, c]) for c in range(p.shape[1])])


def headline_auc(y: np.ndarray, p: np.ndarray, per_class: np.ndarray | None = None) -> float:
    """Binary: AUC of class 1. K>2: macro mean of the defined one-vs-rest AUCs."""
    if p.shape[1] == 2:
        return float(per_class[1]) if per_class is not None else roc_auc(y == 1, p[:, 1])
    per_class = _per_class_auc(y, p) if per_class is None else per_class
    defined = per_class[~np.isnan(per_class)]
    return float(defined.mean()) if defined.size else float("nan")


def bootstrap_auc_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, int]:
    """Percentile bootstrap CI of the headline AUC (binary: class 1; K>2: macro one-vs-rest).

    Cases are resampled with replacement; resamples where the AUC is undefined are skipped.

    Returns:
        ``(low, high, n_valid_resamples)``; NaNs when fewer than 2 resamples were valid.
    """
    y, p = _known(y_true, probs)
    lo, hi, n_valid = _bootstrap_interval(len(y), lambda idx: headline_auc(y[idx], p[idx]), n_boot, seed, level)
    return lo, hi, n_valid


def _bootstrap_interval(n: int, stat: Any, n_boot: int, seed: int, level: float) -> tuple[float, float, int]:
    """Percentile interval of ``stat(idx)`` over ``n_boot`` resamples ``idx`` of ``n`` cases (with
    replacement); undefined (NaN) resamples are skipped. NaNs when fewer than 2 were defined."""
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(int(n_boot) if n else 0):
        value = stat(rng.integers(0, n, n))
        if not np.isnan(value):
            stats.append(value)
    if len(stats) < 2:
        return float("nan"), float("nan"), len(stats)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(stats), [alpha, 1.0 - alpha])
    return float(lo), float(hi), len(stats)


def paired_auc_difference(y_true: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, *, n_boot: int = 2000,
                          seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Headline AUC of ``probs_b`` minus that of ``probs_a`` on the same cases, with a paired
    percentile-bootstrap interval (each resample scores both on the same cases).

    Returns:
        ``(difference, low, high)``; NaN bounds when fewer than 2 resamples were defined.
    """
    y, a = _known(y_true, probs_a)
    _, b = _known(y_true, probs_b)
    difference = headline_auc(y, b) - headline_auc(y, a)
    lo, hi, _ = _bootstrap_interval(len(y), lambda idx: headline_auc(y[idx], b[idx]) - headline_auc(y[idx], a[idx]),
                                    n_boot, seed, level)
    return float(difference), lo, hi


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Metrics of one genotype task.

    Args:
        y_true: (N,) class ids, ``-1`` = unknown (ignored).
        probs: (N, K) class probabilities, or (N,) probability of class 1 for a binary task.
        class_names: names for the per-class entries (default ``"0"``, ``"1"``, ...).
        threshold: binary decision threshold on P(class 1); K>2 uses the arg-max.
        n_boot: bootstrap resamples for the AUC CI (0 disables it).
        seed: bootstrap seed.
        ci_level: CI coverage.

    Returns:
        Always: ``n`` (known labels), ``n_unknown``, ``n_per_class``, ``auc``, ``auc_defined``,
        ``auc_note`` (why the AUC is NaN or partial; ``""`` otherwise), ``auc_ci_low``,
        ``auc_ci_high``, ``n_boot_valid``, ``auc_per_class`` (one-vs-rest), ``accuracy``,
        ``balanced_accuracy``, ``recall_per_class``. Binary tasks add ``n_positive``,
        ``n_negative``, ``sensitivity`` (recall of class 1), ``specificity`` (recall of class 0)
        and ``threshold``; undefined ratios are NaN.

    Raises:
        ValueError: on shape mismatch or class ids outside -1..K-1.
    """
    y_all = np.asarray(y_true)
    y, p = _known(y_true, probs)
    k = p.shape[1]
    names = [str(c) for c in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} probability columns")
    counts = np.bincount(y, minlength=k)
    present = [names[c] for c in range(k) if counts[c] > 0]

    per_class = _per_class_auc(y, p)
    auc = headline_auc(y, p, per_class)
    if len(present) < 2:
        note = f"AUC undefined: only {len(present)} class present in the known labels ({', '.join(present) or 'none'})"
    elif k > 2 and len(present) < k:
        missing = [names[c] for c in range(k) if counts[c] == 0]
        note = f"macro AUC over the {len(present)} classes present; absent: {', '.join(missing)}"
    else:
        note = ""
    lo = hi = float("nan")
    n_valid = 0
    if n_boot > 0 and not np.isnan(auc):
        lo, hi, n_valid = bootstrap_auc_ci(y, p, n_boot=n_boot, seed=seed, level=ci_level)

    if k == 2:
        pred = (p[:, 1] >= threshold).astype(np.int64)
    else:
        pred = np.argmax(p, axis=1)
    recalls = [_ratio(int(np.sum((pred == c) & (y == c))), int(counts[c])) for c in range(k)]
    defined_recalls = [r for r in recalls if not np.isnan(r)]
    out: dict[str, Any] = {
        "n": int(len(y)),
        "n_unknown": int(len(y_all) - len(y)),
        "n_per_class": {names[c]: int(counts[c]) for c in range(k)},
        "auc": auc,
        "auc_defined": bool(not np.isnan(auc)),
        "auc_note": note,
        "auc_ci_low": lo,
        "auc_ci_high": hi,
        "n_boot_valid": int(n_valid),
        "auc_per_class": {names[c]: float(per_class[c]) for c in range(k)},
        "accuracy": _ratio(int(np.sum(pred == y)), len(y)),
        "balanced_accuracy": float(np.mean(defined_recalls)) if defined_recalls else float("nan"),
        "recall_per_class": {names[c]: recalls[c] for c in range(k)},
    }
    if k == 2:
        out.update(
            n_positive=int(counts[1]),
            n_negative=int(counts[0]),
            sensitivity=recalls[1],
            specificity=recalls[0],
            threshold=float(threshold),
        )
    return out


def roc_curve_points(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of 0/1 labels (``-1`` ignored) against scores.

    Returns:
        ``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold ``inf`` and one point per
        distinct score (predict positive when ``score >= threshold``), ending at (1, 1). Rates are
        NaN when a class is absent.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true and scores must be 1D of equal length; got {y.shape} and {s.shape}")
    keep = y != UNKNOWN
    y, s = y[keep].astype(bool), s[keep]
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.zeros(0, dtype=int)
    tps = np.cumsum(y)[last_of_run]
    fps = np.cumsum(~y)[last_of_run]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tps / n_pos] if n_pos else np.full(len(tps) + 1, np.nan)
        fpr = np.r_[0.0, fps / n_neg] if n_neg else np.full(len(fps) + 1, np.nan)
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr, tpr, thresholds


def _task_arrays(result: Any) -> tuple[np.ndarray, np.ndarray, Sequence[str] | None]:
    if isinstance(result, Mapping):
        return np.asarray(result["y_true"]), _as_probs(result["probs"]), result.get("class_names")
    y, p = result[0], result[1]
    return np.asarray(y), _as_probs(p), (result[2] if len(result) > 2 else None)


def plot_roc(tasks_results: Mapping[str, Any], out_png: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write ROC curves, one panel per genotype task, to a PNG (atomically).

    Args:
        tasks_results: ``{task: {"y_true": (N,), "probs": (N, K), "class_names": optional}}`` or
            ``{task: (y_true, probs[, class_names])}``. Binary tasks draw the class-1 curve; K>2
            tasks draw one one-vs-rest curve per class present.
        out_png: output path.
        dpi: resolution.

    Returns:
        The output path.
    """
    # The object-oriented Agg canvas avoids pyplot's global state and backend selection.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not tasks_results:
        raise ValueError("plot_roc needs at least one task")
    n = len(tasks_results)
    fig = Figure(figsize=(4.0 * n, 4.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (task, result) in zip(axes, tasks_results.items()):
        y_all, p, names = _task_arrays(result)
        y, p = _known(y_all, p)
        k = p.shape[1]
        names = [str(c) for c in range(k)] if names is None else [str(c) for c in names]
        classes = [1] if k == 2 else list(range(k))
        for c in classes:
            yc = y == c
            if yc.all() or not yc.any():
                continue
            fpr, tpr, _ = roc_curve_points(yc.astype(int), p[:, c])
            auc = roc_auc(yc, p[:, c])
            label = f"AUC {auc:.3f}" if k == 2 else f"{names[c]} vs rest, AUC {auc:.3f}"
            ax.plot(fpr, tpr, drawstyle="default", lw=1.8, label=label)
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.6")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        macro = headline_auc(y, p) if k > 2 else float("nan")
        ax.set_title(f"{task} (n={len(y)}" + (f", macro AUC {macro:.3f})" if not np.isnan(macro) else ")"))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "AUC undefined\n(one class only)", ha="center", va="center")
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out
