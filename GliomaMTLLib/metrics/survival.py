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
