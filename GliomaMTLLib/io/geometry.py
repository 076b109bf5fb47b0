"""`Geometry`: the exact voxel grid (size, spacing, origin, direction) of an image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Geometry:
    """A voxel grid in LPS physical space, as ITK/SimpleITK define it.

    Attributes:
        size: voxels along (x, y, z), ITK order.
        spacing: mm along (x, y, z).
        origin: physical position (mm, LPS) of voxel (0, 0, 0).
        direction: 3x3 direction cosines, row-major, 9 floats (ITK ``GetDirection``).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        """The grid of a 3D SimpleITK image."""
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """NumPy array shape (z, y, x) of an array on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 ml = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def to_image(self, array: np.ndarray) -> sitk.Image:
        """Wrap a (z, y, x) array as a SimpleITK image on this grid.

        Raises:
            ValueError: if the array shape does not match the grid.
        """
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid shape (z, y, x) {self.shape}")
        image = sitk.GetImageFromArray(array)
        self.apply_to(image)
        return image

    def apply_to(self, image: sitk.Image) -> None:
        """Set spacing, origin and direction of ``image`` (same size) to this grid's."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    def index_to_physical(self, index_xyz: np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) voxel indices (N, 3) -> physical LPS points (N, 3)."""
        idx = np.atleast_2d(np.asarray(index_xyz, dtype=float))
        return np.asarray(self.origin) + (idx * np.asarray(self.spacing)) @ self.direction_matrix.T

    def corners(self) -> np.ndarray:
        """Physical positions (8, 3) of the outer corners of the grid's field of view."""
        lo, hi = -0.5, np.asarray(self.size, dtype=float) - 0.5
        pts = np.array([[x, y, z] for x in (lo, hi[0]) for y in (lo, hi[1]) for z in (lo, hi[2])])
        return self.index_to_physical(pts)

    def same_grid(self, other: "Geometry", rtol: float = 1e-4, atol_mm: float = 1e-3) -> bool:
        """True if both grids have the same size and (within tolerance) spacing, origin, direction."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=rtol)
            and np.allclose(self.origin, other.origin, atol=max(atol_mm, rtol * max(self.spacing)))
            and np.allclose(self.direction, other.direction, atol=1e-4)
        )
