"""Distance-map target and loss of paper 004's auxiliary distance-transform decoder.

The distance decoder outputs logits (B, R, z, y, x), one channel per tumor region (WT, TC, ET
for a 4-class model); ``sigmoid`` maps them to [0, 1], and the loss is the mean squared error
against a normalized distance transform of each region (004, eq. 5, "after activation of the
Sigmoid function").
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage

DISTANCE_MODES: tuple[str, ...] = ("unsigned", "signed")


def _normalized_inside(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance of each inside voxel to the nearest outside voxel, divided by its maximum."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    if mask.all():
        return np.ones(mask.shape, dtype=np.float32)
    d = ndimage.distance_transform_edt(mask, sampling=spacing)
    return (d / d.max()).astype(np.float32)


def distance_map_target(
    label: np.ndarray,
    regions: Mapping[str, Sequence[int]] | None = None,
    mode: str = "unsigned",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Regression target for the distance decoder: (R, z, y, x) float32 in [0, 1].

    Args:
        label: (z, y, x) integer label map (0 bg, 1 NCR, 2 ED, 3 ET).
        regions: region name -> labels, in output channel order; default WT, TC, ET.
        mode: ``"unsigned"``: inside each region, the Euclidean distance to the region boundary
            divided by its maximum (1 at the region's deepest point), 0 outside;
            ``"signed"``: 0.5 on the boundary, rising to 1 at the deepest inside point and falling
            to 0 at the farthest outside point (each side normalized by its own maximum).
        spacing: voxel spacing (z, y, x) in mm, for anisotropic grids.

    Raises:
        ValueError: unknown mode or a label array that is not 3-D.
    """
    from GliomaMTLLib.labels import REGIONS

    if mode not in DISTANCE_MODES:
        raise ValueError(f"unknown distance mode {mode!r}; expected one of {DISTANCE_MODES}")
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"label must be a 3-D (z, y, x) array, got shape {label.shape}")
    regions = REGIONS if regions is None else regions
    out = []
    for idx in regions.values():
        mask = np.isin(label, list(idx))
        inside = _normalized_inside(mask, spacing)
        if mode == "unsigned":
            out.append(inside)
            continue
        if not mask.any():
            out.append(np.zeros(mask.shape, dtype=np.float32))
            continue
        outside = _normalized_inside(~mask, spacing)
        out.append(np.where(mask, 0.5 + 0.5 * inside, 0.5 - 0.5 * outside).astype(np.float32))
    return np.stack(out)


class DistanceMapLoss(nn.Module):
    """Mean squared error between ``sigmoid(logits)`` and the distance target (004, eq. 5)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"distance logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        return torch.mean((torch.sigmoid(logits) - target.to(logits.dtype)) ** 2)
