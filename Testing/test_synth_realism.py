"""What real brains have that the phantoms must have too (issue 11): pure-fluid ventricles of
varying size that are darker on FLAIR than any tumour core, and normal look-alike structures
(choroid plexus, vessels, dura, white-matter hyperintensities, bright limbic grey matter) that
are never labelled. Small grid (3 mm) only.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nilearn")

from GliomaMTLLib.labels import NCR  # noqa: E402
from GliomaMTLLib.synth import synthesize  # noqa: E402
from GliomaMTLLib.synth.distractors import DISTRACTOR_CLASSES  # noqa: E402
from GliomaMTLLib.synth.genotype import sample_subject  # noqa: E402


def _seeds(n: int, start: int = 4000, subtype: str | None = "idh_wt") -> list[int]:
    seeds, seed = [], start
    while len(seeds) < n:
        if subtype is None or sample_subject(np.random.default_rng(seed), "adult").subtype == subtype:
            seeds.append(seed)
        seed += 1
    return seeds


@pytest.fixture(scope="module")
def cases():
    return [synthesize(s, "adult", small=True) for s in _seeds(10)]


def _z(r, seq):
    x = r.case.images[seq]
    v = x[r.brain]
    return (x - v.mean()) / v.std()


def test_ventricles_are_pure_fluid_and_vary_in_size(cases):
    volumes = []
    for r in cases:
        vent = r.tissue_full("ventricles")
        csf = r.tissue_full("csf")
        core = vent > 0.99
        assert core.sum() > 20, r.case.case_id
        assert np.all(csf[core] > 0.99)  # pure fluid, not partial volume
        volumes.append(float(vent.sum()) * r.case.geometry.voxel_volume_ml)
    assert max(volumes) / min(volumes) > 1.8, volumes  # young .. atrophic


def test_ventricles_darker_than_necrotic_core_on_flair(cases):
    vent_z, ncr_z = [], []
    for r in cases:
        if r.style.sequences["t2f"].wild or np.count_nonzero(r.case.label == NCR) < 5:
            continue
        z = _z(r, "t2f")
        vent_z.append(z[r.tissue_full("ventricles") > 0.9].mean())
        ncr_z.append(z[r.case.label == NCR].mean())
    assert len(vent_z) >= 5
    assert np.mean(ncr_z) > np.mean(vent_z) + 1.0, (np.mean(ncr_z), np.mean(vent_z))
    assert np.mean(np.asarray(ncr_z) > np.asarray(vent_z)) >= 0.9
    assert np.mean(ncr_z) > 0.5  # FLAIR-bright, as real necrotic core (z +1.4 .. +2.5)


def test_choroid_plexus_is_t1c_bright_inside_ventricles_and_unlabelled(cases):
    bright = []
    for r in cases:
        w = r.distractor_full("choroid")
        assert w.max() > 0.3, r.case.case_id
        assert np.all(r.case.label[w > 0.02] == 0)
        assert np.all(r.tissue_full("ventricles")[w > 0.3] > 0.3)  # lies in the ventricles
        if not r.style.sequences["t1c"].wild and (w > 0.5).any():  # 3 mm voxels: mostly partial volume
            z = _z(r, "t1c")
            bright.append(z[w > 0.5].mean() > np.median(z[r.brain]) + 0.5)
    assert len(bright) >= 5 and np.mean(bright) >= 0.8, bright


def test_labels_never_cover_distractors(cases):
    seen = set()
    for r in cases:
        for name in DISTRACTOR_CLASSES:
            w = r.distractor_full(name)
            if w.max() > 0:
                seen.add(name)
            assert np.all(r.case.label[w > 0.02] == 0), (r.case.case_id, name)
            assert np.all(w[~r.brain] == 0)
    assert seen >= {"choroid", "vessel", "wmh", "gm_hyper"}, seen


def test_vessels_bright_on_t1c_dark_on_t2(cases):
    t1c, t2 = [], []
    for r in cases:
        w = r.distractor_full("vessel") > 0.5
        if w.sum() < 3:
            continue
        if not r.style.sequences["t1c"].wild:
            t1c.append(_z(r, "t1c")[w].mean())
        if not r.style.sequences["t2w"].wild:
            t2.append(_z(r, "t2w")[w].mean() - _z(r, "t2w")[r.brain & (r.tissue_full("csf") > 0.95)].mean())
    assert len(t1c) >= 3 and np.mean(t1c) > 0.5
    assert len(t2) >= 3 and np.mean(t2) < -1.0  # flow voids, far below the surrounding fluid


def test_same_seed_same_fluid_and_distractors():
    a = synthesize(4242, "adult", small=True)
    b = synthesize(4242, "adult", small=True)
    np.testing.assert_array_equal(a.ventricles, b.ventricles)
    for name in DISTRACTOR_CLASSES:
        np.testing.assert_array_equal(a.distractor_full(name), b.distractor_full(name))
    np.testing.assert_array_equal(a.case.images["t2f"], b.case.images["t2f"])


def test_generator_version_is_in_the_prepared_cache_key():
    from GliomaMTLLib.synth.generator import GENERATOR_VERSION
    from GliomaMTLLib.train.config import load_recipe
    from GliomaMTLLib.train.data import stage_cache_spec

    recipe = load_recipe("gliomamtl_adult", smoke=True)
    spec = stage_cache_spec(recipe, "main")
    assert spec["data"]["generator"] == GENERATOR_VERSION >= 2
