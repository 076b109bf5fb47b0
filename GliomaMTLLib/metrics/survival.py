"""Survival metrics and models: Harrell's C-index and a Cox model on network embeddings (paper 002).

Sign convention: a *risk* score is higher for patients expected to die sooner (a Cox linear
predictor, a hazard). lifelines' ``concordance_index`` expects scores that are higher for
*longer* survival, so risks are passed negated.

lifelines is an optional dependency (extras ``train``/``test``); it is imported when used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np


def _survival_arrays(
    durations: Sequence[float], events: Sequence[int | bool], n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events)
    if t.ndim != 1 or e.shape != t.shape or (n is not None and len(t) != n):
        raise ValueError(
            f"durations and events must be 1D arrays of the same length"
            f"{'' if n is None else f' {n}'}; got {t.shape} and {e.shape}"
        )
    if not np.all(np.isfinite(t)):
        raise ValueError("durations must be finite")
    if not np.all(np.isin(e, (0, 1))):
        raise ValueError("events must be 0 (censored) or 1 (event observed)")
    return t, e.astype(np.int64)


def concordance(risk: Sequence[float], durations: Sequence[float], events: Sequence[int | bool]) -> float:
    """Harrell's C-index of a risk score (higher risk = shorter survival).

    Args:
        risk: (N,) risk scores.
        durations: (N,) follow-up times (any unit).
        events: (N,) 1 = death observed, 0 = censored.

    Returns:
        C-index in [0, 1] (0.5 = random, ties in risk count 1/2); NaN when no pair is comparable.
    """
    from lifelines.utils import concordance_index

    r = np.asarray(risk, dtype=np.float64)
    t, e = _survival_arrays(durations, events, len(r))
    try:
        return float(concordance_index(t, -r, e))
    except ZeroDivisionError:  # lifelines: "No admissable pairs in the dataset."
        return float("nan")


@dataclass
class CoxModel:
    """A fitted Cox model on (optionally PCA-reduced) standardized embeddings.

    Attributes:
        fitter: the fitted ``lifelines.CoxPHFitter``.
        mean: (D,) feature means of the training embeddings.
        projection: (D, k) map from centred embeddings to model covariates (PCA components, or the
            identity when no reduction was needed), already divided by the covariates' std.
        columns: covariate names (``pc1``... or ``f1``...).
    """

    fitter: Any
    mean: np.ndarray
    projection: np.ndarray
    columns: list[str]

    def covariates(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, k) standardized model covariates."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected embeddings of shape (N, {self.mean.shape[0]}), got {x.shape}")
        return (x - self.mean) @ self.projection

    def risk(self, embeddings: np.ndarray) -> np.ndarray:
        """Linear predictor (log partial hazard, up to a constant): higher = shorter survival."""
        return self.covariates(embeddings) @ self.fitter.params_[self.columns].to_numpy()

    def concordance(self, embeddings: np.ndarray, durations: Sequence[float], events: Sequence[int | bool]) -> float:
        """C-index of this model's risk on (held-out) cases."""
        return concordance(self.risk(embeddings), durations, events)


def fit_cox(
    embeddings: np.ndarray,
    durations: Sequence[float],
    events: Sequence[int | bool],
    penalizer: float = 0.1,
    *,
    n_components: int | None = None,
    max_components: int = 8,
) -> CoxModel:
    """Fit a Cox proportional-hazards model (lifelines ``CoxPHFitter``) on embeddings.

    Paper 002 fits a linear Cox model on the classifier's last-layer embeddings. With tens of
    cases and hundreds of embedding dimensions that is ill-posed, so the embeddings are centred
    and, when ``D`` exceeds ``max_components``, reduced by PCA first; the covariates are scaled to
    unit variance so that the ridge ``penalizer`` acts evenly.

    Args:
        embeddings: (N, D) features per case.
        durations: (N,) follow-up times.
        events: (N,) 1 = death observed, 0 = censored.
        penalizer: lifelines L2 penalty.
        n_components: PCA components to keep (default: ``min(D, max_components, N - 2)``; PCA is
            skipped when that equals ``D``).
        max_components: cap on the default number of components.

    Returns:
        The fitted :class:`CoxModel`.

    Raises:
        ValueError: on inconsistent shapes, fewer than 3 cases or no observed event.
    """
    import pandas as pd
    from lifelines import CoxPHFitter

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    n, d = x.shape
    t, e = _survival_arrays(durations, events, n)
    if n < 3 or e.sum() == 0:
        raise ValueError(f"a Cox model needs at least 3 cases and one event; got {n} cases, {int(e.sum())} events")
    mean = x.mean(axis=0)
    xc = x - mean
    k = min(d, max_components, max(n - 2, 1)) if n_components is None else int(n_components)
    if not 1 <= k <= d:
        raise ValueError(f"n_components must be in 1..{d}, got {k}")
    if k < d:
        # PCA by SVD of the centred data (a library PCA would add a dependency for three lines).
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        basis = vt[:k].T
        columns = [f"pc{i + 1}" for i in range(k)]
    else:
        basis = np.eye(d)
        columns = [f"f{i + 1}" for i in range(d)]
    std = (xc @ basis).std(axis=0)
    projection = basis / np.where(std > 0, std, 1.0)
    df = pd.DataFrame(xc @ projection, columns=columns)
    df["duration"] = t
    df["event"] = e
    fitter = CoxPHFitter(penalizer=penalizer)
    fitter.fit(df, duration_col="duration", event_col="event")
    return CoxModel(fitter=fitter, mean=mean, projection=projection, columns=columns)


def cindex_by_group(
    risk: Sequence[float],
    durations: Sequence[float],
    events: Sequence[int | bool],
    groups: Sequence[Hashable],
    *,
    overall: str | None = "all",
) -> dict[Hashable, dict[str, float]]:
    """C-index within each group (paper 002: per WHO 2016 molecular subtype).

    Args:
        risk, durations, events: as for :func:`concordance`.
        groups: (N,) group label per case; ``None`` cases count only in the overall row.
        overall: key of the all-cases row (``None`` leaves it out).

    Returns:
        ``{group: {"c_index", "n", "n_events"}}`` in order of first appearance, then the overall
        row; ``c_index`` is NaN for a group with no comparable pair.
    """
    r = np.asarray(risk, dtype=np.float64)
    t, e = _survival_arrays(durations, events, len(r))
    g = list(groups)
    if len(g) != len(r):
        raise ValueError(f"groups has {len(g)} entries for {len(r)} cases")
    out: dict[Hashable, dict[str, float]] = {}
    for label in dict.fromkeys(x for x in g if x is not None):
        sel = np.array([x == label for x in g])
        out[label] = {"c_index": concordance(r[sel], t[sel], e[sel]), "n": float(sel.sum()), "n_events": float(e[sel].sum())}
    if overall is not None:
        out[overall] = {"c_index": concordance(r, t, e), "n": float(len(r)), "n_events": float(e.sum())}
    return out


#: WHO CNS5 adult diffuse glioma subtypes from IDH and 1p/19q (paper 002 groups the C-index by these).
WHO_SUBTYPES: tuple[str, ...] = ("IDH-wildtype", "IDH-mutant 1p/19q-intact", "IDH-mutant 1p/19q-codeleted")


def who_subtype(idh: str | None, codel: str | None) -> str | None:
    """WHO subtype name from genotype class names (``wildtype``/``mutant``, ``intact``/``codeleted``);
    None when IDH is unknown or uncertain. 1p/19q co-deletion only counts in IDH-mutant tumours."""
    if idh == "wildtype":
        return WHO_SUBTYPES[0]
    if idh != "mutant":
        return None
    if codel == "codeleted":
        return WHO_SUBTYPES[2]
    if codel == "intact":
        return WHO_SUBTYPES[1]
    return None


def plot_kaplan_meier(
    durations: Sequence[float],
    events: Sequence[int | bool],
    groups: Sequence[Hashable],
    out_png: str,
    *,
    title: str = "Kaplan-Meier by predicted subtype",
    time_unit: str = "days",
    dpi: int = 120,
) -> str:
    """Kaplan-Meier curves (lifelines ``KaplanMeierFitter``), one per group (``None`` left out),
    written atomically to ``out_png``; the legend gives each group's size and events."""
    from lifelines import KaplanMeierFitter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from GliomaMTLLib.io.atomic import atomic_path

    t, e = _survival_arrays(durations, events)
    g = list(groups)
    if len(g) != len(t):
        raise ValueError(f"groups has {len(g)} entries for {len(t)} cases")
    fig = Figure(figsize=(6.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    labels = [x for x in dict.fromkeys(g) if x is not None]
    if not labels:
        raise ValueError("no case has a group: nothing to plot")
    for label in sorted(labels, key=str):
        sel = np.array([x == label for x in g])
        kmf = KaplanMeierFitter()
        kmf.fit(t[sel], e[sel], label=f"{label} (n={int(sel.sum())}, events={int(e[sel].sum())})")
        kmf.plot_survival_function(ax=ax, ci_show=False)
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return str(out_png)


def survival_by_subtype(
    features_train: np.ndarray,
    durations_train: Sequence[float],
    events_train: Sequence[int | bool],
    features_test: np.ndarray,
    durations_test: Sequence[float],
    events_test: Sequence[int | bool],
    subtypes_test: Sequence[str | None],
    *,
    penalizer: float = 0.1,
) -> dict[str, Any]:
    """Paper 002's survival analysis on genotype-path features: a Cox model (lifelines, ridge
    ``penalizer``, no PCA) fitted on the training cases, its C-index on the test cases overall and
    within each WHO subtype.

    Returns:
        ``{"model", "n_train", "by_subtype": {subtype | "all": {"c_index", "n", "n_events"}}}``.
    """
    x_train = np.asarray(features_train, float)
    cox = fit_cox(x_train, durations_train, events_train, penalizer, n_components=x_train.shape[1])
    risk = cox.risk(np.asarray(features_test, float))
    table = cindex_by_group(risk, durations_test, events_test, subtypes_test)
    return {"model": f"Cox (lifelines, penalizer {penalizer}) on {x_train.shape[1]} genotype features",
            "n_train": int(len(x_train)), "by_subtype": {str(k): v for k, v in table.items()}}


def crossval_cox_risk(
    features: np.ndarray,
    durations: Sequence[float],
    events: Sequence[int | bool],
    *,
    folds: int = 5,
    penalizer: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold Cox risk of every case: for evaluating features on one cohort without a separate
    training split (each case's risk comes from a model that never saw it).

    Raises:
        ValueError: fewer than ``2 * folds`` cases or a fold without an event in its training part.
    """
    x = np.asarray(features, dtype=np.float64)
    t, e = _survival_arrays(durations, events, len(x))
    if len(x) < 2 * folds:
        raise ValueError(f"cross-validated Cox needs at least {2 * folds} cases, got {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    risk = np.zeros(len(x))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        model = fit_cox(x[train], t[train], e[train], penalizer, n_components=x.shape[1])
        risk[test] = model.risk(x[test])
    return risk
