"""Region and lesion-wise segmentation metrics, checked against the official `brats-evaluation` package.

`brats-evaluation` (0.0.10, Panoptica-based) is run end to end: NIfTI files in tmp_path ->
`evaluate_single_exam` with the bundled `gli` config -> JSON -> its `parse_seg_results` CSV, and the
CSV's per-region `global_dsc_*`, `global_hd95_*`, `lesionwise_*_mean_*` and `all_instance_*`
columns are compared with ours.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from GliomaMTLLib.metrics.segmentation import (
    BRATS_EVALUATION_WORST_HD95,
    LEGACY_WORST_HD95,
    binary_metrics,
    cohort_region_table,
    lesion_metrics,
    region_dice,
    region_metrics,
)

SHAPE = (22, 30, 34)  # (z, y, x)
PKG_REGION = {"WT": "wt", "TC": "tc", "ET": "et"}


def _ball(shape, center, radii):
    zz, yy, xx = np.indices(shape)
    return (
        ((zz - center[0]) / radii[0]) ** 2 + ((yy - center[1]) / radii[1]) ** 2 + ((xx - center[2]) / radii[2]) ** 2
    ) <= 1.0


def random_tumor(rng: np.random.Generator, shape=SHAPE, n_lesions: int = 1, et: bool = True) -> np.ndarray:
    """Nested blobs: edema (2) around core (1) with an enhancing part (3), plus satellite lesions."""
    labels = np.zeros(shape, np.uint8)
    for i in range(n_lesions):
        c = [rng.uniform(0.3 * s, 0.7 * s) for s in shape]
        r = rng.uniform(4.0, 6.5) if i == 0 else rng.uniform(1.2, 2.5)
        labels[_ball(shape, c, [r * rng.uniform(0.8, 1.3) for _ in range(3)])] = 2
        labels[_ball(shape, [x + rng.normal(0, 0.7) for x in c], [0.55 * r] * 3)] = 1
        if et:
            labels[_ball(shape, [x + rng.normal(0, 0.7) for x in c], [0.4 * r, 0.45 * r, 0.4 * r])] = 3
    return labels


def perturb(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """A plausible prediction: shifted by up to a voxel per axis, with one small false-positive blob."""
    pred = np.roll(labels, shift=tuple(int(s) for s in rng.integers(-1, 2, size=3)), axis=(0, 1, 2))
    c = [rng.uniform(2, s - 3) for s in labels.shape]
    pred[_ball(labels.shape, c, (1.2, 1.5, 1.5)) & (pred == 0)] = rng.choice([1, 2, 3])
    return pred


@pytest.fixture(scope="module")
def brats():
    """(evaluator, evaluate_single_exam, parse_seg_results) of the official package."""
    pytest.importorskip("brats_evaluation")
    from brats_evaluation import config_path, evaluate_single_exam, parse_seg_results
    from panoptica import Panoptica_Evaluator

    return Panoptica_Evaluator.load_from_config(str(config_path("gli"))), evaluate_single_exam, parse_seg_results


def official_row(brats, tmp_path, pred: np.ndarray, ref: np.ndarray, name: str = "case") -> dict:
    """Run the official evaluation on NIfTI files (1 mm) and return its parsed CSV row."""
    import pandas as pd

    evaluator, evaluate_single_exam, parse_seg_results = brats
    paths = {}
    for kind, arr in (("pred", pred), ("ref", ref)):
        paths[kind] = tmp_path / f"{name}_{kind}.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(arr.astype(np.uint8)), str(paths[kind]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_single_exam(str(paths["pred"]), str(paths["ref"]), name, evaluator)
    assert "error" not in result, result
    summary = tmp_path / f"{name}.json"
    summary.write_text(json.dumps({"metrics": [result], "missings": []}))
    csv = tmp_path / f"{name}.csv"
    parse_seg_results(str(summary), str(csv))
    df = pd.read_csv(csv)
    return df[df["subject_id"] == name].iloc[0].to_dict()


def assert_same(ours: float, theirs: float, what: str) -> None:
    if math.isnan(theirs):
        assert math.isnan(ours), f"{what}: ours {ours}, brats-evaluation NaN"
    else:
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9), f"{what}: ours {ours}, brats-evaluation {theirs}"


def compare_with_official(brats, tmp_path, pred, ref, name="case") -> dict:
    row = official_row(brats, tmp_path, pred, ref, name)
    ours = region_metrics(pred, ref, (1.0, 1.0, 1.0), convention="brats-evaluation")
    lesions = lesion_metrics(pred, ref, (1.0, 1.0, 1.0))
    for region, key in PKG_REGION.items():
        assert_same(ours[region]["dice"], row[f"global_dsc_{key}"], f"{name} {region} Dice")
        assert_same(ours[region]["hd95"], row[f"global_hd95_{key}"], f"{name} {region} HD95")
        les = lesions[region]
        assert_same(les["lesion_dice"], row[f"lesionwise_dsc_mean_{key}"], f"{name} {region} lesion Dice")
        # the seg parser passes Panoptica's infinite lesion-wise HD95 through; we report the worst case
        their_hd = row[f"lesionwise_hd95_mean_{key}"]
        their_hd = BRATS_EVALUATION_WORST_HD95 if math.isinf(their_hd) else their_hd
        assert_same(les["lesion_hd95"], their_hd, f"{name} {region} lesion HD95")
        assert_same(les["f1"], row[f"all_instance_f1_{key}"], f"{name} {region} detection F1")
        for count in ("tp", "fp", "fn"):
            assert les[count] == row[f"all_instance_{count}_{key}"], f"{name} {region} {count}"
    return ours


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_normal_overlap_matches_brats_evaluation(brats, tmp_path, seed):
    rng = np.random.default_rng(seed)
    ref = random_tumor(rng, n_lesions=1 + seed % 3)
    pred = perturb(rng, ref)
    ours = compare_with_official(brats, tmp_path, pred, ref, f"s{seed}")
    # a genuine overlap case: the numbers are not edge-case constants, and both conventions agree
    legacy = region_metrics(pred, ref, (1.0, 1.0, 1.0))
    for region in ("WT", "TC", "ET"):
        assert 0.0 < ours[region]["dice"] < 1.0
        assert 0.0 < ours[region]["hd95"] < 50.0
        assert legacy[region]["dice"] == ours[region]["dice"]
        assert legacy[region]["hd95"] == ours[region]["hd95"]


def test_empty_prediction(brats, tmp_path):
    ref = random_tumor(np.random.default_rng(10))
    pred = np.zeros_like(ref)
    ours = compare_with_official(brats, tmp_path, pred, ref)
    legacy = region_metrics(pred, ref)
    for region in ("WT", "TC", "ET"):
        assert ours[region]["dice"] == 0.0 and ours[region]["hd95"] == BRATS_EVALUATION_WORST_HD95
        assert legacy[region] == {"dice": 0.0, "hd95": LEGACY_WORST_HD95, "sensitivity": 0.0, "specificity": 1.0}


def test_empty_reference(brats, tmp_path):
    pred = random_tumor(np.random.default_rng(11))
    ref = np.zeros_like(pred)
    ours = compare_with_official(brats, tmp_path, pred, ref)
    legacy = region_metrics(pred, ref)
    for region in ("WT", "TC", "ET"):
        assert ours[region]["dice"] == 0.0 and ours[region]["hd95"] == BRATS_EVALUATION_WORST_HD95
        assert legacy[region]["dice"] == 0.0 and legacy[region]["hd95"] == LEGACY_WORST_HD95
        assert legacy[region]["sensitivity"] == 0.0  # GaNDLF/BraTS 2023: TP / (TP + FN + tiny) = 0
        assert 0.0 < legacy[region]["specificity"] < 1.0


def test_both_empty_region(brats, tmp_path):
    """ET absent from both (a typical low-grade case); WT/TC present and overlapping."""
    rng = np.random.default_rng(12)
    ref = random_tumor(rng, et=False)
    pred = perturb(rng, ref)
    pred[pred == 3] = 1
    ours = compare_with_official(brats, tmp_path, pred, ref)
    assert math.isnan(ours["ET"]["dice"]) and math.isnan(ours["ET"]["hd95"])
    legacy = region_metrics(pred, ref)
    assert legacy["ET"] == {"dice": 1.0, "hd95": 0.0, "sensitivity": 1.0, "specificity": 1.0}
    assert 0.0 < legacy["WT"]["dice"] < 1.0


def test_both_volumes_empty(brats, tmp_path):
    empty = np.zeros(SHAPE, np.uint8)
    ours = compare_with_official(brats, tmp_path, empty, empty)
    assert all(math.isnan(ours[r]["dice"]) for r in ours)
    lesions = lesion_metrics(empty, empty)
    assert all(math.isnan(lesions[r]["lesion_dice"]) and lesions[r]["tp"] == 0 for r in lesions)


def test_disjoint_masks(brats, tmp_path):
    """Both present, no overlap: brats-evaluation gives the worst case; legacy computes the distance."""
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    ref[5:9, 5:9, 5:9] = 2
    pred[5:9, 5:9, 15:19] = 2
    ours = compare_with_official(brats, tmp_path, pred, ref)
    assert ours["WT"]["dice"] == 0.0 and ours["WT"]["hd95"] == BRATS_EVALUATION_WORST_HD95
    legacy = region_metrics(pred, ref)
    assert legacy["WT"]["dice"] == 0.0
    assert 10.0 <= legacy["WT"]["hd95"] <= brute_force_hd95(pred > 0, ref > 0, (1.0, 1.0, 1.0)) + 1e-9


def brute_force_hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx) -> float:
    """Independent HD95: surface voxels (6-connected erosion), KD-tree distances in mm, pooled 95th pct."""
    fp = ndimage.generate_binary_structure(3, 1)
    pts = []
    for m in (pred, ref):
        border = m & ~ndimage.binary_erosion(m, structure=fp)
        pts.append(np.argwhere(border) * np.asarray(spacing_zyx, float))
    d_pred, _ = cKDTree(pts[1]).query(pts[0])
    d_ref, _ = cKDTree(pts[0]).query(pts[1])
    return float(np.percentile(np.hstack((d_ref, d_pred)), 95))


@pytest.mark.parametrize("spacing_xyz", [(0.5, 1.0, 4.0), (1.0, 2.0, 3.0), (3.0, 1.0, 1.0)])
def test_anisotropic_spacing(brats, spacing_xyz):
    """Spacing (x, y, z) is applied to the (z, y, x) axes; lesion-wise agrees with the package given
    zyx spacing; the package's global HD95 ignores spacing, so it matches ours at unit spacing."""
    from panoptica.metrics.hausdorff_distance import _compute_hausdorff_distance95

    evaluator = brats[0]
    rng = np.random.default_rng(20)
    ref = random_tumor(rng, n_lesions=2)
    pred = perturb(rng, ref)
    zyx = tuple(reversed(spacing_xyz))
    ours = region_metrics(pred, ref, spacing_xyz, convention="brats-evaluation")
    unit = region_metrics(pred, ref, (1.0, 1.0, 1.0), convention="brats-evaluation")
    lesions = lesion_metrics(pred, ref, spacing_xyz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official = evaluator.evaluate(pred, ref, voxelspacing=zyx)
    for region, key in PKG_REGION.items():
        res = official[key].to_dict()
        labels = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}[region]
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        assert ours[region]["hd95"] == pytest.approx(brute_force_hd95(p, r, zyx), rel=1e-9)
        assert ours[region]["hd95"] == pytest.approx(_compute_hausdorff_distance95(r, p, voxelspacing=zyx), rel=1e-12)
        assert unit[region]["hd95"] == pytest.approx(res["global_bin_hd95"], rel=1e-12)
        assert ours[region]["dice"] == pytest.approx(res["global_bin_dsc"], rel=1e-12)
        assert lesions[region]["lesion_dice"] == pytest.approx(res["sq_dsc"], rel=1e-12)
        assert lesions[region]["lesion_hd95"] == pytest.approx(res["sq_hd95"], rel=1e-12)
    # a shift of 2 voxels along x only: the distances must scale with the x spacing
    box = np.zeros(SHAPE, np.uint8)
    box[6:16, 8:20, 8:20] = 2
    shifted = np.roll(box, 2, axis=2)
    hd = region_metrics(shifted, box, spacing_xyz)["WT"]["hd95"]
    assert hd == pytest.approx(2 * spacing_xyz[0])


def test_sensitivity_specificity_counts():
    ref = np.zeros((4, 5, 6), bool)
    pred = np.zeros((4, 5, 6), bool)
    ref[1:3, 1:3, 1:3] = True  # 8 voxels
    pred[1:3, 1:3, 2:4] = True  # 8 voxels, 4 overlap
    m = binary_metrics(pred, ref)
    tn = 120 - 12
    assert m["sensitivity"] == pytest.approx(4 / 8)
    assert m["specificity"] == pytest.approx(tn / (tn + 4))  # whole volume, as BraTS
    assert m["dice"] == pytest.approx(0.5)
    roi = np.zeros_like(ref)
    roi[:, :, :5] = True  # 100 voxels; the FP voxels at x=2,3 stay inside
    assert binary_metrics(pred, ref, roi_mask=roi)["specificity"] == pytest.approx((100 - 12) / (100 - 12 + 4))


def test_conventions_and_worst_override():
    ref = random_tumor(np.random.default_rng(5))
    empty = np.zeros_like(ref)
    assert region_metrics(empty, ref, worst_hd95=999.0)["WT"]["hd95"] == 999.0
    assert LEGACY_WORST_HD95 == pytest.approx(373.1287, abs=1e-4)
    with pytest.raises(ValueError, match="convention"):
        region_metrics(ref, ref, convention="brats2099")


def test_input_validation():
    good = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="label values"):
        region_metrics(good + 4, good)
    with pytest.raises(ValueError, match="shape"):
        region_metrics(good, np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        region_metrics(good, good, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="3D"):
        region_metrics(good[0], good[0])
    with pytest.raises(ValueError, match="roi_mask shape"):
        region_metrics(good, good, roi_mask=np.ones((4, 4, 3), bool))
    with pytest.raises(ValueError, match=r"label values \[nan\]"):
        region_metrics(np.full((4, 4, 4), np.nan), good)


def test_perfect_prediction():
    ref = random_tumor(np.random.default_rng(7))
    m = region_metrics(ref, ref, (1.0, 1.0, 2.5))
    for region in ("WT", "TC", "ET"):
        assert m[region] == {"dice": 1.0, "hd95": 0.0, "sensitivity": 1.0, "specificity": 1.0}


def test_cohort_region_table():
    rows = [
        {"ET": {"dice": 0.5, "hd95": 2.0}},
        {"ET": {"dice": 0.7, "hd95": 4.0}},
        {"ET": {"dice": float("nan"), "hd95": float("nan")}},
        {"ET": {"dice": 0.9, "hd95": 9.0}},
    ]
    table = cohort_region_table(rows)
    dice = table["ET"]["dice"]
    assert dice["n"] == 3
    assert dice["mean"] == pytest.approx(0.7)
    assert dice["median"] == pytest.approx(0.7)
    assert dice["std"] == pytest.approx(0.2)  # sample std, as pandas
    assert table["ET"]["hd95"]["median"] == 4.0
    one = cohort_region_table([{"WT": {"dice": 0.8}}])["WT"]["dice"]
    assert one["mean"] == 0.8 and math.isnan(one["std"])


def test_bootstrap_mean_interval_covers_the_mean_and_shrinks_with_n() -> None:
    from GliomaMTLLib.metrics.segmentation import bootstrap_mean_ci

    rng = np.random.default_rng(0)
    small = rng.uniform(0.5, 1.0, 20)
    large = rng.uniform(0.5, 1.0, 500)
    lo_s, hi_s = bootstrap_mean_ci(small)
    lo_l, hi_l = bootstrap_mean_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < 0.5 * (hi_s - lo_s)
    assert bootstrap_mean_ci([0.7, float("nan"), 0.7]) == (0.7, 0.7)
    assert all(np.isnan(bootstrap_mean_ci([float("nan")])))


def test_region_dice_joins_labels_and_scores_an_empty_region_as_1():
    ref = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 0, :2] = 1  # necrotic core
    ref[1, 0, :2] = 3  # enhancing
    pred[0, 0, :2] = 3  # core called enhancing: wrong label, right tumor core
    assert region_dice(pred, ref, (1, 3)) == pytest.approx(2 * 2 / (2 + 4))
    assert region_dice(pred, ref, (3,)) == pytest.approx(0.0)
    assert region_dice(pred, ref, (2,)) == 1.0  # no edema in either
    pred[2, 2, 2] = 2
    assert region_dice(pred, ref, (2,)) == 0.0
