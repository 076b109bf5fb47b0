"""Synthetic phantom generator: reproducibility, geometry, labels, tissue contrast, genotype links.

Everything runs on the small grid (64x64x52, 3 mm) except one full-size generation.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nilearn")

from GliomaMTLLib.io.case import Case  # noqa: E402
from GliomaMTLLib.labels import ED, ET, GENOTYPE_TASKS, NCR, SEQUENCES  # noqa: E402
from GliomaMTLLib.synth import FULL_GRID, SMALL_GRID, generate_case, synthesize  # noqa: E402

from GliomaMTLLib.synth.genotype import sample_subject  # noqa: E402


def _seeds(cohort: str, start: int, quota: dict[str, int]) -> list[int]:
    """Seeds with a fixed number of cases per subtype (the subject is the first thing a seed
    draws, so this costs no rendering): group statistics then do not hinge on a lucky draw."""
    left = dict(quota)
    seeds = []
    seed = start
    while any(left.values()):
        subtype = sample_subject(np.random.default_rng(seed), cohort).subtype
        if left.get(subtype, 0) > 0:
            left[subtype] -= 1
            seeds.append(seed)
        seed += 1
    return seeds


@pytest.fixture(scope="module")
def adult():
    seeds = _seeds("adult", 1000, {"idh_wt": 10, "idh_mut_intact": 6, "idh_mut_codel": 4})
    return [synthesize(s, "adult", small=True) for s in seeds]


@pytest.fixture(scope="module")
def pediatric():
    seeds = _seeds("pediatric", 2000, {"braf_fusion": 6, "braf_v600e": 6, "braf_other": 4})
    return [synthesize(s, "pediatric", small=True) for s in seeds]


def _z(result, seq):
    x = result.case.images[seq]
    v = x[result.brain]
    return (x - v.mean()) / v.std()


# --- reproducibility -------------------------------------------------------------------------

def test_same_seed_gives_identical_case():
    a = generate_case(7, "adult", small=True)
    b = generate_case(7, "adult", small=True)
    for seq in SEQUENCES:
        np.testing.assert_array_equal(a.images[seq], b.images[seq])
    np.testing.assert_array_equal(a.label, b.label)
    assert a.genotype == b.genotype
    assert (a.survival_days, a.event) == (b.survival_days, b.event)


def test_different_seed_gives_different_case():
    a = generate_case(7, "adult", small=True)
    b = generate_case(8, "adult", small=True)
    assert not np.array_equal(a.images["t1n"], b.images["t1n"])
    assert not np.array_equal(a.label, b.label)


def test_texture_shift_changes_only_the_textures():
    """``texture_like`` (the genotype path's texture-shift split) swaps class textures and nothing
    else: same draws, same contrast, same anatomy and labels; an unknown class is refused."""
    from GliomaMTLLib.synth.appearance import CLASSES, TEXTURE, sample_style

    plain = sample_style(np.random.default_rng(5))
    shifted = sample_style(np.random.default_rng(5), texture_like={"cyst": "wm"})
    for seq in SEQUENCES:
        a, b = plain.sequences[seq], shifted.sequences[seq]
        assert a.means == b.means and a.noise == b.noise
        assert b.texture["cyst"] == pytest.approx(a.texture["cyst"] * TEXTURE["wm"] / TEXTURE["cyst"])
        assert {c: b.texture[c] for c in CLASSES if c != "cyst"} == {c: a.texture[c] for c in CLASSES if c != "cyst"}
    with pytest.raises(ValueError, match="unknown classes \\['cystt'\\]"):
        sample_style(np.random.default_rng(5), texture_like={"cystt": "wm"})
    a = synthesize(7, "adult", small=True)
    b = synthesize(7, "adult", small=True, texture_like={c: "wm" for c in CLASSES})
    np.testing.assert_array_equal(a.case.label, b.case.label)
    assert not np.array_equal(a.case.images["t2f"], b.case.images["t2f"])


def test_case_id_and_cohort_validation():
    case = generate_case(3, "pediatric", small=True, case_id="BraTS-PED-00003-000")
    assert case.case_id == "BraTS-PED-00003-000"
    with pytest.raises(ValueError, match="cohort"):
        generate_case(3, "elderly", small=True)


# --- geometry ------------------------------------------------------------------------------------

def test_grid_constants():
    assert FULL_GRID.size == (240, 240, 155)
    assert FULL_GRID.spacing == (1.0, 1.0, 1.0)
    assert FULL_GRID.origin == (0.0, -239.0, 0.0)
    assert FULL_GRID.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert FULL_GRID.shape == (155, 240, 240)
    # The small grid covers the brain with the same physical centre.
    centre = lambda g: np.asarray(g.origin) + (np.asarray(g.size) - 1) / 2 * np.asarray(g.spacing)  # noqa: E731
    np.testing.assert_allclose(centre(SMALL_GRID), centre(FULL_GRID))
    assert SMALL_GRID.spacing == (3.0, 3.0, 3.0)
    fov = np.asarray(SMALL_GRID.size) * 3.0
    assert np.all(fov >= (180, 180, 150))


def test_full_size_case():
    """One full-size case: the BraTS grid, a BraTS-sized centred brain, float32 arrays."""
    r = synthesize(11, "adult")
    case = r.case
    assert isinstance(case, Case)
    assert case.geometry == FULL_GRID
    for seq in SEQUENCES:
        assert case.images[seq].shape == (155, 240, 240)
        assert case.images[seq].dtype == np.float32
        assert np.all(case.images[seq][~r.brain] == 0)
    assert case.label.dtype == np.uint8
    idx = np.argwhere(r.brain)
    extent = idx.max(0) - idx.min(0) + 1  # z, y, x voxels = mm
    assert 110 <= extent[0] <= 152 and 145 <= extent[1] <= 195 and 115 <= extent[2] <= 160, extent
    centre = (idx.max(0) + idx.min(0)) / 2
    assert np.all(np.abs(centre - np.array([77, 119.5, 119.5])) < 15), centre
    assert idx[:, 1].min() > 5 and idx[:, 1].max() < 234  # the brain touches neither y edge
    volume_ml = r.brain.sum() / 1000.0
    assert 1000 < volume_ml < 1900


def test_orientation_matches_brats():
    """MNI (RAS) anatomy lands on the BraTS grid the way SimpleITK reads BraTS files (LPS, identity
    direction): patient right at low x index, anterior at low y index, superior at high z index."""
    from GliomaMTLLib.synth.anatomy import load_anatomy, ras_to_lps
    from GliomaMTLLib.synth.generator import _pose

    anatomy = load_anatomy(2)
    pose = _pose(np.random.default_rng(0), "adult", FULL_GRID, anatomy)

    def index(ras):
        p = pose.to_output(ras_to_lps(np.asarray(ras, dtype=float)))
        return (p - np.asarray(FULL_GRID.origin)) / np.asarray(FULL_GRID.spacing)

    right, left = index([40, -20, 10]), index([-40, -20, 10])
    front, back = index([0, 50, 10]), index([0, -80, 10])
    top, bottom = index([0, -20, 60]), index([0, -20, -40])
    assert right[0] < left[0] and front[1] < back[1] and top[2] > bottom[2]
    assert np.all((index([0, -17, 10]) > 0) & (index([0, -17, 10]) < np.asarray(FULL_GRID.size)))


# --- labels and background --------------------------------------------------------------------

def test_labels_tumor_inside_brain(adult, pediatric):
    for r in adult + pediatric:
        lab = r.case.label
        assert set(np.unique(lab)) <= {0, NCR, ED, ET}
        assert np.count_nonzero(lab) > 0, r.case.case_id
        assert not np.any((lab > 0) & ~r.brain)


def test_background_exactly_zero_and_brain_nonzero(adult):
    for r in adult:
        for seq in SEQUENCES:
            x = r.case.images[seq]
            assert np.all(x[~r.brain] == 0)
            assert np.all(x[r.brain] != 0)
            if r.store_int16:
                assert np.array_equal(x, np.round(x))
                assert x.max() <= 32767 and x.min() >= -32768
            else:
                assert x[r.brain].min() > 0


def test_intensity_scale_varies(adult):
    maxima = [r.case.images["t1n"].max() for r in adult]
    assert min(maxima) >= 250 and max(maxima) <= 16000
    assert max(maxima) / min(maxima) > 5
    kinds = {r.store_int16 for r in adult}
    assert kinds == {True, False}
    negative = [r for r in adult if any(r.case.images[s].min() < 0 for s in SEQUENCES)]
    assert negative, "some int16 cases should carry small negative edge values"
    for r in negative:
        assert r.store_int16
        for seq in SEQUENCES:
            x = r.case.images[seq]
            assert x.min() >= -0.01 * x.max() - 1


def test_genotype_labels(adult, pediatric):
    for r in adult:
        g = r.case.genotype
        assert set(g) == {"idh", "codel_1p19q"}
        assert g["idh"] in GENOTYPE_TASKS["idh"] and g["codel_1p19q"] in GENOTYPE_TASKS["codel_1p19q"]
        if g["codel_1p19q"] == "codeleted":
            assert g["idh"] == "mutant"  # only IDH-mutant tumours are codeleted
        assert r.case.survival_days >= 1 and isinstance(r.case.event, bool)
    for r in pediatric:
        assert set(r.case.genotype) == {"braf"}
    assert {r.case.genotype["idh"] for r in adult} == {"wildtype", "mutant"}


def test_replay_main_lesion_gives_the_generators_own_draws(adult, pediatric):
    from GliomaMTLLib.synth.anatomy import ras_to_lps
    from GliomaMTLLib.synth.generator import replay_main_lesion

    for r in adult[:4] + pediatric[:4]:
        seed = int(r.case.case_id.rsplit("-", 1)[1])
        subject, pose, centre = replay_main_lesion(seed, r.subject.cohort, small=True)
        assert subject.subtype == r.subject.subtype and subject.age == r.subject.age
        assert subject.lesions[0].params == r.subject.lesions[0].params
        np.testing.assert_allclose(pose.to_output(ras_to_lps(centre)), r.lesions[0].center, atol=1e-9)


# --- tissue contrast -----------------------------------------------------------------------------

def _mostly(flags, fraction=0.7):
    flags = list(flags)
    return sum(flags) >= fraction * len(flags)


def test_edema_bright_on_flair_and_t2(adult):
    flair, t2 = [], []
    for r in adult:
        lab = r.case.label
        if np.count_nonzero(lab == ED) < 5:
            continue
        normal = r.brain & (lab == 0)
        for seq, out in (("t2f", flair), ("t2w", t2)):
            z = _z(r, seq)
            out.append(z[lab == ED].mean() > z[normal].mean() + 0.3)
    assert len(flair) >= 10
    assert _mostly(flair) and _mostly(t2)


def test_enhancing_tumor_bright_on_t1c(adult):
    flags = []
    for r in adult:
        lab = r.case.label
        if np.count_nonzero(lab == ET) < 3:
            continue
        z = _z(r, "t1c")
        flags.append(z[lab == ET].mean() > z[r.brain & (lab == 0)].mean() + 0.3)
    assert len(flags) >= 8
    assert _mostly(flags)


def test_csf_dark_on_flair_and_t1_bright_on_t2(adult):
    checks = {"t2f": [], "t1n": [], "t2w": []}
    for r in adult:
        csf = r.tissue_full("csf") > 0.7
        wm = r.tissue_full("wm") > 0.7
        sel = r.brain & (r.case.label == 0)
        if np.count_nonzero(csf & sel) < 5:
            continue
        for seq in checks:
            x = r.case.images[seq]
            darker = x[csf & sel].mean() < x[wm & sel].mean()
            checks[seq].append(darker if seq != "t2w" else not darker)
    for seq, flags in checks.items():
        assert len(flags) >= 10, seq
        assert _mostly(flags, 0.75), (seq, flags)


def test_contrast_varies_between_cases(adult):
    """SynthSeg-style randomisation: the ED mean on FLAIR varies widely from case to case."""
    vals = []
    for r in adult:
        lab = r.case.label
        if np.count_nonzero(lab == ED) >= 5:
            vals.append(_z(r, "t2f")[lab == ED].mean())
    assert np.std(vals) > 0.4


# --- genotype-linked appearance ------------------------------------------------------------

def test_idh_wildtype_enhances_more(adult):
    def et_fraction(r):
        lab = r.case.label
        return np.count_nonzero(lab == ET) / max(np.count_nonzero(lab), 1)

    wt = [et_fraction(r) for r in adult if r.case.genotype["idh"] == "wildtype"]
    mut = [et_fraction(r) for r in adult if r.case.genotype["idh"] == "mutant"]
    assert len(wt) == 10 and len(mut) == 10
    # medians: one or two ring-enhancing IDH-mutant cases (8-14% of them) must not decide it
    assert np.median(wt) > 2 * np.median(mut)
    # Informative, not deterministic: some mutant enhances or some wildtype does not.
    assert max(mut) > 0 or min(wt) == 0


def test_idh_wildtype_more_edema(adult):
    def ed_ml(r):
        return np.count_nonzero(r.case.label == ED) * r.case.geometry.voxel_volume_ml

    wt = [ed_ml(r) for r in adult if r.case.genotype["idh"] == "wildtype"]
    mut = [ed_ml(r) for r in adult if r.case.genotype["idh"] == "mutant"]
    assert np.mean(wt) > np.mean(mut)


def test_pediatric_fusion_more_inferior(pediatric):
    z = {"fusion": [], "v600e": [], "other": []}
    for r in pediatric:
        z[r.case.genotype["braf"]].append(r.lesions[0].center[2])  # LPS z: superior is +
    assert len(z["fusion"]) == 6 and len(z["v600e"]) == 6
    assert np.mean(z["fusion"]) < np.mean(z["v600e"])
    # Overlapping, not deterministic.
    assert max(z["fusion"]) > min(z["v600e"])


def test_pediatric_smaller_brains(adult, pediatric):
    a = np.mean([r.brain.sum() for r in adult])
    p = np.mean([r.brain.sum() for r in pediatric])
    assert p < 0.85 * a


def test_whole_tumor_volume_range(adult):
    """Whole-tumour volumes span the realistic BraTS range (about 10-200 ml)."""
    vols = [np.count_nonzero(r.case.label) * r.case.geometry.voxel_volume_ml for r in adult]
    assert min(vols) >= 3 and max(vols) <= 320
    assert np.median(vols) > 15 and max(vols) > 60
