"""From seg logits to label probabilities, nested region probabilities and the label map.

The seg head is a softmax over mutually exclusive labels; a region's probability is the sum of
its labels' probabilities (P(WT) = p1 + p2 + p3, P(TC) = p1 + p3, P(ET) = p3 for the 4-class
head), so ET <= TC <= WT holds voxel by voxel without any post-hoc repair.
"""

from __future__ import annotations

from typing import Mapping

import torch

from GliomaMTLLib.nets.config import default_regions


def seg_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the label axis: (B, L, ...) logits -> (B, L, ...) probabilities."""
    return torch.softmax(logits, dim=1)


def region_probabilities(
    logits: torch.Tensor, regions: Mapping[str, tuple[int, ...]] | None = None
) -> torch.Tensor:
    """Region probabilities (B, R, ...) in the order of ``regions`` (default: WT, TC, ET).

    Args:
        logits: (B, L, ...) seg logits.
        regions: region name -> label indices; default `default_regions(L)`.
    """
    probs = seg_probabilities(logits)
    regions = default_regions(probs.shape[1]) if regions is None else regions
    return torch.stack([probs[:, list(idx)].sum(dim=1) for idx in regions.values()], dim=1)


def label_map(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the label axis: (B, L, ...) -> (B, ...) int64 labels (0 bg, 1 NCR, 2 ED, 3 ET)."""
    return logits.argmax(dim=1)
