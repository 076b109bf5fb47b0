"""`MultiTaskCriterion` and `build_loss`: the whole training objective from a recipe dict.

Recipe (``training/configs/<recipe>.yaml`` -> ``loss:``), every key optional except ``seg``::

    seg: {type: dicefocal, gamma: 2.0, weight: [0.1, 1.0, 1.0, 1.0]}   # or just "dicece"
    seg_region: null          # or {region: TC, loss: bce, class_weight: [1, 3]} (002, 1-sequence input)
    weak: null                # or {loss: bce | dice | dicebce, lambda: null, class_weight: [w_bg, w_wt]}
    genotype: [idh]           # or {idh: {weight: [1.0, 1.6], label_smoothing: 0.0}}
    dist: null                # or {weight: 1.0}: the 004 distance-map MSE, scaled by weight
    weighting: fixed          # or {type: fixed, weights: {seg: 1.0, braf: 0.3}} (003)
                              #    {type: linear} (004), {type: uncertainty} (000),
                              #    {type: dynamic, detach: true} (001)

Batch contract (``forward(outputs, batch)``):

* ``label``: (B, z, y, x) int64 (or (B, 1, z, y, x)), expert labels 0..3; ``has_label``: (B,) bool,
  False for samples without an expert mask (default: all True when ``label`` is present).
* ``weak_label``: (B, z, y, x) binary whole-tumor masks from a pretrained model (002), with
  ``has_weak_label``: (B,) bool (default: ``~has_label``).
* ``genotype``: {task: (B,) int64}, -1 = unknown (a missing task counts as all unknown).
* ``dist``: (B, R, z, y, x) float target in [0, 1] (`distance_map_target`), with optional
  ``has_dist``: (B,) bool (default: ``has_label``).

Segmentation term (paper 002, eq. 1): L = L_C + lambda L_Sgt + (1 - lambda) L_Sweak with
lambda = 1 for samples with an expert mask and 0 for samples with only a weak mask. With
``weak.lambda: null`` (default) that per-sample rule is applied literally: L_Sgt is averaged over
the samples with expert masks, L_Sweak over the weakly labelled ones, and
seg = (n_gt L_Sgt + n_weak L_Sweak) / (n_gt + n_weak). A number instead mixes the two batch
means globally: seg = lambda L_Sgt + (1 - lambda) L_Sweak. L_Sweak is a binary loss on
P(WT) = 1 - p0 against the weak mask. A sample with neither label contributes nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from GliomaMTLLib.labels import GENOTYPE_TASKS
from GliomaMTLLib.losses.distance import DistanceMapLoss
from GliomaMTLLib.losses.genotype import MaskedCrossEntropy
from GliomaMTLLib.losses.segmentation import RegionBinaryLoss, make_seg_loss
from GliomaMTLLib.losses.weighting import UncertaintyWeighting, build_weighting
from GliomaMTLLib.nets.config import default_regions

RECIPE_KEYS = ("seg", "seg_region", "weak", "genotype", "dist", "weighting")


def _graph_zero(t: torch.Tensor) -> torch.Tensor:
    """A 0 that keeps ``t``'s autograd graph (zero gradient), so backward() always works."""
    return t.sum() * 0.0 + 0.0  # "+ 0.0" turns -0.0 into 0.0


def _bool_flags(batch: Mapping[str, Any], key: str, default: torch.Tensor) -> torch.Tensor:
    value = batch.get(key)
    if value is None:
        return default
    flags = torch.as_tensor(value, device=default.device).bool().reshape(-1)
    if flags.shape != default.shape:
        raise ValueError(f"batch[{key!r}] must have one flag per sample ({default.numel()}), got shape {tuple(flags.shape)}")
    return flags


class MultiTaskCriterion(nn.Module):
    """Segmentation (+ weak labels) (+ distance map) (+ genotype) losses, combined by a weighting.

    Use `build_loss` to make one from a recipe dict; see the module docstring for the batch keys.

    Returns (forward):
        ``(total, parts)``: the scalar to backpropagate and a dict of floats: ``seg``,
        ``seg_gt``, ``seg_weak``, ``dist``, each genotype task, ``total`` and, for uncertainty
        weighting, ``sigma_<task>``.
    """

    def __init__(
        self,
        seg_loss: nn.Module,
        weighting: nn.Module,
        weak_loss: nn.Module | None = None,
        weak_lambda: float | None = None,
        genotype_losses: Mapping[str, nn.Module] | None = None,
        dist_loss: nn.Module | None = None,
        dist_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.seg_loss = seg_loss
        self.weak_loss = weak_loss
        self.weak_lambda = weak_lambda
        self.genotype_losses = nn.ModuleDict(dict(genotype_losses or {}))
        self.dist_loss = dist_loss
        self.dist_weight = float(dist_weight)
        self.weighting = weighting

    @property
    def tasks(self) -> list[str]:
        """Task keys handed to the weighting."""
        return ["seg"] + (["dist"] if self.dist_loss is not None else []) + list(self.genotype_losses)

    def _segmentation(self, seg: torch.Tensor, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float], bool]:
        b = seg.shape[0]
        label = batch.get("label")
        has_label = _bool_flags(batch, "has_label", torch.full((b,), label is not None, device=seg.device))
        if label is None and bool(has_label.any()):
            raise ValueError("batch['has_label'] flags samples but batch has no 'label'")
        weak = batch.get("weak_label") if self.weak_loss is not None else None
        has_weak = _bool_flags(batch, "has_weak_label", ~has_label if weak is not None else torch.zeros_like(has_label))
        if weak is None and bool(has_weak.any()) and self.weak_loss is not None:
            raise ValueError("batch['has_weak_label'] flags samples but batch has no 'weak_label'")
        n_gt, n_weak = int(has_label.sum()), int(has_weak.sum())
        l_gt = self.seg_loss(seg[has_label], label[has_label]) if n_gt else _graph_zero(seg)
        l_weak = self.weak_loss(seg[has_weak], weak[has_weak]) if n_weak else _graph_zero(seg)
        if self.weak_lambda is None:
            n = n_gt + n_weak
            total = (n_gt * l_gt + n_weak * l_weak) / n if n else _graph_zero(seg)
        else:
            total = self.weak_lambda * l_gt + (1.0 - self.weak_lambda) * l_weak
        parts = {"seg_gt": float(l_gt.detach()), "seg_weak": float(l_weak.detach())}
        return total, parts, (n_gt + n_weak) > 0

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        seg = outputs["seg"]
        losses: dict[str, torch.Tensor] = {}
        active: dict[str, bool] = {}
        losses["seg"], parts, active["seg"] = self._segmentation(seg, batch)

        if self.dist_loss is not None:
            if "dist" not in outputs:
                raise ValueError("the loss recipe has a distance term but the network output has no 'dist'")
            pred = outputs["dist"]
            target = batch.get("dist")
            default = _bool_flags(batch, "has_label", torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device))
            has = _bool_flags(batch, "has_dist", default) if target is not None else torch.zeros_like(default)
            if bool(has.any()):
                losses["dist"] = self.dist_weight * self.dist_loss(pred[has], target[has])
            else:
                losses["dist"] = _graph_zero(pred)
            active["dist"] = bool(has.any())

        genotype_targets = batch.get("genotype") or {}
        for task, loss_fn in self.genotype_losses.items():
            logits = outputs.get("genotype", {}).get(task)
            if logits is None:
                raise ValueError(f"the loss recipe has genotype task {task!r} but the network does not output it")
            target = genotype_targets.get(task)
            if target is None:
                target = torch.full((logits.shape[0],), -1, dtype=torch.long)
            target = torch.as_tensor(target, device=logits.device).long().reshape(-1)
            losses[task] = loss_fn(logits, target)
            active[task] = bool((target >= 0).any())

        total = self.weighting(losses, active)
        parts.update({k: float(v.detach()) for k, v in losses.items()})
        parts["total"] = float(total.detach())
        if isinstance(self.weighting, UncertaintyWeighting):
            parts.update({f"sigma_{k}": v for k, v in self.weighting.sigmas().items()})
        return total, parts


def _as_dict(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"type": value}
    if not isinstance(value, Mapping):
        raise ValueError(f"loss recipe: {name!r} must be a name or a dict, got {value!r}")
    return dict(value)


def _check_keys(name: str, params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"loss recipe: {name}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def build_loss(config: Mapping[str, Any], num_seg_classes: int = 4) -> MultiTaskCriterion:
    """Build the multi-task criterion from a recipe dict (see the module docstring).

    Args:
        config: the recipe's ``loss`` section.
        num_seg_classes: seg labels of the network (regions are derived from it).

    Raises:
        ValueError: unknown keys, loss types, tasks, weighting types, or bad values, naming them.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"loss recipe must be a dict, got {type(config).__name__}")
    _check_keys("top level", config, set(RECIPE_KEYS))
    if "seg" not in config:
        raise ValueError("loss recipe: 'seg' (the segmentation loss) is required, e.g. {'type': 'dicece'}")
    regions = default_regions(num_seg_classes)

    seg_cfg = _as_dict("seg", config["seg"])
    seg_type = seg_cfg.pop("type", None)
    seg_loss: nn.Module = make_seg_loss(seg_type, **seg_cfg)

    region_cfg = config.get("seg_region")
    if region_cfg is not None:
        region_cfg = _as_dict("seg_region", region_cfg)
        _check_keys("seg_region", region_cfg, {"region", "loss", "class_weight"})
        region = region_cfg.get("region")
        if region not in regions:
            raise ValueError(f"loss recipe: seg_region.region must be one of {sorted(regions)}, got {region!r}")
        seg_loss = RegionBinaryLoss(regions[region], mode=region_cfg.get("loss", "bce"),
                                    class_weight=region_cfg.get("class_weight"), from_label_map=True)

    weak_loss, weak_lambda = None, None
    weak_cfg = config.get("weak")
    if weak_cfg is not None:
        weak_cfg = _as_dict("weak", weak_cfg) if not isinstance(weak_cfg, bool) else {}
        _check_keys("weak", weak_cfg, {"loss", "lambda", "class_weight"})
        weak_lambda = weak_cfg.get("lambda")
        if weak_lambda is not None and (isinstance(weak_lambda, bool) or not isinstance(weak_lambda, (int, float))
                                        or not 0.0 <= weak_lambda <= 1.0):
            raise ValueError(f"loss recipe: weak.lambda must be null or a number in [0, 1], got {weak_lambda!r}")
        weak_loss = RegionBinaryLoss(regions["WT"], mode=weak_cfg.get("loss", "dicebce"),
                                     class_weight=weak_cfg.get("class_weight"))
        weak_lambda = None if weak_lambda is None else float(weak_lambda)

    genotype_cfg = config.get("genotype") or {}
    if isinstance(genotype_cfg, str):
        raise ValueError(f"loss recipe: genotype must be a list of tasks or a dict, got {genotype_cfg!r}")
    if not isinstance(genotype_cfg, Mapping):
        genotype_cfg = {task: {} for task in genotype_cfg}
    genotype_losses = {}
    for task, params in genotype_cfg.items():
        if task not in GENOTYPE_TASKS:
            raise ValueError(f"loss recipe: unknown genotype task {task!r}; known: {sorted(GENOTYPE_TASKS)}")
        params = dict(params or {})
        _check_keys(f"genotype.{task}", params, {"weight", "label_smoothing"})
        weight = params.get("weight")
        if weight is not None and len(weight) != len(GENOTYPE_TASKS[task]):
            raise ValueError(
                f"loss recipe: genotype.{task}.weight has {len(weight)} values for classes {GENOTYPE_TASKS[task]}"
            )
        genotype_losses[task] = MaskedCrossEntropy(weight=weight, label_smoothing=params.get("label_smoothing", 0.0))

    dist_loss, dist_weight = None, 1.0
    dist_cfg = config.get("dist")
    if dist_cfg is not None and dist_cfg is not False:
        dist_cfg = {} if dist_cfg is True else _as_dict("dist", dist_cfg)
        _check_keys("dist", dist_cfg, {"weight"})
        dist_weight = dist_cfg.get("weight", 1.0)
        if isinstance(dist_weight, bool) or not isinstance(dist_weight, (int, float)) or dist_weight < 0:
            raise ValueError(f"loss recipe: dist.weight must be a number >= 0, got {dist_weight!r}")
        dist_loss = DistanceMapLoss()

    tasks = ["seg"] + (["dist"] if dist_loss is not None else []) + list(genotype_losses)
    weighting = build_weighting(config.get("weighting"), tasks)
    return MultiTaskCriterion(seg_loss, weighting, weak_loss=weak_loss, weak_lambda=weak_lambda,
                              genotype_losses=genotype_losses, dist_loss=dist_loss, dist_weight=dist_weight)
