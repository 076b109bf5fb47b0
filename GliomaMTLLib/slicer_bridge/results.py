"""Reading the engine's JSON outputs into what the panel shows, with a clear message for any gap.

``report.json`` (``gliomamtl predict``) gives per genotype task the class probabilities and the
model card's status of that task (``available`` / ``reason``); ``explain.json``
(``gliomamtl explain``) the explained class and the convergence ``delta``. A file written by
another engine version may miss a key: the panel then says which key of which file, instead of
failing inside a table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CALIBRATION_CAVEAT = (
    "Probabilities are calibrated on synthetic validation phantoms only; they are not "
    "calibrated for patients. Research use, not for clinical decisions."
)


class ResultError(ValueError):
    """An engine output is missing, unreadable, or lacks a key the panel needs."""


@dataclass(frozen=True)
class GenotypeRow:
    """One line of the genotype table."""

    task: str
    label: str  # class name, or "not available"
    probability: float | None  # None when the task is not available
    predicted: bool
    note: str = ""

    @property
    def probability_text(self) -> str:
        return "-" if self.probability is None else f"{self.probability:.2f}"


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Load a JSON object, naming ``what`` and the file in any error.

    Raises:
        ResultError: missing file, invalid JSON, or not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise ResultError(f"{what} {path} was not written")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{what} {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ResultError(f"{what} {path} holds a {type(data).__name__}, expected a JSON object")
    return data


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ResultError(f"{where} has no '{key}' entry (written by an incompatible engine version?)")
    value = data[key]
    if not isinstance(value, kind):
        raise ResultError(f"{where}: '{key}' is a {type(value).__name__}, expected a {kind.__name__}")
    return value


def genotype_rows(report: dict[str, Any], where: str = "report.json") -> list[GenotypeRow]:
    """Rows of the genotype table: every class of every task, or one "not available" row per task
    the model card marks as not learned (with its reason).

    Raises:
        ResultError: no ``genotype`` object, or a task without probabilities while available.
    """
    rows: list[GenotypeRow] = []
    genotype = _require(report, "genotype", dict, where)
    for task, entry in genotype.items():
        if not isinstance(entry, dict):
            raise ResultError(f"{where}: genotype task '{task}' is not an object")
        if entry.get("available") is False:
            reason = str(entry.get("reason") or "the model card marks this task as not learned")
            rows.append(GenotypeRow(task, "not available", None, False, reason))
            continue
        probs = _require(entry, "probabilities", dict, f"{where} genotype '{task}'")
        try:
            probs = {str(k): float(v) for k, v in probs.items()}
        except (TypeError, ValueError) as exc:
            raise ResultError(f"{where} genotype '{task}': a probability is not a number") from exc
        predicted = entry.get("call") or entry.get("predicted") or (max(probs, key=probs.get) if probs else "")
        note = str(entry.get("note") or entry.get("status") or "")
        for cls, p in sorted(probs.items(), key=lambda kv: -kv[1]):
            rows.append(GenotypeRow(task, cls, p, cls == predicted, note))
    return rows


def volume_rows(report: dict[str, Any], where: str = "report.json") -> list[tuple[str, float]]:
    """``(region or label, ml)`` rows, in the report's order.

    Raises:
        ResultError: no ``volumes_ml`` object or a value that is not a number.
    """
    volumes = _require(report, "volumes_ml", dict, where)
    try:
        return [(str(k), float(v)) for k, v in volumes.items()]
    except (TypeError, ValueError) as exc:
        raise ResultError(f"{where}: a tumor volume is not a number") from exc


def warnings_of(report: dict[str, Any]) -> list[str]:
    """The report's warnings (an absent list means none)."""
    value = report.get("warnings") or []
    return [str(w) for w in value] if isinstance(value, list) else [str(value)]


def label_names(report: dict[str, Any]) -> dict[int, str]:
    """Label value -> name actually written (the report's ``labels`` key; default 1 NCR, 2 ED, 3 ET)."""
    from GliomaMTLLib.labels import LABEL_NAMES

    labels = report.get("labels")
    if not isinstance(labels, dict) or not labels:
        return dict(LABEL_NAMES)
    try:
        return {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError) as exc:
        raise ResultError(f"report.json: label key {sorted(labels)} holds a value that is not a number") from exc


def model_line(report: dict[str, Any]) -> str:
    """``name version on device[, test-time flips]`` of the model that made the report."""
    model = report.get("model") if isinstance(report.get("model"), dict) else {}
    text = f"{model.get('name', '?')} {model.get('version', '?')}"
    device = report.get("device")
    text = f"{text} on {device}" if device else text
    return f"{text}, test-time flips" if model.get("test_time_flips") is True else text


def output_file(report: dict[str, Any], kind: str, default: str | os.PathLike) -> Path:
    """Path of an output (``seg``, ``seg_nrrd``, ...) as the report lists it, else ``default``."""
    files = report.get("output_files")
    if isinstance(files, dict) and files.get(kind):
        return Path(files[kind])
    return Path(default)


@dataclass(frozen=True)
class ExplainSummary:
    """What the explanation panel shows."""

    task: str
    explained_class: str
    probability: float | None
    delta: float
    steps: int | None
    baseline: str
    shares: dict[str, float]
    relative_delta: float | None = None
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        prob = "" if self.probability is None else f" (p = {self.probability:.2f})"
        share = ", ".join(f"{k} {v:.0%}" for k, v in self.shares.items())
        relative = "" if self.relative_delta is None else f" ({self.relative_delta:.1%} of the explained change)"
        return (f"{self.task}: {self.explained_class}{prob}; completeness delta {self.delta:.3g}{relative}"
                + (f" with {self.steps} steps" if self.steps else "")
                + (f"; baseline {self.baseline}" if self.baseline else "")
                + (f"; share per sequence: {share}" if share else "")
                + "".join(f"\nWarning: {w}" for w in self.warnings))


def explain_summary(data: dict[str, Any], where: str = "explain.json") -> ExplainSummary:
    """The summary of ``explain.json``.

    Raises:
        ResultError: no ``delta`` (the convergence check the panel must show) or no ``task``.
    """
    task = str(_require(data, "task", str, where))
    delta = data.get("delta")
    if not isinstance(delta, (int, float)):
        raise ResultError(f"{where} has no numeric 'delta' entry (the completeness error of the explanation)")
    prob = data.get("probability")
    shares_raw = data.get("sequence_share") or data.get("attribution_share") or {}
    shares = {str(k): float(v) for k, v in shares_raw.items() if isinstance(v, (int, float))} \
        if isinstance(shares_raw, dict) else {}
    steps = data.get("steps")
    baseline = data.get("baseline")
    return ExplainSummary(
        task=task,
        explained_class=str(data.get("class_explained") or data.get("class") or task),
        probability=float(prob) if isinstance(prob, (int, float)) else None,
        delta=float(delta),
        steps=int(steps) if isinstance(steps, int) else None,
        baseline=baseline if isinstance(baseline, str) else (json.dumps(baseline) if baseline is not None else ""),
        shares=shares,
        relative_delta=float(data["relative_delta"]) if isinstance(data.get("relative_delta"), (int, float)) else None,
        warnings=warnings_of(data),
    )


def heatmap_files(data: dict[str, Any], folder: str | os.PathLike, case_id: str, task: str,
                  sequences: list[str]) -> dict[str, Path]:
    """Sequence (or ``combined``) -> heatmap file that exists: from ``explain.json``'s ``files``
    (keys ``ig_<sequence>``) when it lists them, else by the CLI's naming
    ``<case>_ig_<task>_<sequence>.nii.gz``."""
    folder = Path(folder)
    listed = data.get("files") or data.get("outputs") or data.get("heatmaps")
    found: dict[str, Path] = {}
    if isinstance(listed, dict):
        for key, value in listed.items():
            path = Path(value) if Path(value).is_absolute() else folder / value
            if str(value).endswith((".nii.gz", ".nii", ".nrrd")) and path.is_file():
                found[str(key).removeprefix("ig_")] = path
    for seq in [*sequences, "combined"]:
        path = folder / f"{case_id}_ig_{task}_{seq}.nii.gz"
        if seq not in found and path.is_file():
            found[seq] = path
    return found
