"""Where a crop lies in the brain: the non-image inputs of the radiological-feature path.

The main network sees a fixed-size crop; location (lobe-level position, depth below the cortex,
midline distance, laterality) is not visible inside it. :func:`crop_context` therefore computes,
once per case on the main preprocessed grid (canonical LPS axis order, arrays ``z, y, x``):

* ``depth``: distance in mm from each voxel to the outside of the brain mask (0 outside), cropped
  like the image (a constant for the gradients: the mask is not a network output);
* ``position``: (3, z, y, x) position of each voxel relative to the brain-mask centroid, divided by
  the brain's half extent along that axis, in the order (superior, anterior, left). 0 is the brain
  centre, +-1 its border.

Features weight these maps by the soft tumor probability, so the location features stay
differentiable in the segmentation even though the maps themselves are constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from GliomaMTLLib.preprocess import CropBox, crop


@dataclass
class CropContext:
    """Location maps of one crop (see module docstring); arrays are float32."""

    depth: np.ndarray  # (z, y, x) mm
    position: np.ndarray  # (3, z, y, x): superior, anterior, left in brain half-extents
    spacing_zyx: tuple[float, float, float]

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"depth": self.depth, "position": self.position, "spacing_zyx": np.asarray(self.spacing_zyx, np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "CropContext":
        return cls(np.asarray(arrays["depth"], np.float32), np.asarray(arrays["position"], np.float32),
                   tuple(float(v) for v in np.asarray(arrays["spacing_zyx"]).ravel()))  # type: ignore[arg-type]


def brain_frame(brain_mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (voxel index z, y, x) and half extent (voxels, per axis) of a brain mask.

    Raises:
        ValueError: when the mask is empty.
    """
    idx = np.nonzero(brain_mask)
    if len(idx[0]) == 0:
        raise ValueError("brain mask is empty: location features are undefined")
    centroid = np.array([i.mean() for i in idx])
    half = np.array([(i.max() - i.min() + 1) / 2.0 for i in idx])
    return centroid, np.maximum(half, 1.0)


def crop_context(brain_mask: np.ndarray, spacing_zyx: tuple[float, float, float], box: CropBox) -> CropContext:
    """Location maps of ``box`` on the grid of ``brain_mask`` (canonical LPS order, z y x).

    Sign conventions (LPS: index z grows superior, y posterior, x left): position channel 0 is
    superior, 1 anterior (negated y), 2 left.
    """
    spacing = tuple(float(s) for s in spacing_zyx)
    depth_full = ndimage.distance_transform_edt(brain_mask, sampling=spacing).astype(np.float32)
    depth = crop(depth_full, box, 0.0)
    centroid, half = brain_frame(brain_mask, spacing)  # type: ignore[arg-type]
    axes = [np.arange(box.start[i], box.start[i] + box.size[i], dtype=np.float32) for i in range(3)]
    rel = [(axes[i] - centroid[i]) / half[i] for i in range(3)]
    zz, yy, xx = np.meshgrid(rel[0], -rel[1], rel[2], indexing="ij")
    position = np.stack([zz, yy, xx]).astype(np.float32)
    return CropContext(depth=depth, position=position, spacing_zyx=spacing)  # type: ignore[arg-type]
