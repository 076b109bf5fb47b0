"""Task weighting strategies: modules that combine a dict of task losses into one scalar.

Task keys are ``"seg"`` (ground-truth + weak segmentation), ``"dist"`` (distance map) and the
genotype task names (``"idh"``, ``"codel_1p19q"``, ``"braf"``). Each strategy's forward takes
``losses: {task: scalar tensor}`` and optionally ``active: {task: bool}``, False where the
batch held no label for that task (its loss is then an exact, graph-connected 0).

* `FixedWeighting` -- sum_i w_i L_i. Paper 003: ``{"seg": 1.0, "braf": 0.3}``.
* `LinearWeighting` -- paper 004's "linear weighting" of its two decoders,
  L = lambda1 L_mask + lambda2 L_dist with lambda1 = lambda2 = 1 (its Model II used 1 and 0.1
  and segmented worse). It is a fixed linear combination, with 004's defaults.
* `UncertaintyWeighting` -- paper 000, eq. 13 (after Kendall et al.):
  L = sum_i L_i / (2 sigma_i^2) + log(prod_i sigma_i), sigma_i learnable, initialised to 1.
  Parameterised as s_i = log sigma_i (init 0), so L = sum_i 0.5 exp(-2 s_i) L_i + s_i.
  Note 000 uses 1/(2 sigma^2) for the classification term too (Kendall's paper has 1/sigma^2
  for classification); we follow 000. A task inactive in the batch contributes neither term,
  otherwise its log sigma would be pushed down by batches that hold no label for it.
* `DynamicWeighting` -- paper 001, eq. 9: L = L_cls + (L_seg / (L_cls + L_seg)) L_seg, where
  L_seg sums the segmentation-side losses (``seg``, ``dist``) and L_cls the genotype losses.
  001 introduces k = L_seg/(L_cls + L_seg) as "the parameter to balance the segmentation error
  and classification error" in L = L_cls + k L_seg (eq. 8): a weight, so by default k is
  detached (treated as a constant in backprop). Differentiating through k instead
  (``detach=False``) gives dL/dL_cls = 1 - k^2, which starves the classifier exactly when the
  segmentation loss dominates, an artefact not described in the paper. The value of L is the
  same either way.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn as nn

WEIGHTING_TYPES: tuple[str, ...] = ("fixed", "linear", "uncertainty", "dynamic")
SEG_SIDE_TASKS: tuple[str, ...] = ("seg", "dist")


def _is_active(active: Mapping[str, bool] | None, task: str) -> bool:
    return True if active is None else bool(active.get(task, True))


def _zero_like(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return sum(l * 0.0 for l in losses.values())  # type: ignore[return-value]


class FixedWeighting(nn.Module):
    """L = sum_i w_i L_i with constant weights (unlisted tasks: ``default``).

    Args:
        weights: task -> weight.
        default: weight of a task not in ``weights``.
        tasks: if given, the allowed task names (a weight for another name raises ValueError).
    """

    def __init__(self, weights: Mapping[str, float] | None = None, default: float = 1.0,
                 tasks: Iterable[str] | None = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        if tasks is not None:
            unknown = sorted(set(weights) - set(tasks))
            if unknown:
                raise ValueError(f"weights given for unknown task(s) {unknown}; tasks: {sorted(tasks)}")
        for task, w in weights.items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
                raise ValueError(f"weight of task {task!r} must be a number >= 0, got {w!r}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.default = float(default)

    def weight(self, task: str) -> float:
        return self.weights.get(task, self.default)

    def forward(self, losses: Mapping[str, torch.Tensor], active: Mapping[str, bool] | None = None) -> torch.Tensor:
        return sum((self.weight(t) * l for t, l in losses.items()), _zero_like(losses))


class LinearWeighting(FixedWeighting):
    """Paper 004: L = lambda1 L_mask + lambda2 L_dist (lambda1 = lambda2 = 1 by default)."""

    def __init__(self, weights: Mapping[str, float] | None = None, default: float = 1.0,
                 tasks: Iterable[str] | None = None) -> None:
        merged = {"seg": 1.0, "dist": 1.0}
        if tasks is not None:
            merged = {k: v for k, v in merged.items() if k in set(tasks)}
        merged.update(weights or {})
        super().__init__(merged, default=default, tasks=tasks)


class UncertaintyWeighting(nn.Module):
    """Paper 000: L = sum_i L_i / (2 sigma_i^2) + log sigma_i, learnable log sigma_i (sigma_i = 1 at init).

    Args:
        tasks: task names (one learnable ``log_sigma`` each).
    """

    def __init__(self, tasks: Iterable[str]) -> None:
        super().__init__()
        tasks = list(tasks)
        if not tasks:
            raise ValueError("uncertainty weighting needs at least one task")
        self.log_sigma = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in tasks})

    def sigmas(self) -> dict[str, float]:
        return {t: float(p.detach().exp()) for t, p in self.log_sigma.items()}

    def forward(self, losses: Mapping[str, torch.Tensor], active: Mapping[str, bool] | None = None) -> torch.Tensor:
        unknown = sorted(set(losses) - set(self.log_sigma.keys()))
        if unknown:
            raise ValueError(f"uncertainty weighting has no sigma for task(s) {unknown}")
        total = _zero_like(losses)
        for task, loss in losses.items():
            if not _is_active(active, task):
                total = total + loss * 0.0
                continue
            s = self.log_sigma[task]
            total = total + 0.5 * torch.exp(-2.0 * s) * loss + s
        return total


class DynamicWeighting(nn.Module):
    """Paper 001: L = L_cls + (L_seg / (L_cls + L_seg)) * L_seg.

    Args:
        seg_tasks: task keys summed into L_seg (default ``("seg", "dist")``); all other keys are
            summed into L_cls.
        detach: treat the ratio as a constant weight in backprop (default; see module docstring).
        eps: added to the denominator.
    """

    def __init__(self, seg_tasks: Iterable[str] = SEG_SIDE_TASKS, detach: bool = True, eps: float = 1e-8) -> None:
        super().__init__()
        self.seg_tasks = tuple(seg_tasks)
        self.detach = bool(detach)
        self.eps = float(eps)

    def ratio(self, l_cls: torch.Tensor, l_seg: torch.Tensor) -> torch.Tensor:
        return l_seg / (l_cls + l_seg + self.eps)

    def forward(self, losses: Mapping[str, torch.Tensor], active: Mapping[str, bool] | None = None) -> torch.Tensor:
        zero = _zero_like(losses)
        l_seg = sum((l for t, l in losses.items() if t in self.seg_tasks), zero)
        l_cls = sum((l for t, l in losses.items() if t not in self.seg_tasks), zero)
        k = self.ratio(l_cls, l_seg)
        if self.detach:
            k = k.detach()
        return l_cls + k * l_seg


def build_weighting(config: str | Mapping | None, tasks: Iterable[str]) -> nn.Module:
    """Build a weighting module from ``"fixed"`` or ``{"type": ..., **params}``.

    Params: fixed/linear: ``weights`` (task -> float), ``default``; uncertainty: none;
    dynamic: ``detach`` (bool), ``seg_tasks`` (list), ``eps``.

    Raises:
        ValueError: unknown type or parameter.
    """
    tasks = list(tasks)
    if config is None:
        config = {"type": "fixed"}
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, Mapping):
        raise ValueError(f"weighting must be a name or a dict with a 'type', got {config!r}")
    params = dict(config)
    kind = params.pop("type", None)
    allowed = {
        "fixed": {"weights", "default"},
        "linear": {"weights", "default"},
        "uncertainty": set(),
        "dynamic": {"detach", "seg_tasks", "eps"},
    }
    if kind not in allowed:
        raise ValueError(f"unknown weighting type {kind!r}; expected one of {WEIGHTING_TYPES}")
    unknown = sorted(set(params) - allowed[kind])
    if unknown:
        raise ValueError(f"weighting {kind!r}: unknown parameter(s) {unknown}; allowed: {sorted(allowed[kind])}")
    if kind == "fixed":
        return FixedWeighting(tasks=tasks, **params)
    if kind == "linear":
        return LinearWeighting(tasks=tasks, **params)
    if kind == "uncertainty":
        return UncertaintyWeighting(tasks)
    if "detach" in params and not isinstance(params["detach"], bool):
        raise ValueError(f"weighting 'dynamic': detach must be true or false, got {params['detach']!r}")
    return DynamicWeighting(**params)
