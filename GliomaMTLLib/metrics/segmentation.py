"""BraTS region metrics for one case: Dice, HD95 (mm), sensitivity, specificity; lesion-wise Dice/HD95.

Regions come from :data:`GliomaMTLLib.labels.REGIONS` (WT = {1,2,3}, TC = {1,3}, ET = {3} in the
internal label scheme). Arrays are indexed ``[z, y, x]``; spacing is given in ITK order
``(x, y, z)`` as :class:`GliomaMTLLib.io.geometry.Geometry` stores it, and reversed here.

How the numbers relate to the official BraTS evaluation
-------------------------------------------------------
The official package installed for the tests, ``brats-evaluation`` 0.0.10 (BraTS 2025+, built on
Panoptica 2.x, config ``gli``), reports per region a *global* Dice, NSD and HD95, and
*lesion-wise* (connected-component, one-to-one Hungarian matching on Dice) Dice/HD95/NSD means
plus detection counts. It reports no sensitivity or specificity.

* Dice and HD95 of a non-degenerate case are computed exactly as that package does: HD95 is the
  95th percentile of the *pooled* surface distances of both directions, surfaces being the voxels
  removed by one binary erosion with a 6-connected structuring element, distances from an exact
  Euclidean distance transform with the voxel spacing. (MONAI's ``compute_hausdorff_distance``
  takes the larger of the two directed 95th percentiles instead, which gives different numbers;
  that is why this is written with ``scipy.ndimage`` rather than MONAI.)
* Edge cases differ between BraTS generations, so two conventions are offered:

  ``"legacy"`` (default; BraTS 2018-2023 portal, the convention the seed papers report in)
      both prediction and reference empty: Dice 1, HD95 0; exactly one empty: Dice 0 and
      HD95 = :data:`LEGACY_WORST_HD95` (373.13 mm, the diagonal of the 240x240x155 SRI24 grid);
      otherwise computed, also when the two masks do not overlap.
  ``"brats-evaluation"`` (exactly what ``brats-evaluation`` 0.0.10 reports)
      both empty: Dice NaN, HD95 NaN (left out of cohort means); no overlap at all (one empty, or
      both present but disjoint): Dice 0, HD95 = :data:`BRATS_EVALUATION_WORST_HD95` (373, the
      value its parser substitutes for Panoptica's infinity); otherwise computed.

  Known quirks of the package that this module does *not* copy: its global HD95 ignores the voxel
  spacing (it is in voxels, so it equals mm only on BraTS's 1 mm grid), and when reading NIfTI
  files through SimpleITK it applies the ``(x, y, z)`` spacing to ``(z, y, x)`` arrays in the
  lesion-wise metrics. Here spacing is always applied, on the right axes.
* Sensitivity and specificity follow the BraTS 2023 evaluation code (taken from GaNDLF):
  sensitivity = TP / (TP + FN), 1 when both masks are empty, 0 when only the reference is empty;
  specificity = TN / (TN + FP) counted over the **whole volume** (background outside the brain
  included, as BraTS does), or over ``roi_mask`` when one is given.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from GliomaMTLLib.labels import REGIONS

Convention = Literal["legacy", "brats-evaluation"]
CONVENTIONS: tuple[str, ...] = ("legacy", "brats-evaluation")

#: Worst-case HD95 of the BraTS 2018-2023 evaluation: the diagonal of a 240x240x155 1 mm grid (mm).
LEGACY_WORST_HD95: float = math.sqrt(240.0**2 + 240.0**2 + 155.0**2)  # 373.1287 mm
#: Worst-case HD95 that ``brats-evaluation`` substitutes for an infinite HD95.
BRATS_EVALUATION_WORST_HD95: float = 373.0

# Panoptica's MaxBipartiteMatching default in brats-evaluation's ``gli`` config: pairs need Dice >= 1e-6.
_MATCH_THRESHOLD = 1e-6


def spacing_zyx(spacing_xyz: Sequence[float]) -> tuple[float, float, float]:
    """ITK-order spacing ``(x, y, z)`` -> NumPy-axis order ``(z, y, x)``.

    Raises:
        ValueError: if the spacing does not have three positive entries.
    """
    sp = tuple(float(s) for s in spacing_xyz)
    if len(sp) != 3 or not all(s > 0 and math.isfinite(s) for s in sp):
        raise ValueError(f"spacing_xyz must be three positive numbers (mm), got {spacing_xyz!r}")
    return (sp[2], sp[1], sp[0])


def _check_labels(pred_labels: np.ndarray, ref_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_labels)
    ref = np.asarray(ref_labels)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if pred.ndim != 3:
        raise ValueError(f"expected 3D (z, y, x) label volumes, got {pred.ndim}D")
    for name, arr in (("prediction", pred), ("reference", ref)):
        bad = (arr < 0) | (arr > 3) | (arr != np.round(arr)) if arr.dtype.kind == "f" else (arr < 0) | (arr > 3)
        if np.any(bad):
            raise ValueError(
                f"{name} holds label values {np.unique(arr[bad]).tolist()}; expected internal labels "
                "0 background, 1 NCR, 2 ED, 3 ET (convert BraTS 2020 ET=4 on reading)"
            )
    return pred.astype(np.uint8, copy=False), ref.astype(np.uint8, copy=False)


def _region_lut(values: Sequence[int]) -> np.ndarray:
    """Boolean lookup table label -> in region (faster than np.isin on full volumes)."""
    lut = np.zeros(4, dtype=bool)
    lut[list(values)] = True
    return lut


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two masks to the bounding box of their union plus one voxel.

    Surface extraction, exact distances between surface voxels and connected components are
    unchanged by this crop, and it makes a 240x240x155 volume cost milliseconds instead of seconds.
    """
    union = a | b
    boxes = ndimage.find_objects(union.view(np.uint8))
    if not boxes:
        return a, b
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(boxes[0], union.shape))
    return a[box], b[box]


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, sampling_zyx: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each reference surface voxel to the prediction surface, and vice versa.

    Both masks must be non-empty. Surfaces are ``mask ^ erode(mask)`` with a 6-connected element,
    as in medpy and Panoptica.

    Returns:
        ``(ref_to_pred, pred_to_ref)``, 1D float64 arrays.
    """
    pred, ref = _crop_to_union(np.asarray(pred, bool), np.asarray(ref, bool))
    footprint = ndimage.generate_binary_structure(3, 1)
    pred_border = pred ^ ndimage.binary_erosion(pred, structure=footprint, iterations=1)
    ref_border = ref ^ ndimage.binary_erosion(ref, structure=footprint, iterations=1)
    sampling = np.asarray(sampling_zyx, dtype=np.float64)
    ref_to_pred = ndimage.distance_transform_edt(~pred_border, sampling=sampling)[ref_border]
    pred_to_ref = ndimage.distance_transform_edt(~ref_border, sampling=sampling)[pred_border]
    return ref_to_pred, pred_to_ref


def hd95_mm(pred: np.ndarray, ref: np.ndarray, sampling_zyx: Sequence[float]) -> float:
    """95th percentile of the pooled symmetric surface distances (mm); both masks non-empty."""
    ref_to_pred, pred_to_ref = surface_distances(pred, ref, sampling_zyx)
    return float(np.percentile(np.hstack((ref_to_pred, pred_to_ref)), 95))


def dice_coefficient(pred: np.ndarray, ref: np.ndarray) -> float:
    """2|P and R| / (|P| + |R|); NaN when both are empty (callers apply their convention)."""
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_pred + n_ref == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & ref)) / (n_pred + n_ref)


def region_dice(pred_labels: np.ndarray, ref_labels: np.ndarray, members: Sequence[int]) -> float:
    """Dice of the region made of label values ``members`` in two label maps; 1 when the region is
    empty in both (the BraTS convention)."""
    value = dice_coefficient(np.isin(pred_labels, members), np.isin(ref_labels, members))
    return 1.0 if np.isnan(value) else value


def sensitivity_specificity(
    pred: np.ndarray, ref: np.ndarray, roi_mask: np.ndarray | None = None
) -> tuple[float, float]:
    """Voxel sensitivity and specificity, BraTS 2023 / GaNDLF definitions (see module docstring)."""
    if roi_mask is not None:
        roi = np.asarray(roi_mask, bool)
        if roi.shape != pred.shape:
            raise ValueError(f"roi_mask shape {roi.shape} differs from the label shape {pred.shape}")
        pred, ref = pred[roi], ref[roi]
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref))
    fp, fn = n_pred - tp, n_ref - tp
    tn = int(pred.size) - tp - fp - fn
    sens = 1.0 if n_pred == 0 and n_ref == 0 else (tp / (tp + fn) if tp + fn else 0.0)
    spec = tn / (tn + fp) if tn + fp else 0.0
    return float(sens), float(spec)


def _worst(convention: str, worst_hd95: float | None) -> float:
    if worst_hd95 is not None:
        return float(worst_hd95)
    return LEGACY_WORST_HD95 if convention == "legacy" else BRATS_EVALUATION_WORST_HD95


def binary_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    convention: Convention = "legacy",
    worst_hd95: float | None = None,
    roi_mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Dice, HD95 (mm), sensitivity and specificity of two boolean (z, y, x) masks.

    Args:
        pred, ref: boolean masks of the same shape.
        spacing_xyz: voxel spacing in mm, ITK order (x, y, z).
        convention: ``"legacy"`` or ``"brats-evaluation"`` edge-case rules (module docstring).
        worst_hd95: overrides the convention's worst-case HD95.
        roi_mask: optional mask (e.g. the brain) that specificity is counted in.

    Returns:
        ``{"dice", "hd95", "sensitivity", "specificity"}`` as floats.

    Raises:
        ValueError: on an unknown convention, bad spacing or shape mismatch.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")
    pred = np.asarray(pred, bool)
    ref = np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    sampling = spacing_zyx(spacing_xyz)
    worst = _worst(convention, worst_hd95)
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    sens, spec = sensitivity_specificity(pred, ref, roi_mask)
    if n_pred == 0 and n_ref == 0:
        if convention == "legacy":
            dice, hd95 = 1.0, 0.0
        else:
            dice, hd95 = float("nan"), float("nan")
    elif n_pred == 0 or n_ref == 0 or (convention == "brats-evaluation" and not np.any(pred & ref)):
        dice, hd95 = 0.0, worst
    else:
        dice, hd95 = dice_coefficient(pred, ref), hd95_mm(pred, ref, sampling)
    return {"dice": float(dice), "hd95": float(hd95), "sensitivity": sens, "specificity": spec}


def region_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    convention: Convention = "legacy",
    worst_hd95: float | None = None,
    roi_mask: np.ndarray | None = None,
    regions: Mapping[str, Sequence[int]] = REGIONS,
) -> dict[str, dict[str, float]]:
    """Per-region Dice, HD95 (mm), sensitivity and specificity of one case.

    Args:
        pred_labels, ref_labels: (z, y, x) internal label volumes (values 0..3).
        spacing_xyz: voxel spacing in mm, ITK order (x, y, z), e.g. ``Geometry.spacing``.
        convention: ``"legacy"`` (default) or ``"brats-evaluation"``; see the module docstring.
        worst_hd95: overrides the convention's worst-case HD95.
        roi_mask: optional (z, y, x) mask that specificity is counted in (default: whole volume).
        regions: region name -> label values (default WT, TC, ET).

    Returns:
        ``{region: {"dice", "hd95", "sensitivity", "specificity"}}``.

    Raises:
        ValueError: on shape mismatch, non-3D input, label values outside 0..3, bad spacing or an
            unknown convention.
    """
    pred, ref = _check_labels(pred_labels, ref_labels)
    return {
        name: binary_metrics(
            _region_lut(values)[pred],
            _region_lut(values)[ref],
            spacing_xyz,
            convention=convention,
            worst_hd95=worst_hd95,
            roi_mask=roi_mask,
        )
        for name, values in regions.items()
    }


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components (cc3d's default, which Panoptica uses for 3D)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return labels, int(n)


def _lesion_match(ref_cc: np.ndarray, n_ref: int, pred_cc: np.ndarray, n_pred: int) -> list[tuple[int, int]]:
    """One-to-one matching maximizing total Dice (Panoptica's MaxBipartiteMatching)."""
    if n_ref == 0 or n_pred == 0:
        return []
    size_ref = np.bincount(ref_cc.ravel(), minlength=n_ref + 1)
    size_pred = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    both = (ref_cc > 0) & (pred_cc > 0)
    pairs, inter = np.unique(
        np.stack([ref_cc[both], pred_cc[both]]), axis=1, return_counts=True
    )
    cost = np.full((n_ref, n_pred), 1.0 + 1e-6)
    for (r, p), n in zip(pairs.T, inter):
        dsc = 2.0 * n / (size_ref[r] + size_pred[p])
        if dsc >= _MATCH_THRESHOLD:
            cost[r - 1, p - 1] = 1.0 - dsc
    rows, cols = linear_sum_assignment(cost)
    return [(int(r) + 1, int(c) + 1) for r, c in zip(rows, cols) if cost[r, c] < 1.0]


def lesion_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    worst_hd95: float = BRATS_EVALUATION_WORST_HD95,
    regions: Mapping[str, Sequence[int]] = REGIONS,
) -> dict[str, dict[str, float]]:
    """Lesion-wise detection and segmentation metrics per region, as ``brats-evaluation`` defines them.

    Each region is split into 26-connected components; reference and predicted components are
    matched one-to-one maximizing the summed Dice (Hungarian algorithm; a pair needs Dice >= 1e-6).
    ``lesion_dice`` / ``lesion_hd95`` are the means over matched pairs (``sq_dsc`` / ``sq_hd95`` in
    Panoptica, ``lesionwise_*_mean`` in the package's CSV), ``f1`` is the detection F1 (``rq``).
    With no match but some lesion present: Dice 0 and HD95 ``worst_hd95`` (the package leaves an
    infinite HD95 here; a finite worst case keeps cohort means usable). With no lesion in either:
    NaN. Note this is *not* the BraTS 2023 lesion-wise score (which dilates lesions, drops small
    ones and divides by TP + FN + FP).

    Returns:
        ``{region: {"n_ref", "n_pred", "tp", "fp", "fn", "f1", "lesion_dice", "lesion_hd95"}}``.
    """
    pred, ref = _check_labels(pred_labels, ref_labels)
    sampling = spacing_zyx(spacing_xyz)
    out: dict[str, dict[str, float]] = {}
    for name, values in regions.items():
        ref_mask, pred_mask = _crop_to_union(_region_lut(values)[ref], _region_lut(values)[pred])
        ref_cc, n_ref = _components(ref_mask)
        pred_cc, n_pred = _components(pred_mask)
        matches = _lesion_match(ref_cc, n_ref, pred_cc, n_pred)
        tp = len(matches)
        fp, fn = n_pred - tp, n_ref - tp
        if tp:
            dices, hds = [], []
            for r, p in matches:
                r_mask, p_mask = ref_cc == r, pred_cc == p
                dices.append(dice_coefficient(p_mask, r_mask))
                hds.append(hd95_mm(p_mask, r_mask, sampling))
            f1, lesion_dice, lesion_hd95 = tp / (tp + 0.5 * fp + 0.5 * fn), float(np.mean(dices)), float(np.mean(hds))
        elif n_ref + n_pred:
            f1, lesion_dice, lesion_hd95 = 0.0, 0.0, float(worst_hd95)
        else:
            f1 = lesion_dice = lesion_hd95 = float("nan")
        out[name] = {
            "n_ref": float(n_ref), "n_pred": float(n_pred), "tp": float(tp), "fp": float(fp), "fn": float(fn),
            "f1": float(f1), "lesion_dice": lesion_dice, "lesion_hd95": lesion_hd95,
        }
    return out


def cohort_region_table(
    rows: Iterable[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """Summarize per-case region metrics over a cohort.

    Args:
        rows: one ``region_metrics`` (or ``lesion_metrics``) result per case.

    Returns:
        ``{region: {metric: {"mean", "std", "median", "n"}}}``. NaN values (e.g. both-empty cases
        under the ``brats-evaluation`` convention) are left out, as the BraTS parser's pandas means
        do; ``std`` is the sample standard deviation (ddof=1, NaN for fewer than two values) and
        ``n`` the number of values used.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for region, metrics in row.items():
            for metric, value in metrics.items():
                values.setdefault(region, {}).setdefault(metric, []).append(float(value))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for region, metrics in values.items():
        summary[region] = {}
        for metric, vals in metrics.items():
            arr = np.asarray(vals, dtype=np.float64)
            arr = arr[~np.isnan(arr)]
            n = int(arr.size)
            summary[region][metric] = {
                "mean": float(arr.mean()) if n else float("nan"),
                "std": float(arr.std(ddof=1)) if n > 1 else float("nan"),
                "median": float(np.median(arr)) if n else float("nan"),
                "n": float(n),
            }
    return summary


def bootstrap_mean_ci(values: "np.ndarray | list[float]", n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-case values (NaN dropped; NaNs if none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    return float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))
