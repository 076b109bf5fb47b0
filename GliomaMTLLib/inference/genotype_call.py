"""Genotype calls as every output shows them: the model card's status per task, then the call.

``model.json`` may hold, per genotype task (engineer G's genotype work fills these for new bundles)::

    "genotype_status": {"idh": {"available": false, "reason": "held-out AUC 0.48 [0.22, 0.71] includes 0.5"}},
    "abstain_band": [0.35, 0.65]

A task missing from ``genotype_status`` is available. Each task's *call* is one dict, the only
thing the terminal summary, ``report.json``, ``report.png``, ``summary.csv`` and the progress
protocol display::

    {"available": bool, "reason": str | None, "probabilities": {class: p} | None, "call": class | "uncertain" | None}

- not available: ``probabilities`` and ``call`` are None; it is shown as "not available (<reason>)",
  never as a probability;
- available: ``call`` is the most probable class, or ``"uncertain"`` when the band is set and
  that class's probability lies inside it (two-class tasks: the band is on P(second class)).

Imports nothing heavy.
"""

from __future__ import annotations

from typing import Any, Mapping

UNCERTAIN = "uncertain"
NOT_AVAILABLE = "not available"


def _bundle_error(message: str) -> Exception:
    from GliomaMTLLib.bundle import BundleError

    return BundleError(message)


def genotype_status(meta: Mapping[str, Any], where: str = "model.json") -> dict[str, dict[str, Any]]:
    """``model.json`` ``"genotype_status"``, checked: task -> ``{"available": bool, "reason": str | None}``.

    Raises:
        BundleError: an entry that is not ``{"available": bool, "reason": str}``.
    """
    raw = meta.get("genotype_status") or {}
    if not isinstance(raw, Mapping):
        raise _bundle_error(f"{where}: 'genotype_status' must be a mapping task -> {{available, reason}}, got {raw!r}")
    out: dict[str, dict[str, Any]] = {}
    for task, entry in raw.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("available", True), bool):
            raise _bundle_error(
                f"{where}: genotype_status of {task!r} must be {{\"available\": true|false, \"reason\": \"...\"}}, "
                f"got {entry!r}"
            )
        available = bool(entry.get("available", True))
        reason = entry.get("reason")
        if not available and not reason:
            raise _bundle_error(f"{where}: genotype_status of {task!r} is not available but gives no 'reason'")
        out[str(task)] = {"available": available, "reason": str(reason) if reason else None}
    return out


def abstain_band(meta: Mapping[str, Any], where: str = "model.json") -> tuple[float, float] | None:
    """``model.json`` ``"abstain_band"`` ``[low, high]`` within [0, 1], or None.

    Raises:
        BundleError: not two numbers with 0 <= low <= high <= 1.
    """
    band = meta.get("abstain_band")
    if band is None:
        return None
    try:
        low, high = (float(v) for v in band)
    except (TypeError, ValueError):
        raise _bundle_error(f"{where}: 'abstain_band' must be [low, high], got {band!r}") from None
    if not 0.0 <= low <= high <= 1.0:
        raise _bundle_error(f"{where}: 'abstain_band' must satisfy 0 <= low <= high <= 1, got {band!r}")
    return low, high


def call_task(probabilities: Mapping[str, float], band: tuple[float, float] | None = None) -> str:
    """Most probable class, or ``"uncertain"`` when ``band`` is set and the decision lies inside it."""
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    best, p_best = ranked[0]
    if band is not None:
        low, high = band
        # two classes: the band is on P(second class), so [0.35, 0.65] means "neither side above 0.65"
        p = probabilities[list(probabilities)[-1]] if len(probabilities) == 2 else p_best
        if low <= p <= high or (len(probabilities) > 2 and p_best <= high):
            return UNCERTAIN
    return best


def genotype_calls(
    probabilities: Mapping[str, Mapping[str, float]],
    meta: Mapping[str, Any] | None = None,
    tasks: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """One call per task (see the module docstring), in the order of ``tasks`` (else of ``probabilities``).

    Args:
        probabilities: task -> class -> calibrated probability (``Prediction.genotype``).
        meta: the bundle's ``model.json`` (None: every task available, no band).
        tasks: the model's tasks; a task with no probabilities and no status is left out.
    """
    meta = meta or {}
    status = genotype_status(meta)
    band = abstain_band(meta)
    order = list(tasks or {}) + [t for t in probabilities if t not in (tasks or {})]
    out: dict[str, dict[str, Any]] = {}
    for task in order:
        entry = status.get(task, {"available": True, "reason": None})
        probs = probabilities.get(task)
        if not entry["available"]:
            out[task] = {"available": False, "reason": entry["reason"], "probabilities": None, "call": None}
        elif probs:
            out[task] = {"available": True, "reason": entry["reason"],
                         "probabilities": {c: float(p) for c, p in probs.items()}, "call": call_task(probs, band)}
    return out


def withhold(calls: Mapping[str, Mapping[str, Any]], reason: str) -> dict[str, dict[str, Any]]:
    """Every task made not available for ``reason`` (e.g. no tumor found), keeping tasks already withheld."""
    return {
        task: dict(entry) if not entry["available"]
        else {"available": False, "reason": reason, "probabilities": None, "call": None}
        for task, entry in calls.items()
    }


def describe_call(entry: Mapping[str, Any]) -> str:
    """One phrase for one task: ``not available (<reason>)``, ``mutant 0.71 (wildtype 0.29)`` or
    ``uncertain (wildtype 0.52, mutant 0.48)``."""
    if not entry.get("available", True):
        return f"{NOT_AVAILABLE} ({entry.get('reason') or 'no reason given'})"
    probs = entry.get("probabilities") or {}
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    if not ranked:
        return NOT_AVAILABLE
    listed = ", ".join(f"{c} {p:.2f}" for c, p in ranked)
    if entry.get("call") == UNCERTAIN:
        return f"{UNCERTAIN} ({listed})"
    head, rest = ranked[0], ranked[1:]
    return f"{head[0]} {head[1]:.2f}" + (f" ({', '.join(f'{c} {p:.2f}' for c, p in rest)})" if rest else "")


def report_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The ``report.json`` form of a call: the call dict plus ``predicted`` (the call, kept for readers of
    report format 1) and ``shown`` (the phrase of :func:`describe_call`)."""
    out = dict(entry)
    out["predicted"] = entry.get("call") if entry.get("available", True) else NOT_AVAILABLE
    out["shown"] = describe_call(entry)
    return out
