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
                        "calibration": {"method": "platt", "a": 1.0, "b": 0.0}},   # or temperature
                "codel_1p19q": {..., "given": {"task": "idh", "class": "mutant"}}},   # conditional (below)
      "ood": {"mean": [...], "precision": [[...]], "threshold": 7.1, ...}
    }

Logits returned by :meth:`FeatureGenotypePath.task_logits` are *calibrated* (Platt ``a z + b``
for a binary task, returned as ``[0, a z + b]``; ``z / T`` for a multinomial one). The bundle's
``"calibration"`` temperatures belong to the CNN heads and are not applied to the tasks this path
serves.

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

from GliomaMTLLib.genotype.features import FEATURE_NAMES, radiological_features

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
        if cal.get("method") not in ("none", "platt", "temperature"):
            raise ValueError(f"{where}: unknown calibration method {cal.get('method')!r}")
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
        unknown = [n for n in names if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"{where}: unknown feature(s) {unknown}")
        self.feature_names = names
        self.sequences = tuple(sequences)
        self._index = [FEATURE_NAMES.index(n) for n in names]
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

    def features(self, probs: torch.Tensor, image: torch.Tensor, depth: torch.Tensor, position: torch.Tensor,
                 spacing_zyx: Sequence[float]) -> torch.Tensor:
        """(F,) named features (:attr:`feature_names`) of one crop."""
        full = radiological_features(probs, image, depth, position, spacing_zyx, self.sequences)
        return full[self._index]

    def standardize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean.to(feats)) / self.scale.to(feats)

    def task_logits(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """(…, F) raw features -> task -> (…, K) calibrated logits."""
        z = self.standardize(feats)
        out = {t: reg.calibrate(reg.raw_logits(z)) for t, reg in self.tasks.items()}
        for t, reg in self.tasks.items():
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
