"""Canonical reorientation (lossless axis permutation and flips) and resampling onto another grid.

Reorientation follows ``SimpleITK.DICOMOrient``: the orientation code names, for each array axis
x, y, z in turn, the anatomical direction it points to ("LPS": x to the patient's left, y to
posterior, z to superior, i.e. identity direction cosines in ITK's LPS physical space; "RAS" is
diag(-1, -1, 1)). Axes are only permuted and flipped, so no voxel value changes; an oblique scan
gets the closest axis-aligned order and keeps its remaining rotation in the direction matrix.

Why not call ``DICOMOrient`` on the images: it does not report which permutation and flips it
applied, and the inverse transform (and channel stacks, and crops expressed in either grid) needs
exactly that. So :func:`reorientation_for` computes the permutation from the direction cosines
(the axis assignment that maximizes the total alignment, which is always a valid permutation, even
for 45-degree obliques where per-axis choices can collide) and :meth:`Reorientation.apply` is a
NumPy view (transpose + flip, no copy). The test suite checks agreement with ``DICOMOrient``.
Resampling itself is SimpleITK's ``Resample``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import SimpleITK as sitk

from GliomaMTLLib.io.geometry import Geometry

# Orientation letter -> unit vector in ITK's LPS physical space.
_LETTERS = {
    "L": (1, 0, 0), "R": (-1, 0, 0),
    "P": (0, 1, 0), "A": (0, -1, 0),
    "S": (0, 0, 1), "I": (0, 0, -1),
}  # fmt: skip

Kind = Literal["label", "scalar"]


def orientation_matrix(code: str) -> np.ndarray:
    """Direction cosines (3x3, columns = array axes x, y, z) of an orientation code such as "LPS" or "RAS".

    Raises:
        ValueError: if the code is not three letters naming each anatomical axis once.
    """
    letters = code.upper() if isinstance(code, str) else ""
    if len(letters) != 3 or any(c not in _LETTERS for c in letters):
        raise ValueError(f"orientation must be 3 letters from L/R, P/A, S/I (e.g. 'LPS', 'RAS'), got {code!r}")
    matrix = np.array([_LETTERS[c] for c in letters], dtype=float).T
    if not matrix.any(axis=1).all():
        raise ValueError(f"orientation {code!r} names an anatomical axis twice; use one of L/R, P/A, S/I each")
    return matrix


@dataclass(frozen=True)
class Reorientation:
    """A lossless reordering of the voxel axes.

    New ITK axis ``k`` (0 = x, 1 = y, 2 = z) is old axis ``perm[k]``, reversed if ``flip[k]``.
    """

    perm: tuple[int, int, int] = (0, 1, 2)
    flip: tuple[bool, bool, bool] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    def inverse(self) -> "Reorientation":
        """The reorientation that undoes this one."""
        perm, flip = [0, 0, 0], [False, False, False]
        for k, old in enumerate(self.perm):
            perm[old], flip[old] = k, self.flip[k]
        return Reorientation(tuple(perm), tuple(flip))  # type: ignore[arg-type]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Reorient an array ``[..., z, y, x]`` (a view where NumPy allows; leading axes untouched)."""
        if self.is_identity:
            return array
        lead = array.ndim - 3
        # ITK axis k is NumPy axis lead + 2 - k.
        flips = tuple(lead + 2 - self.perm[k] for k in range(3) if self.flip[k])
        if flips:
            array = np.flip(array, axis=flips)
        order = list(range(lead)) + [lead + 2 - self.perm[2 - a] for a in range(3)]
        return array.transpose(order)

    def shape(self, shape_zyx: Sequence[int]) -> tuple[int, int, int]:
        """The (z, y, x) shape after reorientation of an array of ``shape_zyx``."""
        size_xyz = tuple(shape_zyx[-3:])[::-1]
        return tuple(int(size_xyz[self.perm[k]]) for k in range(3))[::-1]  # type: ignore[return-value]

    def source_slices(self, slices_zyx: Sequence[slice], shape_zyx: Sequence[int]) -> tuple[slice, slice, slice]:
        """Slices of the original array (of ``shape_zyx``) holding the voxels of a box in the reoriented array."""
        size_xyz = tuple(shape_zyx[-3:])[::-1]
        old: list[slice] = [slice(None)] * 3  # ITK order
        for k, s in enumerate(slices_zyx[::-1]):
            axis = self.perm[k]
            n = size_xyz[axis]
            lo, hi, _ = s.indices(n)
            old[axis] = slice(n - hi, n - lo) if self.flip[k] else slice(lo, hi)
        return tuple(old[::-1])  # type: ignore[return-value]


def reorientation_for(geometry: Geometry, orientation: str = "LPS") -> Reorientation:
    """The permutation and flips that bring ``geometry``'s axes closest to ``orientation``."""
    target = orientation_matrix(orientation)
    # cos[i, k]: alignment of old axis i with target axis k.
    cos = geometry.direction_matrix.T @ target
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(cos[p[k], k]) for k in range(3)))
    flip = tuple(bool(cos[best[k], k] < 0) for k in range(3))
    return Reorientation(tuple(best), flip)  # type: ignore[arg-type]


def reorient_geometry(geometry: Geometry, reorientation: Reorientation) -> Geometry:
    """The grid of the same voxels after ``reorientation`` (same physical points, reordered)."""
    if reorientation.is_identity:
        return geometry
    perm, flip = reorientation.perm, reorientation.flip
    direction = geometry.direction_matrix
    new_direction = np.stack([direction[:, perm[k]] * (-1.0 if flip[k] else 1.0) for k in range(3)], axis=1)
    first = np.zeros(3)
    for k in range(3):
        if flip[k]:
            first[perm[k]] = geometry.size[perm[k]] - 1
    origin = geometry.index_to_physical(first)[0]
    return Geometry(
        size=tuple(geometry.size[perm[k]] for k in range(3)),  # type: ignore[arg-type]
        spacing=tuple(geometry.spacing[perm[k]] for k in range(3)),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in new_direction.ravel()),
    )


def resampled_geometry(geometry: Geometry, spacing: Sequence[float]) -> Geometry:
    """A grid with the given spacing over the same field of view (same direction, centred).

    The size is ``round(size * old_spacing / spacing)`` per axis (at least 1), and the new grid is
    centred on the old one, so with an integer ratio the outer faces of both grids coincide (a
    voxel of 1 mm splits into exactly three of 1/3 mm; two of 1 mm merge into one of 2 mm).
    Returns ``geometry`` itself when the spacing is already the requested one.
    """
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive numbers (x, y, z) in mm, got {spacing!r}")
    old_spacing = np.asarray(geometry.spacing)
    if np.allclose(old_spacing, spacing, rtol=1e-6, atol=0):
        return geometry
    old_size = np.asarray(geometry.size, dtype=float)
    ratio = np.asarray(spacing) / old_spacing
    size = np.maximum(1, np.floor(old_size / ratio + 0.5)).astype(int)
    # Continuous old index of the new voxel (0, 0, 0): both grids share their centre.
    first = (old_size - 1) / 2 - (size - 1) / 2 * ratio
    origin = geometry.index_to_physical(first)[0]
    return Geometry(
        size=tuple(int(n) for n in size),  # type: ignore[arg-type]
        spacing=spacing,  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=geometry.direction,
    )


def physical_to_continuous_index(geometry: Geometry, points: np.ndarray) -> np.ndarray:
    """Physical LPS points (N, 3) -> continuous (x, y, z) indices (N, 3) on ``geometry``."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    matrix = geometry.direction_matrix * np.asarray(geometry.spacing)  # columns scaled by spacing
    return np.linalg.solve(matrix, (points - np.asarray(geometry.origin)).T).T


_INTERPOLATORS = {"label": sitk.sitkNearestNeighbor, "scalar": sitk.sitkLinear}


def resample(
    array: np.ndarray,
    source: Geometry,
    target: Geometry,
    kind: Kind = "scalar",
    fill: float = 0,
) -> np.ndarray:
    """Resample an array ``[C,] z, y, x`` on ``source`` onto ``target`` with SimpleITK.

    Args:
        array: (z, y, x) or channels-first (C, z, y, x) on ``source``.
        kind: "label" (nearest neighbour, dtype kept) or "scalar" (linear; float arrays keep
            their dtype, others become float32).
        fill: value where ``target`` lies outside ``source``'s field of view.

    Returns:
        array of shape ``[C,] + target.shape``.
    """
    if kind not in _INTERPOLATORS:
        raise ValueError(f"kind must be 'label' or 'scalar', got {kind!r}")
    array = np.asarray(array)
    if array.shape[-3:] != source.shape or array.ndim not in (3, 4):
        raise ValueError(f"array of shape {array.shape} is not on the source grid (z, y, x) {source.shape}")
    if array.dtype == bool:
        return resample(array.view(np.uint8), source, target, kind, fill).astype(bool)
    if kind == "scalar" and not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if array.ndim == 4:
        out = np.empty((array.shape[0],) + target.shape, dtype=array.dtype)
        for c in range(array.shape[0]):
            out[c] = resample(array[c], source, target, kind, fill)
        return out
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(target.size)
    resampler.SetOutputSpacing(target.spacing)
    resampler.SetOutputOrigin(target.origin)
    resampler.SetOutputDirection(target.direction)
    resampler.SetInterpolator(_INTERPOLATORS[kind])
    resampler.SetDefaultPixelValue(float(fill))
    return sitk.GetArrayFromImage(resampler.Execute(source.to_image(array)))
