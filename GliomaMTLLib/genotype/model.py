"""The radiological-feature genotype path: features -> standardization -> logistic regression per
task -> calibration, plus an out-of-distribution score. Stored as plain numbers in ``model.json``
(``"genotype_path"``; no pickle) and evaluated in torch, so gradients flow from the logits back to
the soft segmentation and the image.

``model.json`` layout (``kind`` ``"radiological_features/1"``)::

    "genotype_path": {
      "kind": "radiological_features/1",
      "features": [names...],              # GliomaMTLLib.genotype.features.FEATURE_NAMES (a subset/order)
      "sequences": ["t1n", "t1c", "t2w", "t2f"],   # the image channels, in the bundle's order
      "mean": [...], "scale": [...],       # standardization fitted on the training phantoms
      "tasks": {"idh": {"classes": ["wildtype", "mutant"],
                        "coef": [[...]], "intercept": [...],   # (1, F) binary or (K, F) multinomial
                        "calibration": {"method": "platt", "a": 1.0, "b": 0.0}},   # or temperature_bias (multinomial)
                "codel_1p19q": {..., "given": {"task": "idh", "class": "mutant"}}},   # conditional (below)
      "ood": {"mean": [...], "precision": [[...]], "threshold": 7.1, ...},
      "lesions": {"max_core_lesions": 2, ...},   # optional: more separate tumor cores = out of distribution
      "age": {"mean": 50.0, "scale": 14.0, "min": 18.0, "max": 90.0,   # optional: patient age as an input
              "tasks": {"idh": {... coef (1, F + 1): the features, then standardized age ...}},
              "status": {"idh": {"available": true, "reason": "..."}}}
    }

Logits returned by :meth:`FeatureGenotypePath.task_logits` are *calibrated* (Platt ``a z + b``
for a binary task, returned as ``[0, a z + b]``; ``z / T + bias`` for a multinomial one, or
``z / T`` in bundles fitted before the class offsets). The bundle's
``"calibration"`` temperatures belong to the CNN heads and are not applied to the tasks this path
serves.

With ``"age"``, a case whose patient age is known (and within ``min``..``max``, the training
phantoms' range) gets each task of ``age.tasks`` from a second regression fitted the same way on the
features plus the standardized age; without an age, or outside the range, the image-only regression
serves. Age is a clinical input the reader types in, never read from the images.

A task with ``"given"`` is conditional: its regression gives P(class 1 | parent task = ``class``),
and the path returns the logit of P(parent class) x P(class 1 | parent class). The adult 1p/19q task
is fitted this way on IDH-mutant phantoms only, as WHO CNS5 (2021) defines 1p/19q codeletion
within IDH-mutant tumours: a wildtype-looking tumour can never get a higher codeletion probability
than its IDH-mutant probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from GliomaMTLLib.genotype.features import feature_indices, radiological_features

KIND = "radiological_features/1"


@dataclass
class TaskRegression:
    """One task's logistic regression on standardized features and its calibration."""

    classes: list[str]
    coef: np.ndarray  # (1, F) binary, (K, F) multinomial
    intercept: np.ndarray  # (1,) or (K,)
    calibration: dict[str, Any] = field(default_factory=lambda: {"method": "none"})
    given: tuple[str, str] | None = None  # (parent task, parent class) of a conditional task

    def raw_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(..., F) standardized features -> (..., K) uncalibrated logits (binary: ``[0, w.z + b]``)."""
        w = torch.as_tensor(self.coef, dtype=z.dtype, device=z.device)
        b = torch.as_tensor(self.intercept, dtype=z.dtype, device=z.device)
        s = z @ w.T + b
        if w.shape[0] == 1:
            s = torch.cat([torch.zeros_like(s), s], dim=-1)
        return s

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        cal = self.calibration
        method = cal.get("method", "none")
        if method == "platt":
            return torch.stack([logits[..., 0], float(cal["a"]) * logits[..., 1] + float(cal["b"])], dim=-1)
        if method == "temperature":
            return logits / float(cal["temperature"])
        if method == "temperature_bias":
            bias = torch.as_tensor(cal["bias"], dtype=logits.dtype, device=logits.device)
            return logits / float(cal["temperature"]) + bias
        return logits

    def to_dict(self) -> dict[str, Any]:
        out = {"classes": list(self.classes), "coef": np.asarray(self.coef).tolist(),
               "intercept": np.asarray(self.intercept).tolist(), "calibration": dict(self.calibration)}
        if self.given is not None:
            out["given"] = {"task": self.given[0], "class": self.given[1]}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], n_features: int, where: str) -> "TaskRegression":
        coef = np.asarray(d["coef"], dtype=np.float64)
        intercept = np.asarray(d["intercept"], dtype=np.float64).ravel()
        classes = [str(c) for c in d["classes"]]
        k = 1 if len(classes) == 2 else len(classes)
        if coef.shape != (k, n_features) or intercept.shape != (k,):
            raise ValueError(f"{where}: coef {coef.shape} / intercept {intercept.shape} do not fit "
                             f"{len(classes)} classes and {n_features} features")
        cal = dict(d.get("calibration") or {"method": "none"})
        if cal.get("method") not in ("none", "platt", "temperature", "temperature_bias"):
            raise ValueError(f"{where}: unknown calibration method {cal.get('method')!r}")
        if cal["method"] == "temperature_bias":
            bias = cal.get("bias")
            if (not isinstance(bias, Sequence) or len(bias) != len(classes)
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bias)):
                raise ValueError(f"{where}.calibration: bias {bias!r} must give one finite offset for each of "
                                 f"the {len(classes)} classes")
        if cal["method"] in ("temperature", "temperature_bias"):
            t = cal.get("temperature")
            if not isinstance(t, (int, float)) or not math.isfinite(t) or not t > 0:
                raise ValueError(f"{where}.calibration: temperature must be a positive number, got {t!r}")
        given = d.get("given")
        if given is not None:
            if not isinstance(given, Mapping) or not {"task", "class"} <= set(given):
                raise ValueError(f"{where}.given: expected {{\"task\": ..., \"class\": ...}}, got {given!r}")
            if len(classes) != 2:
                raise ValueError(f"{where}.given: only a binary task can be conditional ({len(classes)} classes)")
            given = (str(given["task"]), str(given["class"]))
        return cls(classes, coef, intercept, cal, given)


def conditional_logits(parent: torch.Tensor, index: int, conditional: torch.Tensor) -> torch.Tensor:
    """Binary logits ``[0, logit(p)]`` of p = P(parent = ``index``) x P(class 1 | parent = ``index``),
    from (…, K) parent logits and (…, 2) conditional logits (computed in log space, so stable)."""
    log_p = torch.log_softmax(parent, dim=-1)[..., index] + torch.log_softmax(conditional, dim=-1)[..., 1]
    log_p = torch.clamp(log_p, max=-1e-7)
    logit = log_p - torch.log(-torch.expm1(log_p))
    return torch.stack([torch.zeros_like(logit), logit], dim=-1)


@dataclass
class OodModel:
    """Mahalanobis distance of standardized features to the training phantoms."""

    mean: np.ndarray  # (F,)
    precision: np.ndarray  # (F, F)
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    def distance(self, z: np.ndarray) -> np.ndarray:
        """(N, F) or (F,) standardized features -> Mahalanobis distance(s)."""
        d = np.atleast_2d(np.asarray(z, dtype=np.float64)) - self.mean
        m = np.einsum("ni,ij,nj->n", d, self.precision, d)
        out = np.sqrt(np.maximum(m, 0.0))
        return out if np.ndim(z) == 2 else out[0]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "precision": self.precision.tolist(), "threshold": float(self.threshold), **self.info}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OodModel":
        info = {k: v for k, v in d.items() if k not in ("mean", "precision", "threshold")}
        return cls(np.asarray(d["mean"], float), np.asarray(d["precision"], float), float(d["threshold"]), info)


@dataclass
class AgeInput:
    """Patient age as a genotype input: its standardization, the range of the training phantoms,
    and one regression per task on (features, standardized age) with its held-out status."""

    mean: float
    scale: float
    low: float
    high: float
    tasks: dict[str, TaskRegression]
    status: dict[str, dict[str, Any]] = field(default_factory=dict)

    def covers(self, age: float) -> bool:
        return self.low <= age <= self.high

    def standardize(self, age: float) -> float:
        return (age - self.mean) / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "scale": self.scale, "min": self.low, "max": self.high,
                "tasks": {t: r.to_dict() for t, r in self.tasks.items()}, "status": dict(self.status)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], n_features: int, known_tasks: set[str], where: str) -> "AgeInput":
        try:
            mean, scale, low, high = (float(d[k]) for k in ("mean", "scale", "min", "max"))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: needs numbers mean, scale, min and max, got {dict(d)!r}") from None
        if not (scale > 0 and low <= high):
            raise ValueError(f"{where}: needs scale > 0 and min <= max, got scale {scale}, range {low}..{high}")
        unknown = set(d.get("tasks") or {}) - known_tasks
        if unknown:
            raise ValueError(f"{where}.tasks: {sorted(unknown)} are not tasks of the path ({sorted(known_tasks)})")
        tasks = {t: TaskRegression.from_dict(r, n_features + 1, f"{where}.tasks.{t}") for t, r in (d.get("tasks") or {}).items()}
        for t, reg in tasks.items():
            if reg.given is not None and reg.given[0] not in tasks:
                raise ValueError(f"{where}.tasks.{t}.given: its parent {reg.given[0]!r} has no age regression")
        return cls(mean, scale, low, high, tasks, dict(d.get("status") or {}))


class FeatureGenotypePath(torch.nn.Module):
    """Soft segmentation + image + location maps of one crop -> calibrated logits per task.

    Args:
        spec: the ``"genotype_path"`` dict of ``model.json``.
        sequences: the image channels' sequence keys.

    Raises:
        ValueError: on a malformed spec (the message names the key).
    """

    def __init__(self, spec: Mapping[str, Any], sequences: Sequence[str]) -> None:
        super().__init__()
        where = "genotype_path"
        if spec.get("kind") != KIND:
            raise ValueError(f"{where}: kind must be {KIND!r}, got {spec.get('kind')!r}")
        names = [str(n) for n in spec["features"]]
        self._index = feature_indices(names, where)
        self.feature_names = names
        self.sequences = tuple(sequences)
        mean = np.asarray(spec["mean"], float)
        scale = np.asarray(spec["scale"], float)
        if mean.shape != (len(names),) or scale.shape != (len(names),) or np.any(scale <= 0):
            raise ValueError(f"{where}: mean/scale must be {len(names)} numbers, scale > 0")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.tasks = {t: TaskRegression.from_dict(d, len(names), f"{where}.tasks.{t}") for t, d in spec["tasks"].items()}
        for t, reg in self.tasks.items():
            if reg.given is None:
                continue
            parent = self.tasks.get(reg.given[0])
            if parent is None or parent.given is not None or reg.given[1] not in parent.classes:
                raise ValueError(f"{where}.tasks.{t}.given: {reg.given[0]!r} must be an unconditional task of this path "
                                 f"with class {reg.given[1]!r}")
        self.ood = OodModel.from_dict(spec["ood"]) if spec.get("ood") else None
        self.age = AgeInput.from_dict(spec["age"], len(names), set(self.tasks), f"{where}.age") if spec.get("age") else None
        #: Separate tumor cores (GliomaMTLLib.inference.lesions) beyond which a case is out of
        #: distribution (at most 5% of the development phantoms exceed it); None: not counted.
        self.max_core_lesions: int | None = None
        lesions = spec.get("lesions")
        if lesions is not None:
            value = lesions.get("max_core_lesions") if isinstance(lesions, Mapping) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{where}.lesions.max_core_lesions must be an integer >= 1, got {value!r}")
            self.max_core_lesions = value

    def features(self, probs: torch.Tensor, image: torch.Tensor, depth: torch.Tensor, position: torch.Tensor,
                 spacing_zyx: Sequence[float]) -> torch.Tensor:
        """(F,) named features (:attr:`feature_names`) of one crop."""
        full = radiological_features(probs, image, depth, position, spacing_zyx, self.sequences)
        return full[self._index]

    def standardize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean.to(feats)) / self.scale.to(feats)

    def uses_age(self, age: float | None) -> bool:
        """Whether :meth:`task_logits` uses ``age`` (the path has an age model and the age lies in its range)."""
        return age is not None and self.age is not None and self.age.covers(age)

    def task_logits(self, feats: torch.Tensor, age: float | None = None) -> dict[str, torch.Tensor]:
        """(…, F) raw features (and the patient's age in years, if known) -> task -> (…, K) calibrated
        logits. An age the path cannot use (:meth:`uses_age` false) is ignored."""
        z = self.standardize(feats)
        regs = dict(self.tasks)
        if self.uses_age(age):
            assert self.age is not None
            z_age = torch.cat([z, torch.full_like(z[..., :1], self.age.standardize(float(age)))], dim=-1)
            with_age = {t: self.age.tasks[t] for t in self.age.tasks}
        else:
            z_age, with_age = z, {}
        out = {t: reg.calibrate(reg.raw_logits(z_age if t in with_age else z))
               for t, reg in {**regs, **with_age}.items()}
        for t, reg in {**regs, **with_age}.items():
            if reg.given is not None:
                parent, cls = reg.given
                out[t] = conditional_logits(out[parent], self.tasks[parent].classes.index(cls), out[t])
        return out

    def forward(self, probs: torch.Tensor, image: torch.Tensor, depth: torch.Tensor, position: torch.Tensor,
                spacing_zyx: Sequence[float]) -> dict[str, torch.Tensor]:
        return self.task_logits(self.features(probs, image, depth, position, spacing_zyx))

    def ood_distance(self, feats: torch.Tensor | np.ndarray) -> float:
        """Mahalanobis distance of one case's raw features to the training set (NaN without an OOD model)."""
        if self.ood is None:
            return math.nan
        f = torch.as_tensor(np.asarray(feats.detach().cpu() if isinstance(feats, torch.Tensor) else feats, np.float64))
        z = ((f - self.mean.double()) / self.scale.double()).numpy()
        return float(self.ood.distance(z))
