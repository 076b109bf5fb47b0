"""Cheap checks of an input case against what the models were trained on, as plain-language warnings.

One check stops a prediction: a field of view far too small to hold a brain
(:func:`check_field_of_view`, fewer than :data:`MIN_FIELD_OF_VIEW_ML`) is an error, because
whatever tumor volume and genotype came out would be meaningless. Every other check adds one
sentence to ``Prediction.warnings``, each naming its real reason.

Input unlike the training data (BraTS-style: skull-stripped, co-registered, about 1 mm). The
*background* of a sequence is the most common value on the six faces of its volume when at least
20 % of the face voxels share it (:func:`GliomaMTLLib.io.registration.background_value`):

* **background offset**: a skull-stripped volume whose background is not 0 (e.g. -5000): the
  model takes 0 as "outside the brain", so the intensities should be shifted.
* **tissue at the edges**: no constant background and the faces are mostly bright (above
  :data:`DARK_LEVEL` of the range): the volume is cut through the head (a partial field of view).
* **not skull-stripped**: no constant background covering :data:`MIN_BACKGROUND_FRACTION` of the
  voxels, and dark (noisy) faces: air around a whole head. Skull-stripped scans are mostly one
  value outside the brain (about 80 % of a 240x240x155 BraTS volume).
* **thick slices**: a voxel side above :data:`MAX_SPACING_MM` (finer voxels, e.g. 0.47 mm, are
  resampled to the model's grid and raise nothing).
* **very few brain voxels**: the non-background part (any sequence) is smaller than
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
from GliomaMTLLib.io.validation import InvalidVolumeError
from GliomaMTLLib.labels import SEQUENCE_TITLES

MIN_BACKGROUND_FRACTION = 0.2
#: Voxel sides above this (mm) are thick slices.
MAX_SPACING_MM = 2.0
MIN_BRAIN_ML = 300.0
#: Smallest field of view (ml) accepted at all: a 2.7 cm cube; a whole brain is about 1200 ml.
MIN_FIELD_OF_VIEW_ML = 20.0
#: Face voxels below this fraction of the (p1..p99) range count as dark (air).
DARK_LEVEL = 0.1
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


def _faces(array: np.ndarray) -> np.ndarray:
    return np.concatenate([
        array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel(),
        array[:, :, 0].ravel(), array[:, :, -1].ravel(),
    ])


def constant_background(array: np.ndarray) -> float | None:
    """The value shared by at least 20 % of the face voxels and :data:`MIN_BACKGROUND_FRACTION` of the
    volume (the background of a skull-stripped scan, 0 or offset), else None."""
    values, counts = np.unique(_faces(array), return_counts=True)
    i = int(np.argmax(counts))
    if counts[i] < 0.2 * counts.sum():
        return None
    value = values[i]
    return float(value) if np.count_nonzero(array == value) >= MIN_BACKGROUND_FRACTION * array.size else None


def _tissue_at_edges(array: np.ndarray) -> bool:
    """True when most face voxels are bright: the volume is cut through the head."""
    step = max(1, array.size // 200_000)
    lo, hi = np.percentile(array.ravel()[::step], [1, 99])
    return bool(np.mean(_faces(array) > lo + DARK_LEVEL * (hi - lo)) > 0.5) if hi > lo else False


def check_field_of_view(geometry: Geometry) -> None:
    """Refuse a field of view far too small to hold a brain.

    Raises:
        InvalidVolumeError: the field of view is below :data:`MIN_FIELD_OF_VIEW_ML`.
    """
    extent = [n * s for n, s in zip(geometry.size, geometry.spacing)]
    ml = float(np.prod(extent)) / 1000.0
    if ml < MIN_FIELD_OF_VIEW_ML:
        size = "x".join(str(n) for n in geometry.size)
        spacing = " x ".join(f"{s:.3g}" for s in geometry.spacing)
        raise InvalidVolumeError(
            f"field of view too small to hold a brain: {size} voxels of {spacing} mm cover "
            f"{' x '.join(f'{e:.0f}' for e in extent)} mm ({ml:.1f} ml; a whole brain is about 1200 ml, at least "
            f"{MIN_FIELD_OF_VIEW_ML:g} ml is needed); give the whole-brain volume, not a crop"
        )


def acquisition_warnings(images: Mapping[str, np.ndarray], geometry: Geometry) -> list[str]:
    """Warnings about skull stripping, intensity offset, voxel size and brain size (see the module docstring)."""
    warnings: list[str] = []
    thick = [(axis, s) for axis, s in zip("xyz", geometry.spacing) if s > MAX_SPACING_MM]
    if thick:
        spacing = " x ".join(f"{s:.2g}" for s in geometry.spacing)
        warnings.append(
            f"thick slices: voxel spacing {spacing} mm is coarser than {MAX_SPACING_MM:g} mm along "
            f"{', '.join(axis for axis, _ in thick)}, while the model was trained on ~1 mm isotropic scans; "
            "thick slices blur small structures such as enhancing rims"
        )
    backgrounds = {k: constant_background(a) for k, a in images.items()}
    cut = [k for k, a in images.items() if backgrounds[k] is None and _tissue_at_edges(a)]
    not_stripped = [k for k in images if backgrounds[k] is None and k not in cut]
    offset = {k: b for k, b in backgrounds.items() if b is not None and b != 0.0}
    if cut:
        warnings.append(
            f"{', '.join(_title(k) for k in cut)}: tissue reaches the edges of the volume, which looks cut through "
            "the head (a partial field of view); the model expects the whole brain"
        )
    if not_stripped:
        warnings.append(
            f"{', '.join(_title(k) for k in not_stripped)} has no constant background around the head: the scan "
            "does not look skull-stripped; the model was trained on skull-stripped, co-registered brains "
            "(BraTS-style) and may segment skull, scalp or neck"
        )
    if offset:
        warnings.append(
            f"{', '.join(f'{_title(k)} (background {b:g})' for k, b in offset.items())}: the background outside the "
            "brain is not 0, so the intensities look offset; the model takes 0 as outside the brain: subtract the "
            "background value (or set the background to 0) before predicting"
        )
    if images and not not_stripped and not cut:
        brain = np.zeros(geometry.shape, dtype=bool)
        for key, array in images.items():
            brain |= array != backgrounds[key]
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
        background = constant_background(array)
        inside = array != (0.0 if background is None else background)
        brain = inside if brain is None else (brain | inside)
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
    """All input checks: the field of view (an error), acquisition (skull stripping, offset, spacing,
    brain size), then sequence identity.

    Raises:
        InvalidVolumeError: the field of view is far too small to hold a brain.
    """
    check_field_of_view(geometry)
    return acquisition_warnings(images, geometry) + sequence_warnings(images)
