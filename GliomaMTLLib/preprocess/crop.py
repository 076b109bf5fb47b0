"""Crops: brain bounding box, fixed-size boxes around a point (padded at the edges), and their inverse.

Every function works on arrays indexed ``[..., z, y, x]``: a single volume ``(z, y, x)`` or a
channels-first stack ``(C, z, y, x)``; the box always refers to the last three axes.

The inference cascade uses :func:`crop_around`: a low-resolution localizer finds the tumor, and the
full-resolution network then needs an input of one fixed size centred on it, even when the tumor
lies near the edge of the volume, so the part of the box outside the volume is padded.
:func:`uncrop` puts the network's output back. :func:`crop_geometry` gives the grid of a crop, so a
cropped array can still be placed in physical space.

MONAI has ``SpatialCrop``/``SpatialPad``/``CropForeground``, but they do not return a box that can
be inverted without MONAI's metadata machinery, and a box that may leave the volume is the one
thing the cascade needs; the slicing below is a few lines of NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from GliomaMTLLib.io.geometry import Geometry

ZYX = tuple[int, int, int]


def _triple(value: int | Sequence[int], name: str) -> ZYX:
    if np.ndim(value) == 0:
        return (int(value),) * 3  # type: ignore[return-value]
    if len(value) != 3:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be one integer or three (z, y, x), got {value!r}")
    return tuple(int(v) for v in value)  # type: ignore[return-value]


@dataclass(frozen=True)
class CropBox:
    """An axis-aligned box of voxels, ``[start, start + size)`` per axis, in (z, y, x) order.

    ``start`` may be negative and ``start + size`` may pass the end of the volume: such a box
    reaches outside the volume, and :func:`crop` pads the outside part.
    """

    start: ZYX
    size: ZYX

    def __post_init__(self) -> None:
        if len(self.start) != 3 or len(self.size) != 3:
            raise ValueError(f"CropBox needs 3 starts and 3 sizes (z, y, x), got {self.start}, {self.size}")
        if any(s < 1 for s in self.size):
            raise ValueError(f"CropBox size must be at least 1 voxel per axis, got {self.size}")

    @property
    def stop(self) -> ZYX:
        return tuple(a + n for a, n in zip(self.start, self.size))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """The box as slices (valid only for a box inside the volume; see :meth:`inside`)."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @classmethod
    def from_slices(cls, slices: Sequence[slice]) -> "CropBox":
        """The box of three ``slice(start, stop)`` objects with explicit bounds."""
        return cls(
            start=tuple(int(s.start) for s in slices),  # type: ignore[arg-type]
            size=tuple(int(s.stop) - int(s.start) for s in slices),  # type: ignore[arg-type]
        )

    @classmethod
    def full(cls, shape: Sequence[int]) -> "CropBox":
        """The box covering a whole (z, y, x) volume."""
        return cls(start=(0, 0, 0), size=tuple(int(n) for n in shape[-3:]))  # type: ignore[arg-type]

    def inside(self, shape: Sequence[int]) -> bool:
        """True if the box lies entirely within a volume of (z, y, x) ``shape``."""
        return all(a >= 0 and b <= n for a, b, n in zip(self.start, self.stop, shape[-3:]))

    def _overlap(self, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
        """Slices of the part of the box inside the volume: (in the volume, in the box), or None."""
        vol, box = [], []
        for a, b, n in zip(self.start, self.stop, shape[-3:]):
            lo, hi = max(a, 0), min(b, n)
            if lo >= hi:
                return None
            vol.append(slice(lo, hi))
            box.append(slice(lo - a, hi - a))
        return tuple(vol), tuple(box)


def bounding_box(mask: np.ndarray, margin_vox: int | Sequence[int] = 0) -> tuple[slice, slice, slice]:
    """Smallest box holding every true voxel of a (z, y, x) mask, grown by a margin, clipped to the volume.

    Args:
        mask: boolean (or nonzero = true) array (z, y, x).
        margin_vox: voxels added on each side, one value or one per axis (z, y, x).

    Returns:
        three slices (z, y, x) with explicit start and stop.

    Raises:
        ValueError: if the mask has no true voxel, or is not 3D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"bounding_box expects a 3D (z, y, x) mask, got shape {mask.shape}")
    margin = _triple(margin_vox, "margin_vox")
    slices = []
    for axis in range(3):
        # Project onto one axis at a time: three cheap reductions instead of np.nonzero's index arrays.
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            raise ValueError("bounding_box: the mask is empty (no voxel is set)")
        lo = max(int(hits[0]) - margin[axis], 0)
        hi = min(int(hits[-1]) + 1 + margin[axis], mask.shape[axis])
        slices.append(slice(lo, hi))
    return tuple(slices)  # type: ignore[return-value]


def crop(array: np.ndarray, box: CropBox, fill: float = 0, out: np.ndarray | None = None) -> np.ndarray:
    """The part of ``array`` (``[..., z, y, x]``) inside ``box``, padded with ``fill`` where the box leaves it.

    Args:
        array: volume (z, y, x) or stack (C, z, y, x).
        box: the box; may reach outside the volume.
        fill: value of voxels outside the volume.
        out: optional array of shape ``array.shape[:-3] + box.size`` to write into.

    Returns:
        a new array (or ``out``) of shape ``array.shape[:-3] + box.size``; never a view of ``array``.
    """
    array = np.asarray(array)
    if array.ndim < 3:
        raise ValueError(f"crop expects an array [..., z, y, x], got shape {array.shape}")
    shape = array.shape[:-3] + tuple(box.size)
    inside = box.inside(array.shape)
    if out is None:
        if inside:
            return array[(..., *box.slices)].copy()
        out = np.empty(shape, dtype=array.dtype)
    elif out.shape != shape:
        raise ValueError(f"crop: out has shape {out.shape}, expected {shape}")
    if inside:
        out[...] = array[(..., *box.slices)]
        return out
    out[...] = fill
    overlap = box._overlap(array.shape)
    if overlap is not None:
        vol, inner = overlap
        out[(..., *inner)] = array[(..., *vol)]
    return out


def crop_around(
    array: np.ndarray,
    center_zyx: Sequence[float],
    size_zyx: int | Sequence[int],
    fill: float = 0,
) -> tuple[np.ndarray, CropBox]:
    """A fixed-size crop of ``array`` (``[..., z, y, x]``) centred on a voxel, padded where it leaves the volume.

    The voxel nearest ``center_zyx`` lands at index ``size // 2`` of the crop along each axis.

    Args:
        array: volume (z, y, x) or stack (C, z, y, x).
        center_zyx: centre in voxel indices (may be fractional, may lie outside the volume).
        size_zyx: crop size, one value or one per axis.
        fill: value of padded voxels (0 for labels and z-scored images).

    Returns:
        (cropped array of shape ``array.shape[:-3] + size``, the :class:`CropBox` used).
    """
    size = _triple(size_zyx, "size_zyx")
    if len(center_zyx) != 3:
        raise ValueError(f"center_zyx must have 3 values (z, y, x), got {center_zyx!r}")
    # floor(c + 0.5) rounds half up; Python's round() would round half to even.
    start = tuple(int(np.floor(float(c) + 0.5)) - n // 2 for c, n in zip(center_zyx, size))
    box = CropBox(start=start, size=size)  # type: ignore[arg-type]
    return crop(array, box, fill), box


def uncrop(
    cropped: np.ndarray, box: CropBox, full_shape: Sequence[int], fill: float = 0
) -> np.ndarray:
    """Put a crop back: an array of ``full_shape`` filled with ``fill``, with ``cropped`` at ``box``.

    The part of the box outside the volume (the padding added by :func:`crop`) is dropped.
    ``full_shape`` is (z, y, x) or the whole shape; leading (channel) axes come from ``cropped``.

    Raises:
        ValueError: if ``cropped`` does not have the box's size.
    """
    cropped = np.asarray(cropped)
    if tuple(cropped.shape[-3:]) != tuple(box.size):
        raise ValueError(f"uncrop: array of shape {cropped.shape} does not match box size (z, y, x) {box.size}")
    shape = cropped.shape[:-3] + tuple(int(n) for n in full_shape[-3:])
    out = np.full(shape, fill, dtype=cropped.dtype)
    overlap = box._overlap(shape)
    if overlap is not None:
        vol, inner = overlap
        out[(..., *vol)] = cropped[(..., *inner)]
    return out


def crop_geometry(geometry: Geometry, box: CropBox) -> Geometry:
    """The grid of a crop of an array on ``geometry`` (same spacing and direction, shifted origin).

    Works for boxes that leave the volume too: the grid then extends beyond the original one.
    """
    start_xyz = np.asarray(box.start[::-1], dtype=float)
    origin = geometry.index_to_physical(start_xyz)[0]
    return Geometry(
        size=tuple(int(n) for n in box.size[::-1]),  # type: ignore[arg-type]
        spacing=geometry.spacing,
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=geometry.direction,
    )
