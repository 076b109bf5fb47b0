"""Cheap checks of an input case against what the models were trained on, as plain-language warnings.

Nothing here stops a prediction; each check adds one sentence to ``Prediction.warnings``.

Input unlike the training data (BraTS-style: skull-stripped, co-registered, about 1 mm):

* **not skull-stripped**: fewer than :data:`MIN_BACKGROUND_FRACTION` of the voxels of a sequence
  are background (exactly 0, or equal to the volume's minimum). Skull-stripped scans are mostly
  zero outside the brain (about 80 % of a 240x240x155 BraTS volume).
* **spacing far from 1 mm**: a voxel side outside :data:`SPACING_RANGE_MM`.
* **very few brain voxels**: the non-zero part (any sequence) is smaller than
  :data:`MIN_BRAIN_ML` (an adult brain is about 1200 ml, a child's after infancy about 900 ml):
  a partial or cropped volume. Not checked when the scan is not skull-stripped.

Sequences that look swapped or mislabelled, from statistics of each sequence z-scored over the
brain (the non-zero voxels), on a regular subsample of the brain for speed. The skewness used is
Bowley's quantile skewness ``k = (p95 + p5 - 2 p50) / (p95 - p5)`` (in [-1, 1], robust to the
tumor and to outliers). Measured on one real BraTS scan (``REAL_STATS.md``): T1 -0.24, T1c -0.20,
T2 +0.44 (CSF is a long bright tail), FLAIR +0.04 (compressed, CSF dark).

* **T2 vs FLAIR**: T2 must be the more right-skewed of the two; warn when ``k(t2f) - k(t2w)``
  exceeds :data:`SKEW_MARGIN` (real scan: -0.39, i.e. the right way round by a wide margin).
* **T1 vs T2**: CSF is dark on T1 and bright on T2, so T2 must be more right-skewed than T1;
  warn when ``k(t1n) - k(t2w) > SKEW_MARGIN`` (real scan: -0.68).
* **T1 vs T1c**: contrast enhancement (tumor rim, vessels, dura) gives T1c the brightest voxels
  of the two (real scan: enhancing tumor at z = +2.5 +- 1.7 on T1c, -1.5 on T1); warn when the
  99.9th percentile of z(t1n) exceeds that of z(t1c) by more than :data:`ENHANCEMENT_MARGIN`.
  A scan without enhancement has similar tails and raises nothing.
* **same image twice**: two sequences with Pearson correlation above :data:`DUPLICATE_CORRELATION`
  over the brain.

The margins are deliberately wide: a false alarm teaches users to ignore warnings. Measured on 24
synthetic phantoms (``GliomaMTLLib.synth.generate_case``, seeds 0-11, adult and pediatric, small
grid), which randomize every tissue's contrast far beyond real scans: 1 case of 24 raised a
false warning (a phantom whose T2 was rendered left-skewed), and of the deliberately swapped
pairs 14/24 T2<->FLAIR, 18/24 T1<->T2 and 7/24 T1<->T1c were flagged (T1c only stands out
where the phantom has enough enhancing tumor).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.labels import SEQUENCE_TITLES

MIN_BACKGROUND_FRACTION = 0.2
SPACING_RANGE_MM = (0.5, 2.0)
MIN_BRAIN_ML = 300.0
SKEW_MARGIN = 0.3
ENHANCEMENT_MARGIN = 1.25
DUPLICATE_CORRELATION = 0.995
#: Brain voxels used for the statistics (a regular subsample above this).
SAMPLE_VOXELS = 200_000


def _title(key: str) -> str:
    return f"{key} ({SEQUENCE_TITLES.get(key, key)})"


def quantile_skewness(values: np.ndarray) -> float:
    """Bowley's quantile skewness with the 5th/50th/95th percentiles (0 for a constant sample)."""
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    spread = p95 - p5
    return float((p95 + p5 - 2 * p50) / spread) if spread > 0 else 0.0


def _background_fraction(array: np.ndarray) -> float:
    flat = array.ravel()
    zero = np.count_nonzero(flat == 0)
    at_min = np.count_nonzero(flat == flat.min())
    return max(zero, at_min) / flat.size


def acquisition_warnings(images: Mapping[str, np.ndarray], geometry: Geometry) -> list[str]:
    """Warnings about skull stripping, voxel size and brain size (see the module docstring)."""
    warnings: list[str] = []
    lo, hi = SPACING_RANGE_MM
    if any(s < lo or s > hi for s in geometry.spacing):
        spacing = " x ".join(f"{s:.2g}" for s in geometry.spacing)
        warnings.append(
            f"voxel spacing {spacing} mm is far from the ~1 mm isotropic scans the model was trained on "
            f"(expected {lo:g}-{hi:g} mm per axis); thick slices blur small structures such as enhancing rims"
        )
    not_stripped = [k for k, a in images.items() if _background_fraction(a) < MIN_BACKGROUND_FRACTION]
    if not_stripped:
        warnings.append(
            f"{', '.join(_title(k) for k in not_stripped)} has almost no zero background: the scan does not look "
            "skull-stripped; the model was trained on skull-stripped, co-registered brains (BraTS-style) and may "
            "segment skull, scalp or neck"
        )
    elif images:
        brain = np.zeros(geometry.shape, dtype=bool)
        for array in images.values():
            brain |= array != 0
        brain_ml = np.count_nonzero(brain) * geometry.voxel_volume_ml
        if brain_ml < MIN_BRAIN_ML:
            warnings.append(
                f"very few brain voxels: the non-zero part of the scan is {brain_ml:.0f} ml (a whole brain is about "
                f"1000-1500 ml); is this a partial or cropped volume? The model expects the whole brain"
            )
    return warnings


def _brain_samples(images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each sequence z-scored over the common brain mask, on the same regular subsample of voxels."""
    brain = None
    for array in images.values():
        brain = (array != 0) if brain is None else (brain | (array != 0))
    assert brain is not None
    index = np.flatnonzero(brain.ravel())
    if index.size > SAMPLE_VOXELS:
        index = index[:: int(np.ceil(index.size / SAMPLE_VOXELS))]
    out = {}
    for key, array in images.items():
        values = array.ravel()[index].astype(np.float64)
        std = values.std()
        out[key] = (values - values.mean()) / std if std > 0 else values - values.mean()
    return out


def sequence_warnings(images: Mapping[str, np.ndarray]) -> list[str]:
    """Warnings about sequences that look swapped, mislabelled or duplicated (see the module docstring)."""
    images = {k: v for k, v in images.items() if np.any(v)}
    if len(images) < 2:
        return []
    z = _brain_samples(images)
    if next(iter(z.values())).size < 100:
        return []
    skew = {k: quantile_skewness(v) for k, v in z.items()}
    warnings: list[str] = []
    keys = list(z)
    duplicates: set[str] = set()
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            r = float(np.mean(z[a] * z[b]))
            if r > DUPLICATE_CORRELATION:
                duplicates |= {a, b}
                warnings.append(
                    f"{_title(a)} and {_title(b)} are nearly identical (correlation {r:.3f} over the brain); "
                    "the same image may have been loaded twice"
                )
    for other in ("t2f", "t1n"):
        if "t2w" in skew and other in skew and not duplicates & {"t2w", other}:
            if skew[other] - skew["t2w"] > SKEW_MARGIN:
                warnings.append(
                    f"{_title('t2w')} and {_title(other)} may be swapped or mislabelled: T2 should show the long bright "
                    f"tail of CSF, but its intensity skewness is {skew['t2w']:+.2f} against {skew[other]:+.2f} for {other}"
                )
    if "t1n" in z and "t1c" in z and not duplicates & {"t1n", "t1c"}:
        top_t1n, top_t1c = (float(np.percentile(z[k], 99.9)) for k in ("t1n", "t1c"))
        if top_t1n - top_t1c > ENHANCEMENT_MARGIN:
            warnings.append(
                f"{_title('t1n')} and {_title('t1c')} may be swapped: the brightest voxels (enhancement, vessels) are "
                f"brighter on t1n than on t1c (99.9th percentile z {top_t1n:+.1f} against {top_t1c:+.1f})"
            )
    return warnings


def input_warnings(images: Mapping[str, np.ndarray], geometry: Geometry) -> list[str]:
    """All input checks: acquisition (skull stripping, spacing, brain size), then sequence identity."""
    return acquisition_warnings(images, geometry) + sequence_warnings(images)
