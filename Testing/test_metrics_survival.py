"""C-index sign convention, per-group C-index and the Cox model on embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("lifelines")

from GliomaMTLLib.metrics.survival import CoxModel, cindex_by_group, concordance, fit_cox  # noqa: E402


def test_perfect_and_reversed_ordering():
    durations = np.array([5.0, 10.0, 20.0, 40.0, 80.0])
    events = np.ones(5, int)
    risk = -durations  # highest risk dies first
    assert concordance(risk, durations, events) == 1.0
    assert concordance(-risk, durations, events) == 0.0
    assert concordance(np.zeros(5), durations, events) == 0.5  # ties count 1/2


def test_censoring_and_no_comparable_pairs():
    durations = np.array([5.0, 10.0, 20.0])
    # only the first case has an event: comparable pairs (0,1), (0,2); risk orders them right
    assert concordance([3.0, 1.0, 2.0], durations, [1, 0, 0]) == 1.0
    assert math.isnan(concordance([1.0, 2.0, 3.0], durations, [0, 0, 0]))
    with pytest.raises(ValueError, match="events"):
        concordance([1.0, 2.0], [1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match="same length"):
        concordance([1.0, 2.0, 3.0], [1.0, 2.0], [1, 1])


def test_cindex_by_group():
    durations = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    events = np.ones(6, int)
    groups = ["idh_wt", "idh_wt", "idh_wt", "codel", "codel", "codel"]
    risk = np.array([3.0, 2.0, 1.0, 1.0, 2.0, 3.0])  # right within idh_wt, reversed within codel
    out = cindex_by_group(risk, durations, events, groups)
    assert list(out) == ["idh_wt", "codel", "all"]
    assert out["idh_wt"] == {"c_index": 1.0, "n": 3.0, "n_events": 3.0}
    assert out["codel"]["c_index"] == 0.0
    assert out["all"]["c_index"] == pytest.approx(concordance(risk, durations, events))
    lone = cindex_by_group(risk, durations, events, ["a"] * 5 + ["b"], overall=None)
    assert math.isnan(lone["b"]["c_index"]) and "all" not in lone


def _cohort(rng, n, d=64, n_factors=4):
    """Embeddings driven by a few latent factors; the hazard depends strongly on factor 0."""
    factors = rng.normal(size=(n, n_factors))
    loadings = rng.normal(size=(n_factors, d))
    x = factors @ loadings * 2.0 + rng.normal(scale=0.5, size=(n, d))
    true_risk = 1.5 * factors[:, 0]
    t_event = rng.exponential(scale=np.exp(-true_risk) * 365.0)
    t_censor = rng.exponential(scale=2 * 365.0, size=n)
    durations = np.minimum(t_event, t_censor)
    events = (t_event <= t_censor).astype(int)
    return x, durations, events, true_risk


def test_cox_on_embeddings_predicts_held_out_survival():
    rng = np.random.default_rng(0)
    x, t, e, true_risk = _cohort(rng, 300)
    train, test = slice(0, 200), slice(200, 300)
    model = fit_cox(x[train], t[train], e[train], penalizer=0.1)
    assert isinstance(model, CoxModel)
    assert model.columns == [f"pc{i}" for i in range(1, 9)]  # 64 dims reduced to 8 components
    c_test = model.concordance(x[test], t[test], e[test])
    assert c_test > 0.7
    # not far from the oracle that knows the true risk
    assert c_test > concordance(true_risk[test], t[test], e[test]) - 0.08
    # risk agrees with lifelines' own log partial hazard up to a constant
    import pandas as pd

    cov = pd.DataFrame(model.covariates(x[test]), columns=model.columns)
    lifelines_risk = model.fitter.predict_log_partial_hazard(cov).to_numpy()
    diff = model.risk(x[test]) - lifelines_risk
    assert np.allclose(diff, diff[0])


def test_cox_small_dimension_and_errors():
    rng = np.random.default_rng(1)
    x, t, e, _ = _cohort(rng, 80, d=3, n_factors=3)
    model = fit_cox(x, t, e)
    assert model.columns == ["f1", "f2", "f3"]  # no PCA needed
    assert model.risk(x).shape == (80,)
    assert fit_cox(x, t, e, n_components=2).columns == ["pc1", "pc2"]
    with pytest.raises(ValueError, match="event"):
        fit_cox(x, t, np.zeros(80, int))
    with pytest.raises(ValueError, match="shape"):
        model.risk(np.zeros((4, 5)))


def test_who_subtype_names():
    from GliomaMTLLib.metrics.survival import WHO_SUBTYPES, who_subtype

    assert who_subtype("wildtype", "codeleted") == WHO_SUBTYPES[0]  # codeletion counts only in IDH-mutant
    assert who_subtype("mutant", "intact") == "IDH-mutant 1p/19q-intact"
    assert who_subtype("mutant", "codeleted") == "IDH-mutant 1p/19q-codeleted"
    assert who_subtype("uncertain", "intact") is None and who_subtype("mutant", None) is None


def test_survival_by_subtype_and_kaplan_meier_png(tmp_path):
    from GliomaMTLLib.metrics.survival import plot_kaplan_meier, survival_by_subtype

    rng = np.random.default_rng(0)
    n = 120
    group = rng.integers(0, 3, n)
    x = np.stack([group + 0.3 * rng.normal(size=n), rng.normal(size=n)], 1)
    t = rng.exponential(1000.0 / np.exp(-1.2 * group))  # higher group = longer survival
    e = (rng.random(n) < 0.8).astype(int)
    names = np.array(["IDH-wildtype", "IDH-mutant 1p/19q-intact", "IDH-mutant 1p/19q-codeleted"])[group]
    out = survival_by_subtype(x[:80], t[:80], e[:80], x[80:], t[80:], e[80:], list(names[80:]))
    rows = out["by_subtype"]
    assert set(rows) == {*names[80:], "all"} and rows["all"]["n"] == 40
    assert rows["all"]["c_index"] > 0.6  # the features order the subtypes' survival
    png = plot_kaplan_meier(t, e, list(names) + [], str(tmp_path / "km.png"))
    assert (tmp_path / "km.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.endswith("km.png")
    with pytest.raises(ValueError, match="no case has a group"):
        plot_kaplan_meier(t, e, [None] * n, str(tmp_path / "none.png"))


def test_crossval_cox_risk_and_evaluate_rows(tmp_path):
    from types import SimpleNamespace

    from GliomaMTLLib.genotype.evaluation import FEATURES_KEY, genotype_survival_rows
    from GliomaMTLLib.metrics.survival import crossval_cox_risk

    rng = np.random.default_rng(3)
    n = 60
    wildtype = rng.random(n) < 0.6
    x = np.stack([wildtype + 0.3 * rng.normal(size=n), rng.normal(size=n)], 1)
    t = rng.exponential(np.where(wildtype, 400.0, 3000.0))
    e = np.ones(n, int)
    risk = crossval_cox_risk(x, t, e)
    assert risk.shape == (n,) and concordance(risk, t, e) > 0.65
    with pytest.raises(ValueError, match="at least 10 cases"):
        crossval_cox_risk(x[:8], t[:8], e[:8])
    tasks = {"idh": ("wildtype", "mutant"), "codel_1p19q": ("intact", "codeleted")}
    results = [SimpleNamespace(embedding={FEATURES_KEY: x[i]}, survival_days=float(t[i]), event=1,
                               genotype_true={"idh": 0 if wildtype[i] else 1, "codel_1p19q": 0},
                               genotype_logits={"idh": np.log([0.8, 0.2]) if wildtype[i] else np.log([0.2, 0.8]),
                                                "codel_1p19q": np.log([0.9, 0.1])})
               for i in range(n)]
    rows = genotype_survival_rows(results, tasks, tmp_path)
    names = [r["model"] for r in rows]
    assert any(m.endswith("IDH-wildtype") for m in names) and any(m.endswith("all cases") for m in names)
    assert (tmp_path / "km.png").exists()
    assert genotype_survival_rows([SimpleNamespace(embedding={}, survival_days=1.0, event=1)], tasks, tmp_path) == []
