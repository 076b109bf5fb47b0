"""Fluid spaces of a phantom: sharp, pure-fluid ventricles and cisterns of subject-specific size.

The MNI152 template is an average of many brains, so its CSF is mostly partial volume (the
ventricles are small and blurred, the basal cisterns never reach pure fluid). Real scans show the
ventricles and cisterns as the largest, sharpest, most fluid structures of the brain (brightest on
T2, most suppressed on FLAIR), with sizes that vary several-fold between subjects (slit-like in
the young, wide in atrophy) and differ between the two sides. Here:

* the ventricular system is the level set ``sdf < r(x)`` of the template's signed distance to its
  ventricles (warped with the subject's deformation, so the tumour's mass effect compresses and
  shifts it), with a subject radius ``r`` (age-dependent), a left/right asymmetry and a smooth
  wobble, rendered as pure fluid with a sharp (partial-volume) edge;
* every other CSF space (cisterns, fissures, sulci) is sharpened: template CSF above a subject
  threshold becomes pure fluid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from GliomaMTLLib.io.geometry import Geometry


@dataclass(frozen=True)
class FluidPlan:
    """Subject parameters of the fluid spaces.

    Attributes:
        radius_mm: growth of the ventricles beyond the template surface (negative = smaller).
        asymmetry_mm: added on the patient's left, subtracted on the right (x > midline = left).
        wobble_mm: amplitude of the smooth irregularity of the ventricle outline.
        csf_threshold: template CSF fraction above which other CSF spaces become pure fluid.
    """

    radius_mm: float
    asymmetry_mm: float
    wobble_mm: float
    csf_threshold: float


def sample_fluid_plan(rng: np.random.Generator, cohort: str, age: float) -> FluidPlan:
    """Draw ventricle size (wide range, larger with age), asymmetry and CSF sharpening."""
    if cohort == "adult":
        radius = float(np.clip(-1.5 + 0.06 * (age - 30.0) + rng.normal(0.0, 1.3), -1.5, 7.0))
    else:
        radius = float(rng.uniform(-1.5, 1.5))
    return FluidPlan(radius_mm=radius, asymmetry_mm=float(np.clip(rng.normal(0.0, 0.8), -2.0, 2.0)),
                     wobble_mm=float(rng.uniform(0.2, 1.2)), csf_threshold=float(rng.uniform(0.3, 0.55)))


def ventricle_distance(vent_sdf: np.ndarray, grid: Geometry, plan: FluidPlan, midline_x: float,
                       wobble: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside) to this subject's ventricle surface on ``grid``."""
    x = grid.origin[0] + np.arange(grid.size[0], dtype=np.float32) * grid.spacing[0]
    side = np.tanh((x - np.float32(midline_x)) / np.float32(6.0))[None, None, :]
    local = np.float32(plan.radius_mm) + np.float32(plan.asymmetry_mm) * side + np.float32(plan.wobble_mm) * wobble
    return vent_sdf - local


def ventricle_weight(distance: np.ndarray, spacing: float) -> np.ndarray:
    """Pure-fluid weight of the ventricles: 1 inside, 0 outside, a sharp partial-volume edge."""
    width = np.float32(max(0.8, 0.6 * spacing))
    return np.clip(0.5 - distance / width, 0.0, 1.0)


def apply_fluid(tissue: dict[str, np.ndarray], ventricles: np.ndarray, plan: FluidPlan) -> None:
    """Turn ventricles and dense CSF into pure fluid in place (weights keep summing to 1)."""
    csf = tissue["csf"]
    sharp = np.clip((csf - np.float32(plan.csf_threshold)) / np.float32(0.2) + np.float32(0.5), 0.0, 1.0)
    fluid = np.maximum(np.maximum(csf, sharp), ventricles)
    rest = np.maximum(tissue["gm"] + tissue["wm"], np.float32(1e-6))
    keep = (1.0 - fluid) / rest
    tissue["gm"] *= keep
    tissue["wm"] *= keep
    tissue["csf"] = fluid.astype(np.float32)
