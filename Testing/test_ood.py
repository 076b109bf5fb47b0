"""Out-of-distribution warning of the shipped adult genotype path, on cases that are out of
distribution by construction: a healthy brain (no tumor), a metastasis-like phantom (several small
ring-enhancing lesions at the grey-white junction with large edema: caught by counting its cores),
and a volume that is not a brain; and a typical glioma phantom as the control that must not be
flagged. The Mahalanobis threshold and the core-count limit were set on development phantoms at
<= 5% false alarms (model card). Phantoms are the generator's small 3 mm ones, to keep the tests short."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from GliomaMTLLib.bundle import resolve_bundle
from GliomaMTLLib.genotype.context import CropContext

S = 64  # the shipped main window, 1.5 mm voxels
SPACING = (1.5, 1.5, 1.5)


def _shipped_path():
    from GliomaMTLLib.genotype.path import RadiologicalPath

    meta = json.loads((resolve_bundle("gliomamtl_adult") / "model.json").read_text())
    specs = [s for s in meta.get("genotype_paths") or [] if s.get("kind") == "radiological_features/1"]
    if not specs:
        pytest.skip("the shipped adult bundle has no radiological-feature genotype path")
    return RadiologicalPath(specs[0], meta["tasks"])


def _distance(path, probs: np.ndarray, image: np.ndarray, depth: np.ndarray) -> float:
    g = (np.indices((S,) * 3) - (S - 1) / 2.0) / 60.0  # a window ~ 1/3 of the brain off its centre
    position = np.stack([g[0] + 0.3, -g[1] + 0.2, g[2] + 0.4]).astype(np.float32)
    path.set_crop_context(CropContext(depth.astype(np.float32), position, SPACING))
    x = torch.from_numpy(image[None].astype(np.float32))
    seg_logits = torch.from_numpy(np.log(np.clip(probs, 1e-6, 1.0))[None].astype(np.float32))
    with torch.no_grad():
        path(x, seg_logits, {})
    return path.ood_distance()


def _brain_image(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 0.4, (4, S, S, S)).astype(np.float32)


def test_healthy_brain_is_out_of_distribution() -> None:
    path = _shipped_path()
    probs = np.zeros((4, S, S, S), np.float32)
    probs[0] = 1.0  # no tumor anywhere
    d = _distance(path, probs, _brain_image(np.random.default_rng(0)), np.full((S,) * 3, 20.0))
    assert d > path.model.ood.threshold


@functools.lru_cache(maxsize=1)
def _shipped_predictor():
    """The shipped adult Predictor, loaded once for the tests that predict phantoms."""
    from GliomaMTLLib.inference import Predictor

    return Predictor("gliomamtl_adult", device="cpu", num_threads=1)


def _small_phantom_prediction(seed: int, subject=None):
    """A 3 mm phantom of the generator (optionally with a given subject) through the shipped pipeline."""
    import GliomaMTLLib.synth.generator as generator

    if subject is not None:
        original = generator.sample_subject
        generator.sample_subject = lambda rng, cohort: subject
    try:
        case = generator.generate_case(seed, "adult", small=True)
    finally:
        if subject is not None:
            generator.sample_subject = original
    predictor = _shipped_predictor()
    return predictor.predict(case), predictor


def test_typical_glioma_phantoms_are_rarely_flagged() -> None:
    """The control: ordinary phantom gliomas keep their genotype. The checks are set for <= 5% false
    alarms, so one phantom in eight may be flagged (each shipped network so far has flagged one of
    seeds 0-7 here: 0.3.1 seed 5 by its features, 0.4.0 seed 2, a faint 1 ml core both networks
    misplace, by three spurious cores); two would be a broken check."""
    _shipped_path()
    flagged = []
    for seed in range(8):
        prediction, _ = _small_phantom_prediction(seed)
        if any("unlike the training data" in w for w in prediction.warnings):
            flagged.append(seed)
    assert len(flagged) <= 1, f"genotype withheld on ordinary phantoms {flagged}"


def test_metastasis_like_phantom_is_out_of_distribution() -> None:
    """Five 5 mm ring-enhancing lesions at the grey-white junction, each with 22 mm of edema. The
    feature distance alone missed these (adult 0.3.0: 3.7-4.4 against its threshold 7.1, 0 of 4
    seeds flagged); the count of separate tumor cores catches them (GliomaMTLLib.inference.lesions)."""
    from GliomaMTLLib.synth.genotype import LesionPlan, Subject

    _shipped_path()
    plans = [LesionPlan(radius=5.0, pattern="ring", tissue="junction", params=dict(
        necrosis=0.5, rim_irregularity=0.1, enhancing_fraction=0.35, edema_margin=22.0, lobulation=0.05, mass=0.3,
        margin_blur=1.0, mismatch=False, calcifications=0)) for _ in range(5)]
    subject = Subject("adult", "idh_wt", {"idh": "wildtype", "codel_1p19q": "intact"}, 60.0, plans, False)
    prediction, predictor = _small_phantom_prediction(0, subject)
    limit = next(p.model.max_core_lesions for p in predictor.task_logits.paths)
    assert limit is not None and prediction.tumor["core_lesions"] > limit
    assert any(w.startswith("input unlike the training data") and "separate tumor cores" in w for w in prediction.warnings)
    assert all(not c["available"] for c in prediction.calls().values())


def test_non_brain_volume_gets_no_genotype() -> None:
    """A 2 mm box holding a bright cylinder (a bottle phantom), through the whole shipped pipeline:
    the genotype is withheld, with a reason."""
    from GliomaMTLLib.io.case import Case
    from GliomaMTLLib.io.geometry import Geometry

    _shipped_path()
    shape = (48, 64, 64)  # z, y, x
    zz, yy, xx = np.indices(shape).astype(np.float32)
    cylinder = ((yy - 32) ** 2 + (xx - 32) ** 2 <= 22**2) & (zz > 4) & (zz < 44)
    rng = np.random.default_rng(0)
    images = {}
    for i, seq in enumerate(("t1n", "t1c", "t2w", "t2f")):
        v = np.where(cylinder, 800.0 + 200.0 * i + rng.normal(0, 20, shape), 0.0)
        images[seq] = v.astype(np.float32)
    geom = Geometry(size=shape[::-1], spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    prediction = _shipped_predictor().predict(Case("bottle", images, geom))
    calls = prediction.calls()
    assert calls and all(not c["available"] for c in calls.values())
    assert any("unlike the training data" in w or "no tumor" in w for w in prediction.warnings)
