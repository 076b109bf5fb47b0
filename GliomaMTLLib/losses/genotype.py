"""Genotype classification loss that skips cases whose label is unknown."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

UNKNOWN = -1


class MaskedCrossEntropy(nn.Module):
    """Cross-entropy over the samples whose class is known (target >= 0); unknown is ``-1``.

    Equal to plain (optionally class-weighted) cross-entropy on the known subset. With no known
    sample in the batch the loss is an exact 0 that is still connected to the graph (its
    gradient is zero), never NaN -- ``F.cross_entropy(..., ignore_index=-1)`` returns NaN there.

    Args:
        weight: optional class weights (K,) (papers 002 and 003 use weighted cross-entropy).
        label_smoothing: as in `torch.nn.functional.cross_entropy`.
    """

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        if w is not None and (w.ndim != 1 or (w < 0).any()):
            raise ValueError(f"class weights must be a list of non-negative numbers, got {weight!r}")
        self.register_buffer("weight", w)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (B, K).
            target: (B,) int64 class index, or -1 where unknown.

        Raises:
            ValueError: shape mismatch, or a known target outside [0, K).
        """
        if logits.ndim != 2 or target.shape != logits.shape[:1]:
            raise ValueError(f"expected logits (B, K) and target (B,), got {tuple(logits.shape)} and {tuple(target.shape)}")
        k = logits.shape[1]
        if self.weight is not None and self.weight.numel() != k:
            raise ValueError(f"{self.weight.numel()} class weights for {k} classes")
        target = target.to(device=logits.device, dtype=torch.long)
        known = target >= 0
        if bool((target[known] >= k).any()) or bool((target < UNKNOWN).any()):
            raise ValueError(f"genotype targets must be -1 (unknown) or in [0, {k}), got {target.tolist()}")
        if not bool(known.any()):
            return logits.sum() * 0.0 + 0.0  # graph-connected 0 ("+ 0.0": never -0.0)
        return F.cross_entropy(logits[known], target[known], weight=self.weight,
                               label_smoothing=self.label_smoothing)
