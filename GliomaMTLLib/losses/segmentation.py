"""Segmentation losses on softmax-over-labels logits.

All losses here take the network's raw seg logits (B, L, z, y, x) and an integer label map
(B, 1, z, y, x) (or (B, z, y, x)), so the softmax lives in exactly one place.

* `make_seg_loss` -- MONAI losses with the softmax/one-hot settings fixed:
  ``dice`` (MONAI DiceLoss; paper 003 uses the squared-denominator form: ``squared_pred: true``),
  ``dicece`` (MONAI DiceCELoss), ``dicefocal`` (MONAI DiceLoss + MONAI FocalLoss with softmax),
  ``focal`` (MONAI FocalLoss with softmax: the categorical focal loss of paper 004, gamma 2,
  class weights ``[0.1, 1, 1, 1]``), ``ce`` (weighted cross-entropy, paper 002).
* `RegionBinaryLoss` -- a binary loss on one region's probability (e.g. P(WT) = 1 - p0) against
  a binary mask: the weak whole-tumor labels of paper 002, and its single-sequence variants
  (tumor core only for T1-weighted input, whole tumor only for T2/FLAIR).
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss

SEG_LOSS_TYPES: tuple[str, ...] = ("dice", "dicece", "dicefocal", "focal", "ce")
BINARY_LOSS_MODES: tuple[str, ...] = ("dice", "bce", "dicebce")

# Set by this module, so a recipe may not override them: inputs are logits of mutually
# exclusive labels and targets are integer label maps.
_FIXED = {"softmax", "sigmoid", "to_onehot_y", "other_act", "use_softmax", "reduction"}
_DICE_KEYS = {"include_background", "squared_pred", "jaccard", "smooth_nr", "smooth_dr", "batch", "weight"}
_FOCAL_KEYS = {"include_background", "gamma", "alpha", "weight"}


def _as_label(target: torch.Tensor) -> torch.Tensor:
    """(B, z, y, x) or (B, 1, z, y, x) integer labels -> (B, 1, z, y, x) int64."""
    if target.ndim == 4:
        target = target.unsqueeze(1)
    if target.ndim != 5 or target.shape[1] != 1:
        raise ValueError(f"label map must be (B, z, y, x) or (B, 1, z, y, x), got {tuple(target.shape)}")
    return target.long()


def _weight_tensor(value: Any) -> torch.Tensor | None:
    if value is None:
        return None
    return torch.as_tensor(value, dtype=torch.float32)


def _check_params(name: str, params: dict[str, Any], allowed: set[str]) -> None:
    fixed = sorted(set(params) & _FIXED)
    if fixed:
        raise ValueError(f"seg loss {name!r}: parameter(s) {fixed} are fixed by GliomaMTL (softmax over labels)")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"seg loss {name!r}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")


def _signature_keys(cls: type) -> set[str]:
    return {p for p in inspect.signature(cls.__init__).parameters if p != "self"}


class _LabelLoss(nn.Module):
    """Wrap a MONAI loss so that it accepts (B, z, y, x) label maps too."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, _as_label(target))


class CategoricalDiceFocalLoss(nn.Module):
    """MONAI DiceLoss (softmax) + MONAI FocalLoss (softmax, categorical).

    MONAI's own `DiceFocalLoss` computes its focal term with a per-channel sigmoid; paper 004's
    loss is the categorical (softmax) focal loss, hence this composition of the two MONAI losses.
    ``weight`` (class weights) goes to both terms, as in MONAI's DiceFocalLoss.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_focal: float = 1.0, **params: Any) -> None:
        super().__init__()
        if lambda_dice < 0 or lambda_focal < 0:
            raise ValueError("dicefocal: lambda_dice and lambda_focal must be >= 0")
        self.dice = DiceLoss(softmax=True, to_onehot_y=True,
                             **{k: v for k, v in params.items() if k in _DICE_KEYS})
        self.focal = FocalLoss(use_softmax=True, to_onehot_y=True,
                               **{k: v for k, v in params.items() if k in _FOCAL_KEYS})
        self.lambda_dice = float(lambda_dice)
        self.lambda_focal = float(lambda_focal)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _as_label(target)
        return self.lambda_dice * self.dice(logits, target) + self.lambda_focal * self.focal(logits, target)


class CrossEntropySegLoss(nn.Module):
    """Voxel-wise (optionally class-weighted) cross-entropy, the 4-class loss of paper 002.

    Plain `torch.nn.functional.cross_entropy`: MONAI has no stand-alone CE loss (its DiceCELoss
    with ``lambda_dice=0`` would still compute the Dice term).
    """

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", _weight_tensor(weight))
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _as_label(target)[:, 0]
        return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing)


def make_seg_loss(loss_type: str, **params: Any) -> nn.Module:
    """Build a multi-class segmentation loss: ``module(logits (B,L,...), labels (B[,1],...)) -> scalar``.

    Args:
        loss_type: one of `SEG_LOSS_TYPES`.
        params: keyword arguments of the underlying MONAI loss (e.g. ``include_background``,
            ``squared_pred``, ``batch``, ``gamma``, ``weight`` as a list of class weights,
            ``lambda_dice``, ``lambda_ce``, ``lambda_focal``, ``label_smoothing``).

    Raises:
        ValueError: unknown type, unknown parameter, or a parameter GliomaMTL fixes
            (``softmax``, ``sigmoid``, ``to_onehot_y``, ``use_softmax``, ``other_act``, ``reduction``).
    """
    params = dict(params)
    if loss_type == "dice":
        _check_params(loss_type, params, _signature_keys(DiceLoss))
        return _LabelLoss(DiceLoss(softmax=True, to_onehot_y=True, **params))
    if loss_type == "dicece":
        _check_params(loss_type, params, _signature_keys(DiceCELoss))
        if "weight" in params:
            params["weight"] = _weight_tensor(params["weight"])
        return _LabelLoss(DiceCELoss(softmax=True, to_onehot_y=True, **params))
    if loss_type == "dicefocal":
        _check_params(loss_type, params, _DICE_KEYS | _FOCAL_KEYS | {"lambda_dice", "lambda_focal"})
        return CategoricalDiceFocalLoss(**params)
    if loss_type == "focal":
        _check_params(loss_type, params, _signature_keys(FocalLoss))
        return _LabelLoss(FocalLoss(use_softmax=True, to_onehot_y=True, **params))
    if loss_type == "ce":
        _check_params(loss_type, params, {"weight", "label_smoothing"})
        return CrossEntropySegLoss(**params)
    raise ValueError(f"unknown seg loss type {loss_type!r}; expected one of {SEG_LOSS_TYPES}")


def region_log_probabilities(logits: torch.Tensor, labels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(region) and log P(not region), each (B, 1, ...), from softmax-over-labels logits.

    Computed with logsumexp (not log of a sum of probabilities) so that BCE stays finite when
    the network is confident.
    """
    n = logits.shape[1]
    inside = sorted(set(int(i) for i in labels))
    if not inside or inside[0] < 0 or inside[-1] >= n:
        raise ValueError(f"region labels {list(labels)} out of range for {n} seg classes")
    outside = [i for i in range(n) if i not in inside]
    log_z = torch.logsumexp(logits, dim=1, keepdim=True)
    log_in = torch.logsumexp(logits[:, inside], dim=1, keepdim=True) - log_z
    if not outside:
        return log_in, torch.full_like(log_in, float("-inf"))
    log_out = torch.logsumexp(logits[:, outside], dim=1, keepdim=True) - log_z
    return log_in, log_out


class RegionBinaryLoss(nn.Module):
    """Binary loss between P(region) (sum of softmax label probabilities) and a binary mask.

    Args:
        labels: label indices forming the region (WT = (1, 2, 3): P(WT) = 1 - p0).
        mode: ``"bce"`` (paper 002's weighted 2-class cross-entropy), ``"dice"`` (MONAI DiceLoss
            on the probability) or ``"dicebce"`` (their sum).
        class_weight: optional (w_not_region, w_region) for the BCE term.
        from_label_map: the target is an integer label map and the region mask is
            ``isin(target, labels)`` (expert labels of 002's single-sequence models); otherwise
            the target is already a binary mask (weak whole-tumor labels).
    """

    def __init__(self, labels: Sequence[int] = (1, 2, 3), mode: str = "dicebce",
                 class_weight: Sequence[float] | None = None, from_label_map: bool = False) -> None:
        super().__init__()
        if mode not in BINARY_LOSS_MODES:
            raise ValueError(f"binary region loss: unknown mode {mode!r}; expected one of {BINARY_LOSS_MODES}")
        if class_weight is not None and len(class_weight) != 2:
            raise ValueError(f"binary region loss: class_weight must be [w_background, w_region], got {class_weight!r}")
        self.labels = tuple(int(i) for i in labels)
        self.from_label_map = bool(from_label_map)
        self.mode = mode
        self.class_weight = None if class_weight is None else tuple(float(w) for w in class_weight)
        self.dice = DiceLoss(sigmoid=False, softmax=False) if mode in ("dice", "dicebce") else None

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (B, L, z, y, x) seg logits.
            mask: (B, z, y, x) or (B, 1, z, y, x) binary target (bool/int/float), or a label map
                if ``from_label_map``.
        """
        if mask.ndim == logits.ndim - 1:
            mask = mask.unsqueeze(1)
        if self.from_label_map:
            mask = torch.isin(mask.long(), torch.tensor(self.labels, device=mask.device))
        target = (mask > 0).to(logits.dtype)
        log_in, log_out = region_log_probabilities(logits, self.labels)
        loss = logits.new_zeros(())
        if self.mode in ("bce", "dicebce"):
            w0, w1 = self.class_weight or (1.0, 1.0)
            # where() so that a -inf log-probability times a 0 target contributes 0, not NaN
            pos = torch.where(target > 0, log_in, torch.zeros_like(log_in))
            neg = torch.where(target > 0, torch.zeros_like(log_out), log_out)
            loss = loss - (w1 * pos + w0 * neg).mean()
        if self.dice is not None:
            loss = loss + self.dice(log_in.exp(), target)
        return loss
