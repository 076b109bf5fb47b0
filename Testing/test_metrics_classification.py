"""Genotype classification metrics, ROC curves/plots and temperature-scaling calibration."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc
from scipy.special import softmax

from GliomaMTLLib.metrics.calibration import (
    apply_temperature,
    chance_ece,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_bias,
    nll,
)
from GliomaMTLLib.metrics.classification import (
    bootstrap_auc_ci,
    classification_metrics,
    plot_roc,
    roc_auc,
    roc_curve_points,
)


def pairwise_auc(y, s) -> float:
    """Brute force: fraction of (positive, negative) pairs ranked correctly, ties count 1/2."""
    y = np.asarray(y, bool)
    pos, neg = np.asarray(s)[y], np.asarray(s)[~y]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pair_count_and_monai_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 40 + 10 * seed
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) * 0.6 + 0.3 * y, 1)  # rounding makes many ties
    assert len(np.unique(s)) < n  # ties present
    expected = pairwise_auc(y, s)
    assert roc_auc(y, s) == pytest.approx(expected, abs=1e-12)
    monai = compute_roc_auc(torch.tensor(s, dtype=torch.float64), torch.tensor(y))
    assert monai == pytest.approx(expected, abs=1e-12)


def test_auc_undefined_with_one_class():
    assert math.isnan(roc_auc(np.ones(5), np.linspace(0, 1, 5)))


def test_binary_metrics_by_hand():
    # unknowns (-1) are ignored entirely
    y = np.array([1, 1, 1, 0, 0, 0, 0, -1, -1])
    p1 = np.array([0.9, 0.6, 0.4, 0.3, 0.2, 0.7, 0.5, 0.99, 0.01])
    probs = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(y, probs, class_names=("wildtype", "mutant"), n_boot=200)
    assert m["n"] == 7 and m["n_unknown"] == 2
    assert m["n_positive"] == 3 and m["n_negative"] == 4
    assert m["n_per_class"] == {"wildtype": 4, "mutant": 3}
    # threshold 0.5: predicted positive = 0.9, 0.6, 0.7, 0.5 -> TP 2, FN 1, FP 2, TN 2
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 4)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 4) / 2)
    assert m["auc"] == pytest.approx(pairwise_auc(y[:7], p1[:7]))
    assert m["auc_defined"] and m["auc_note"] == ""
    assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
    # 1D probabilities of the positive class give the same numbers
    m1 = classification_metrics(y, p1, class_names=("wildtype", "mutant"), n_boot=200)
    assert {k: m1[k] for k in m1} == m


def test_single_class_gives_nan_auc_with_reason():
    y = np.array([0, 0, 0, -1])
    m = classification_metrics(y, np.array([0.1, 0.6, 0.3, 0.9]), n_boot=100)
    assert math.isnan(m["auc"]) and not m["auc_defined"]
    assert "only 1 class" in m["auc_note"]
    assert math.isnan(m["auc_ci_low"]) and math.isnan(m["sensitivity"])
    assert m["specificity"] == pytest.approx(2 / 3)
    empty = classification_metrics(np.array([-1, -1]), np.array([0.2, 0.8]), n_boot=10)
    assert empty["n"] == 0 and math.isnan(empty["accuracy"]) and not empty["auc_defined"]


def test_multiclass_ovr():
    rng = np.random.default_rng(3)
    n = 90
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y[:5] = -1
    m = classification_metrics(y, probs, class_names=("fusion", "v600e", "other"), n_boot=300)
    known = y != -1
    per = [pairwise_auc(y[known] == c, probs[known, c]) for c in range(3)]
    assert list(m["auc_per_class"].values()) == pytest.approx(per)
    assert m["auc"] == pytest.approx(np.mean(per))
    pred = probs[known].argmax(1)
    recalls = [np.mean(pred[y[known] == c] == c) for c in range(3)]
    assert list(m["recall_per_class"].values()) == pytest.approx(recalls)
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert m["accuracy"] == pytest.approx(np.mean(pred == y[known]))
    assert "sensitivity" not in m and m["n"] == n - 5
    assert m["auc_ci_low"] < m["auc"] < m["auc_ci_high"]
    # a class absent from the labels: macro AUC over the classes present, said so
    y2 = np.where(y == 2, 1, y)
    m2 = classification_metrics(y2, probs, class_names=("fusion", "v600e", "other"), n_boot=0)
    assert math.isnan(m2["auc_per_class"]["other"])
    assert m2["auc"] == pytest.approx(np.nanmean(list(m2["auc_per_class"].values())))
    assert "absent: other" in m2["auc_note"]


def test_bootstrap_ci_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.3 * y + rng.random(60) * 0.7, 0, 1)
    a = bootstrap_auc_ci(y, p, n_boot=400, seed=7)
    b = bootstrap_auc_ci(y, p, n_boot=400, seed=7)
    c = bootstrap_auc_ci(y, p, n_boot=400, seed=8)
    assert a == b and a != c
    assert a[2] == 400
    auc = roc_auc(y, p)
    assert a[0] < auc < a[1]
    # more data, narrower interval
    y4, p4 = np.tile(y, 4), np.tile(p, 4)
    d = bootstrap_auc_ci(y4, p4, n_boot=400, seed=7)
    assert d[1] - d[0] < a[1] - a[0]


def test_roc_curve_points():
    y = np.array([0, 0, 1, 1, 0, 1, -1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.5])
    fpr, tpr, thr = roc_curve_points(y, s)
    assert fpr[0] == 0 and tpr[0] == 0 and np.isinf(thr[0])
    assert fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert list(thr[1:]) == [0.8, 0.4, 0.35, 0.1]
    # the trapezoidal area under the curve is the tie-aware AUC
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y[:6], s[:6]))
    sk = pytest.importorskip("sklearn.metrics")
    fpr_sk, tpr_sk, _ = sk.roc_curve(y[:6], s[:6], drop_intermediate=False)
    assert np.allclose(fpr, fpr_sk) and np.allclose(tpr, tpr_sk)


def test_plot_roc_writes_png_atomically(tmp_path):
    rng = np.random.default_rng(1)
    y_bin = rng.integers(0, 2, 50)
    p_bin = np.clip(0.4 * y_bin + 0.6 * rng.random(50), 0, 1)
    y3 = rng.integers(0, 3, 45)
    p3 = rng.dirichlet(np.ones(3), 45)
    out = tmp_path / "figs" / "roc.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no backend/pyplot warnings
        path = plot_roc(
            {
                "idh": {"y_true": y_bin, "probs": p_bin},
                "braf": (y3, p3, ["fusion", "v600e", "other"]),
                "codel_1p19q": {"y_true": np.zeros(10, int), "probs": rng.random(10)},
            },
            out,
        )
    assert path == out and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["roc.png"]  # no temporary left behind
    with pytest.raises(ValueError):
        plot_roc({}, tmp_path / "none.png")


def _sample(rng, n, k):
    true_logits = rng.normal(size=(n, k)) * 1.5
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in probs])
    return true_logits, y


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    true_logits, y = _sample(rng, 3000, 3)
    over = 3.0 * true_logits  # deliberately over-confident
    t = fit_temperature(over, y)
    assert t > 1.0
    assert t == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(apply_temperature(over, 1.0), y)
    after = expected_calibration_error(apply_temperature(over, t), y)
    assert after < before / 2
    assert nll(over, y, t) < nll(over, y, 1.0)
    # scaling never changes the predicted class
    assert np.array_equal(apply_temperature(over, t).argmax(1), over.argmax(1))
    # calibrated logits: T close to 1
    assert fit_temperature(true_logits, y) == pytest.approx(1.0, abs=0.1)


def test_temperature_bias_undoes_a_prior_shift_that_a_temperature_cannot():
    rng = np.random.default_rng(3)
    true_logits, y = _sample(rng, 4000, 3)
    shifted = 2.0 * true_logits + np.array([0.0, 1.0, -1.5])  # over-confident and wrong class priors
    t, bias = fit_temperature_bias(shifted, y)
    assert t == pytest.approx(2.0, rel=0.15)
    assert bias[0] == 0.0
    np.testing.assert_allclose(bias[1:], [-0.5, 0.75], atol=0.15)  # -offset / T
    fixed = softmax(shifted / t + bias, axis=1)
    temp_only = apply_temperature(shifted, fit_temperature(shifted, y))
    observed = np.bincount(y, minlength=3) / len(y)
    np.testing.assert_allclose(fixed.mean(axis=0), observed, atol=0.01)  # the priors are back
    assert np.abs(temp_only.mean(axis=0) - observed).max() > 0.05  # a temperature cannot move them
    assert expected_calibration_error(fixed, y) < expected_calibration_error(temp_only, y)
    # with T held, only the offsets move, and still restore the priors; unknown labels are left out
    partly = np.where(np.arange(len(y)) % 10 == 0, -1, y)
    t1, b1 = fit_temperature_bias(shifted, partly, temperature=1.0)
    assert t1 == 1.0 and b1.shape == (3,)
    known = partly >= 0
    np.testing.assert_allclose(softmax(shifted[known] + b1, axis=1).mean(axis=0),
                               np.bincount(partly[known], minlength=3) / known.sum(), atol=1e-3)
    with pytest.raises(ValueError, match="temperature must be positive"):
        fit_temperature_bias(shifted, y, temperature=0.0)
    t0, b0 = fit_temperature_bias(shifted, np.full(len(y), -1))
    assert t0 == 1.0 and not b0.any()


def test_chance_ece_is_what_a_calibrated_model_shows_and_shrinks_with_more_cases():
    rng = np.random.default_rng(5)
    true_logits, _ = _sample(rng, 2000, 3)
    probs = softmax(true_logits, axis=1)
    small, large = chance_ece(probs[:100], draws=300), chance_ece(probs, draws=300)
    assert small.shape == (300,) and (small >= 0).all()
    assert np.median(large) < np.median(small) / 2  # ECE's chance part falls about as 1 / sqrt(N)
    # a calibrated model's measured ECE (labels drawn from its probabilities) lies inside the spread
    y = np.array([rng.choice(3, p=row) for row in probs[:100]])
    assert np.percentile(small, 1) <= expected_calibration_error(probs[:100], y) <= np.percentile(small, 99)
    # binary probabilities of class 1 are accepted; bad input names its shape
    assert chance_ece(np.full(50, 0.3), draws=10).shape == (10,)
    with pytest.raises(ValueError, match=r"got shape \(0, 3\)"):
        chance_ece(np.zeros((0, 3)))


def test_temperature_binary_logits_and_unknowns():
    rng = np.random.default_rng(2)
    z = rng.normal(size=2000) * 2.0
    y = (rng.random(2000) < 1 / (1 + np.exp(-z))).astype(int)
    y[:100] = -1
    t = fit_temperature(4.0 * z, y)
    assert t == pytest.approx(4.0, rel=0.2)
    probs = apply_temperature(4.0 * z, t)
    assert probs.shape == (2000, 2)
    assert expected_calibration_error(probs, y) < expected_calibration_error(apply_temperature(4.0 * z, 1.0), y)
    assert fit_temperature(z, np.full(2000, -1)) == 1.0


def test_ece_by_hand():
    # two bins used (n_bins=2): confidences 0.9, 0.8 (correct, wrong) and 0.6 (correct)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    y = np.array([0, 0, 0, -1])
    # bin (0.5, 1]: all three; acc 2/3, conf (0.9 + 0.8 + 0.6) / 3
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx(abs(2 / 3 - 2.3 / 3))
    # 10 bins: 0.9 -> acc 1 vs 0.9; 0.8 -> 0 vs 0.8; 0.6 -> 1 vs 0.6
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx((0.1 + 0.8 + 0.4) / 3)


def test_paired_auc_difference_is_zero_for_the_same_scores_and_positive_for_a_better_one() -> None:
    from GliomaMTLLib.metrics.classification import paired_auc_difference

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 120)
    noisy = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.3, 120), 0, 1)
    sharp = np.clip(0.5 + 0.4 * (y - 0.5) + rng.normal(0, 0.1, 120), 0, 1)
    assert paired_auc_difference(y, noisy, noisy, n_boot=200) == (0.0, 0.0, 0.0)
    d, lo, hi = paired_auc_difference(y, noisy, sharp, n_boot=300)
    assert d == pytest.approx(roc_auc(y == 1, sharp) - roc_auc(y == 1, noisy))
    assert 0.0 < lo <= d <= hi
    # unknown labels are left out of both, and three classes use the macro AUC
    y3 = np.where(np.arange(120) % 10 == 0, -1, rng.integers(0, 3, 120))
    p3 = rng.dirichlet(np.ones(3), 120)
    d3, lo3, hi3 = paired_auc_difference(y3, p3, p3, n_boot=50)
    assert (d3, lo3, hi3) == (0.0, 0.0, 0.0)
    informed = np.clip(p3 + 0.6 * np.eye(3)[np.clip(y3, 0, 2)], 0, None)
    informed /= informed.sum(axis=1, keepdims=True)
    known = y3 >= 0
    macro = [np.mean([roc_auc(y3[known] == k, q[known, k]) for k in range(3)]) for q in (p3, informed)]
    d3, lo3, hi3 = paired_auc_difference(y3, p3, informed, n_boot=200)
    assert d3 == pytest.approx(macro[1] - macro[0]) and 0.0 < lo3 <= d3 <= hi3
