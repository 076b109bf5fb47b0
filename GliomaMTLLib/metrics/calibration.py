"""Probability calibration: expected calibration error and temperature scaling (Guo et al., 2017).

Temperature scaling divides a classifier's logits by one scalar ``T`` fitted on a validation split
by minimizing the negative log-likelihood; it changes confidence, never the arg-max class. The
NLL is convex in ``1/T``, so a bounded 1D search over ``log T`` finds the global minimum; scipy's
``minimize_scalar`` does this in a few dozen evaluations without any torch state.
:func:`fit_temperature_bias` adds per-class offsets (bias-corrected temperature scaling), for
multinomial regressions whose class priors are off.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from GliomaMTLLib.metrics.classification import UNKNOWN, _known


def _as_logits(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:  # one logit per case = binary logit of class 1
        z = np.stack([np.zeros_like(z), z], axis=1)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be (N, K) with K >= 2, or (N,) binary logits; got shape {z.shape}")
    return z


def _known_logits(logits: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) logits and class ids of the known labels (``-1`` dropped), both validated."""
    z = _as_logits(logits)
    y, _ = _known(y_true, np.zeros_like(z))
    return z[np.asarray(y_true) != UNKNOWN], y


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities ``softmax(logits / T)``, (N, K); 1D logits give (N, 2)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return softmax(_as_logits(logits) / float(temperature), axis=1)


def nll(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the known labels (``-1`` ignored) at temperature ``T``."""
    z = _as_logits(logits)
    y = np.asarray(y_true).astype(np.int64)
    keep = y != UNKNOWN
    z, y = z[keep], y[keep]
    if len(y) == 0:
        return float("nan")
    logp = log_softmax(z / float(temperature), axis=1)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(
    logits: np.ndarray,
    y_true: np.ndarray,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """Temperature ``T`` minimizing the validation NLL of ``softmax(logits / T)``.

    Args:
        logits: (N, K) logits, or (N,) binary logits of class 1.
        y_true: (N,) class ids, ``-1`` = unknown (ignored).
        bounds: search range for ``T``.

    Returns:
        The fitted temperature (``T > 1`` softens over-confident predictions). 1.0 when there are
        no known labels.

    Raises:
        ValueError: on shape mismatch or class ids out of range.
    """
    z, y = _known_logits(logits, y_true)
    if len(y) == 0:
        return 1.0
    rows = np.arange(len(y))

    def objective(log_t: float) -> float:
        logp = log_softmax(z / math.exp(log_t), axis=1)
        return float(-logp[rows, y].mean())

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


#: Largest class offset (log-odds) :func:`fit_temperature_bias` may fit: a class prior moved by e^10.
MAX_CLASS_OFFSET = 10.0


def fit_temperature_bias(
    logits: np.ndarray,
    y_true: np.ndarray,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
    temperature: float | None = None,
) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling (Alexandari et al., 2020): ``softmax(logits / T + b)``
    with ``T`` and the class offsets ``b`` (``b[0] = 0``) minimizing the validation NLL.

    The offsets move the class priors, which a temperature alone cannot: a regression fitted with
    class-balanced weights predicts balanced priors, and only offsets restore the real ones. The
    NLL is convex in ``(1 / T, b)``, so L-BFGS-B finds the global minimum.

    Args:
        logits: (N, K) logits, or (N,) binary logits of class 1.
        y_true: (N,) class ids, ``-1`` = unknown (ignored).
        bounds: search range for ``T``.
        temperature: when given, ``T`` is held at this value and only the offsets are fitted.

    Returns:
        ``(T, b)`` with ``b`` of shape (K,); ``(1.0, zeros)`` when there are no known labels.

    Raises:
        ValueError: a held ``temperature`` that is not positive.
    """
    from scipy.optimize import minimize

    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z, y = _known_logits(logits, y_true)
    k = z.shape[1]
    if len(y) == 0:
        return 1.0, np.zeros(k)
    rows = np.arange(len(y))
    onehot = np.eye(k)[y]
    held_inv_t = None if temperature is None else 1.0 / float(temperature)
    fixed = held_inv_t is not None

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t = held_inv_t if held_inv_t is not None else params[0]
        b = np.concatenate([[0.0], params[0 if fixed else 1:]])
        logp = log_softmax(z * inv_t + b, axis=1)
        resid = np.exp(logp) - onehot  # d NLL / d (scaled logits), per case
        grad_b = resid.mean(axis=0)[1:]
        grad = grad_b if fixed else np.concatenate([[float((resid * z).sum(axis=1).mean())], grad_b])
        return float(-logp[rows, y].mean()), grad

    start = np.zeros(k - 1) if fixed else np.concatenate([[1.0], np.zeros(k - 1)])
    # offsets bounded so a class absent from the calibration labels gets a finite, tiny prior
    offsets = [(-MAX_CLASS_OFFSET, MAX_CLASS_OFFSET)] * (k - 1)
    box = offsets if fixed else [(1.0 / bounds[1], 1.0 / bounds[0])] + offsets
    res = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=box)
    t = float(temperature) if temperature is not None else float(1.0 / res.x[0])
    return t, np.concatenate([[0.0], res.x[0 if fixed else 1:]])


def expected_calibration_error(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    n_bins: int = 15,
) -> float:
    """Top-label expected calibration error with equal-width confidence bins.

    ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|, where confidence is the
    largest class probability and bin b covers ``(b/n_bins, (b+1)/n_bins]``.

    Args:
        probs: (N, K) probabilities, or (N,) probability of class 1.
        y_true: (N,) class ids, ``-1`` = unknown (ignored).
        n_bins: number of bins on [0, 1].

    Returns:
        ECE in [0, 1]; NaN when no label is known.
    """
    y, p = _known(y_true, probs)
    if len(y) == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # bin index: (b/n, (b+1)/n] -> b; confidence 0 goes to bin 0
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / len(y))


def chance_ece(probs: np.ndarray, *, draws: int = 1000, n_bins: int = 15, seed: int = 0) -> np.ndarray:
    """The ECE a perfectly calibrated model giving ``probs`` would show by chance alone.

    Labels are drawn from ``probs`` ((N, K), or (N,) probability of class 1) ``draws`` times and
    the top-label ECE of each draw is returned (``draws`` values). A measured ECE inside this
    spread cannot tell the model from a calibrated one on these N cases.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"probs must be a non-empty (N, K) or (N,) array, got shape {p.shape}")
    rng = np.random.default_rng(seed)
    cum = np.cumsum(p, axis=1)
    out = np.empty(int(draws))
    for i in range(int(draws)):
        y = (rng.random((len(p), 1)) > cum).sum(axis=1).clip(0, p.shape[1] - 1)
        out[i] = expected_calibration_error(p, y, n_bins=n_bins)
    return out


def reliability_curve(
    probs: np.ndarray, y_true: np.ndarray, *, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability curve: per equal-width bin of P(class 1), the mean predicted probability, the
    observed frequency of class 1, and the count (``-1`` labels ignored; empty bins are NaN). With
    more than two classes it is the top-label curve: the top probability against how often the top
    class is the true one.

    Args:
        probs: (N, 2) probabilities or (N,) probability of class 1.
        y_true: (N,) class ids 0/1, ``-1`` unknown.
        n_bins: bins on [0, 1].

    Returns:
        ``(mean_predicted, observed_frequency, counts)``, each (n_bins,).
    """
    y, p = _known(y_true, probs)
    if p.shape[1] == 2:
        q = p[:, 1]
    else:
        q, y = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.int64)
    bins = np.clip((q * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(bins, weights=q, minlength=n_bins) / counts
        observed = np.bincount(bins, weights=(y == 1).astype(np.float64), minlength=n_bins) / counts
    return mean_pred, observed, counts


def plot_reliability(
    tasks: dict[str, tuple[np.ndarray, np.ndarray]], out_png: str, *, n_bins: int = 10, dpi: int = 120
) -> str:
    """Reliability diagram PNG (atomically), one panel per task ``{task: (y_true, probs)}`` (top-label
    for more than two classes):
    observed frequency against mean predicted probability per bin, marker area ~ bin count, with
    the task's ECE (top-label, 15 bins as :func:`expected_calibration_error`) in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from GliomaMTLLib.io.atomic import atomic_path

    if not tasks:
        raise ValueError("plot_reliability needs at least one task")
    fig = Figure(figsize=(4.0 * len(tasks), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, (task, (y, p)) in zip(axes, tasks.items()):
        mean_pred, observed, counts = reliability_curve(p, y, n_bins=n_bins)
        ok = counts > 0
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.6")
        ax.plot(mean_pred[ok], observed[ok], "-", lw=1.2, color="C0")
        ax.scatter(mean_pred[ok], observed[ok], s=10 + 140 * counts[ok] / counts.max(), color="C0", zorder=3)
        ece = expected_calibration_error(p, y)
        ax.set_title(f"{task}: ECE {ece:.3f} (n={int(counts.sum())})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed frequency")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return str(out_png)
