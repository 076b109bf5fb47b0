"""Genotype-path outputs for ``gliomamtl evaluate``: the per-case feature vector, and survival by
WHO subtype (paper 002) from a cross-validated Cox model on those features, with a Kaplan-Meier
PNG by predicted subtype."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

FEATURES_KEY = "genotype_features"


def genotype_embedding(predictor: Any) -> dict[str, np.ndarray]:
    """``{"genotype_features": (F,)}`` of the predictor's last case when its model has a
    radiological-feature path that ran, else ``{}``."""
    from GliomaMTLLib.genotype.path import RadiologicalPath

    for path in getattr(getattr(predictor, "task_logits", None), "paths", ()):
        if isinstance(path, RadiologicalPath) and path.last_features is not None:
            return {FEATURES_KEY: path.last_features[0].double().cpu().numpy()}
    return {}


def predicted_subtype(genotype: Mapping[str, Mapping[str, float]]) -> str | None:
    """WHO subtype from the calibrated probabilities (calls at 0.5); None without IDH."""
    from GliomaMTLLib.metrics.survival import who_subtype

    idh, codel = genotype.get("idh"), genotype.get("codel_1p19q")
    if not idh:
        return None
    call_idh = "mutant" if idh.get("mutant", 0.0) >= 0.5 else "wildtype"
    call_codel = None if not codel else ("codeleted" if codel.get("codeleted", 0.0) >= 0.5 else "intact")
    return who_subtype(call_idh, call_codel)


def genotype_survival_rows(results: Sequence[Any], tasks: Mapping[str, Sequence[str]], out_dir: str | Path,
                           penalizer: float = 0.1) -> list[dict[str, Any]]:
    """Survival rows (``model, n, events, c_index, n_train, note``) of evaluated cases with survival
    data and genotype features: overall and per true WHO subtype, from out-of-fold (5-fold) Cox
    risks; writes ``km.png`` (Kaplan-Meier by predicted subtype) into ``out_dir``. ``[]`` when no
    case has both."""
    from GliomaMTLLib.metrics.survival import cindex_by_group, crossval_cox_risk, plot_kaplan_meier, who_subtype

    have = [r for r in results if FEATURES_KEY in r.embedding and r.survival_days is not None and r.event is not None]
    if not have:
        return []
    name = "Cox (5-fold cross-validated) on genotype features"
    t = np.array([r.survival_days for r in have], float)
    e = np.array([int(r.event) for r in have])
    try:
        risk = crossval_cox_risk(np.stack([r.embedding[FEATURES_KEY] for r in have]), t, e, penalizer=penalizer)
    except Exception as exc:  # noqa: BLE001 - a table row says why instead of failing the evaluation
        return [{"model": name, "n": len(have), "events": int(e.sum()), "c_index": float("nan"), "n_train": None,
                 "note": f"Cox fit failed: {exc}"}]

    def label(r: Any, key: str) -> str | None:
        i = r.genotype_true.get(key, -1)
        return list(tasks[key])[i] if key in tasks and i >= 0 else None

    true_sub = [who_subtype(label(r, "idh"), label(r, "codel_1p19q")) for r in have]
    table = cindex_by_group(risk, t, e, true_sub)
    rows = [{"model": f"{name}: {'all cases' if g == 'all' else g}", "n": int(v["n"]), "events": int(v["n_events"]),
             "c_index": v["c_index"], "n_train": int(round(len(have) * 0.8)), "note": "by true subtype" if g != "all" else ""}
            for g, v in table.items()]
    probs = [{tk: {c: float(np.exp(v)) for c, v in zip(tasks[tk], r.genotype_logits[tk])} for tk in r.genotype_logits}
             for r in have]
    groups = [predicted_subtype(p) for p in probs]
    if any(g is not None for g in groups):
        plot_kaplan_meier(t, e, groups, str(Path(out_dir) / "km.png"))
    return rows
