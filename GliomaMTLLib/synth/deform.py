"""Per-subject spatial transform: template (MNI, LPS mm) <- output grid (BraTS/SRI24-like, LPS mm).

The anatomy of a phantom is the template pulled back through one dense displacement field on the
output grid, the composition of
  1. tumour mass effect (radial, volume-inserting push around each tumour core, fading with
     distance, so ventricles and sulci near the tumour are compressed and displaced outward),
  2. a random smooth deformation (anatomical variability, a few mm),
  3. a global pose: per-axis scale (head size), small rotation and translation.
All three are evaluated on a coarse lattice (a few mm) and upsampled linearly (exact for the
affine part), then applied to every tissue map with ``sitk.Warp``: measured on 2 cores, a dense
field plus one warp per map is ~3x faster than resampling through a ``DisplacementFieldTransform``
(and ~4x faster than warping with the coarse field directly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.synth.fields import Lattice, box_geometry, smooth_noise


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Pose:
    """Global similarity-like transform between template and output space.

    ``output = out_center + translation + scale * R^T (template - tpl_center)`` (per-axis scale in
    the output frame); ``to_template`` is its inverse.
    """

    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    out_center: np.ndarray
    tpl_center: np.ndarray

    def to_template(self, p: np.ndarray) -> np.ndarray:
        """Output LPS points (..., 3) -> template LPS points."""
        r = (np.asarray(p) - self.out_center - self.translation) / self.scale
        return r @ self.rotation.T + self.tpl_center

    def to_output(self, q: np.ndarray) -> np.ndarray:
        """Template LPS points (..., 3) -> output LPS points."""
        r = (np.asarray(q) - self.tpl_center) @ self.rotation
        return r * self.scale + self.out_center + self.translation


@dataclass
class MassEffect:
    """Radial push around ``center`` (output LPS mm) as if a ball of radius ``radius`` mm had been
    inserted into the tissue; the displacement fades over ``falloff`` mm beyond it (the skull and
    the stiffness of the brain stop it), which keeps the map monotone (no folding)."""

    center: np.ndarray
    radius: float
    falloff: float


def mass_effect_displacement(points: np.ndarray, masses: list[MassEffect]) -> np.ndarray:
    """Pull-back displacement (..., 3) at output points: tissue seen at ``p`` came from ``p + D``."""
    disp = np.zeros_like(points, dtype=np.float64)
    for m in masses:
        v = points - m.center
        r = np.linalg.norm(v, axis=-1)
        a = float(m.radius)
        r0 = np.cbrt(np.maximum(r**3 - a**3, 0.0))
        fade = np.exp(-((np.maximum(r - a, 0.0) / max(m.falloff, 1e-3)) ** 2))
        delta = (r - r0) * fade
        disp -= v * (delta / np.maximum(r, 1e-6))[..., None]
    return disp


@dataclass
class Deformation:
    """Everything that defines one subject's pull-back map."""

    pose: Pose
    random_amplitude_mm: float = 2.0
    random_scale_mm: float = 40.0
    masses: list[MassEffect] = field(default_factory=list)


def output_bounds(deformation: Deformation, surface_lps: np.ndarray, grid: Geometry,
                  margin_mm: float) -> Geometry:
    """Sub-grid of ``grid`` (same spacing) that contains the deformed brain plus ``margin_mm``."""
    pts = deformation.pose.to_output(surface_lps)
    lo = pts.min(0) - margin_mm
    hi = pts.max(0) + margin_mm
    origin = np.asarray(grid.origin)
    spacing = np.asarray(grid.spacing)
    i0 = np.clip(np.floor((lo - origin) / spacing).astype(int), 0, np.asarray(grid.size) - 1)
    i1 = np.clip(np.ceil((hi - origin) / spacing).astype(int) + 1, i0 + 1, np.asarray(grid.size))
    return box_geometry(origin + i0 * spacing, tuple(i1 - i0), float(spacing[0]))


def dense_field(deformation: Deformation, grid: Geometry, rng: np.random.Generator,
                coarse_mm: float) -> sitk.Image:
    """The pull-back displacement (template point - output point) on ``grid`` as a float32 vector
    image for ``sitk.Warp``. Evaluated on a ``coarse_mm`` lattice, B-spline upsampled (exact for
    the affine part). Consumes ``rng`` for the random smooth deformation."""
    lat = Lattice(grid, coarse_mm)
    pts = lat.points()
    lat_grid = box_geometry(lat.origin, tuple(lat.size), coarse_mm)
    rand = smooth_noise(rng, lat_grid, deformation.random_scale_mm, components=3)
    p1 = pts + np.moveaxis(rand, 0, -1) * deformation.random_amplitude_mm
    p1 += mass_effect_displacement(pts, deformation.masses)
    disp = (deformation.pose.to_template(p1) - pts).astype(np.float32)
    dense = np.empty(grid.shape + (3,), dtype=np.float32)
    for d in range(3):
        dense[..., d] = lat.upsample(np.ascontiguousarray(disp[..., d]))
    image = sitk.GetImageFromArray(dense, isVector=True)
    grid.apply_to(image)
    return image


def warp(image: sitk.Image, field_image: sitk.Image, grid: Geometry, outside: float = 0.0) -> np.ndarray:
    """Pull ``image`` (template space) back onto ``grid`` through ``field_image`` (linear);
    ``outside`` fills points that map outside the template."""
    out = sitk.Warp(image, field_image, sitk.sitkLinear, grid.size, grid.origin, grid.spacing,
                    grid.direction, float(outside))
    return sitk.GetArrayFromImage(out)
