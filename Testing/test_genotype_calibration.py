"""Reliability diagram and ECE of calibrated genotype probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from GliomaMTLLib.metrics.calibration import expected_calibration_error, plot_reliability, reliability_curve


def test_reliability_curve_of_a_calibrated_forecaster_lies_on_the_diagonal():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    mean_pred, observed, counts = reliability_curve(p, y, n_bins=10)
    assert counts.sum() == 20000
    np.testing.assert_allclose(observed, mean_pred, atol=0.03)
    assert expected_calibration_error(p, y) < 0.02
    # an over-confident forecaster is off the diagonal and has a large ECE
    sharp = np.clip((p - 0.5) * 3 + 0.5, 0, 1)
    assert expected_calibration_error(sharp, y) > 0.1


def test_three_class_reliability_is_the_top_label_curve():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (20000, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])  # drawn from the forecast: calibrated
    mean_pred, observed, counts = reliability_curve(p, y, n_bins=10)
    ok = counts > 200
    assert np.nanmin(mean_pred[counts > 0]) >= 1 / 3 - 1e-9  # the top probability of 3 classes
    np.testing.assert_allclose(observed[ok], mean_pred[ok], atol=0.03)
    # the top class always wrong: observed 0 in every bin
    _, never, _ = reliability_curve(p, (p.argmax(1) + 1) % 3, n_bins=10)
    assert np.nanmax(never) == 0.0


def test_reliability_diagram_png_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    out = plot_reliability({"idh": (y, p), "codel_1p19q": (y, 1 - p)}, str(tmp_path / "rel.png"))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="K >= 2"):
        reliability_curve(np.ones((4, 1)), np.array([0, 0, 0, 0]))
    with pytest.raises(ValueError, match="at least one task"):
        plot_reliability({}, str(tmp_path / "x.png"))
