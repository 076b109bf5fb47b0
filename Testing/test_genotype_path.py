"""The radiological-feature genotype path: features, stored regression, calibration rules, status,
and its use by the Predictor (same logits as the explanation path, OOD withholding)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from GliomaMTLLib.genotype.features import FEATURE_NAMES, radiological_features
from GliomaMTLLib.genotype.fit import fit_calibration, fit_ood, fit_standardization, fit_task, task_status
from GliomaMTLLib.genotype.model import KIND, FeatureGenotypePath, TaskRegression
from GliomaMTLLib.metrics.calibration import fit_temperature_bias

N = 16


def _ring(center, r, edema=2.0, enhancing=0.9, size=N):
    g = np.indices((size,) * 3).astype(np.float32)
    d = np.sqrt(((g - np.asarray(center, np.float32)[:, None, None, None]) ** 2).sum(0))
    core = 1 / (1 + np.exp((d - r) / 0.6))
    wt = 1 / (1 + np.exp((d - r - edema) / 0.6))
    et = core * enhancing / (1 + np.exp(-(d - 0.6 * r) / 0.5))
    return core, wt, et


def _probs(core, wt, et):
    return torch.from_numpy(np.stack([1 - wt, core - et, wt - core, et]).astype(np.float32))


def _inputs(probs, seed=0):
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.normal(0, 0.3, (4, N, N, N)).astype(np.float32))
    depth = torch.full((N, N, N), 15.0)
    position = torch.zeros(3, N, N, N)
    return probs, image, depth, position


def test_features_are_named_finite_and_differentiable() -> None:
    probs, image, depth, position = _inputs(_probs(*_ring((8, 8, 8), 4)))
    probs.requires_grad_(True)
    image.requires_grad_(True)
    f = radiological_features(probs, image, depth, position, (1.5, 1.5, 1.5))
    assert f.shape == (len(FEATURE_NAMES),) and torch.isfinite(f).all()
    f.sum().backward()
    assert probs.grad.abs().sum() > 0 and image.grad.abs().sum() > 0
    named = dict(zip(FEATURE_NAMES, f.detach().numpy()))
    # a 4-voxel-radius ball at 1.5 mm: ~ 4/3 pi (6 mm)^3 = 0.9 ml of core
    assert 0.4 < math.expm1(named["log_tc_ml"]) < 1.6
    assert named["et_share_of_core"] > 0.2 and named["depth_mm"] == pytest.approx(15.0, abs=0.1)


def test_features_see_enhancement_and_multifocality() -> None:
    ring = radiological_features(*_inputs(_probs(*_ring((8, 8, 8), 4))), (1.0,) * 3)
    quiet = radiological_features(*_inputs(_probs(*_ring((8, 8, 8), 4, enhancing=0.02))), (1.0,) * 3)
    i = FEATURE_NAMES.index("et_share_of_core")
    assert ring[i] > 5 * quiet[i]
    parts = [_ring(c, 1.8, edema=1.0) for c in ((4, 4, 4), (11, 11, 4), (4, 11, 11), (11, 4, 11))]
    multi = [np.clip(sum(p[k] for p in parts), 0, 1) for k in range(3)]
    many = radiological_features(*_inputs(_probs(*multi)), (1.0,) * 3)
    s = FEATURE_NAMES.index("core_sphericity")
    assert many[s] < 0.6 * ring[s]


def test_calcification_focus_sees_small_dark_foci_inside_the_core_not_its_border() -> None:
    probs, image, depth, position = _inputs(_probs(*_ring((8, 8, 8), 5, enhancing=0.02)), seed=1)
    i = FEATURE_NAMES.index("calcification_focus")
    plain = radiological_features(probs, image, depth, position, (1.5,) * 3)[i]
    calcified = image.clone()
    for z, y, x in ((7, 8, 8), (9, 9, 6), (6, 10, 9), (9, 6, 10)):  # four 1-voxel foci dark on T2 and FLAIR
        calcified[2:, z, y, x] -= 3.0
    focal = radiological_features(probs, calcified, depth, position, (1.5,) * 3)[i]
    assert focal > plain + 1.0
    # dark tissue just outside the core (normal white matter around a tumor) is not a calcification
    outside = image.clone()
    outside[2:, :, :, :2] -= 3.0
    assert radiological_features(probs, outside, depth, position, (1.5,) * 3)[i] == pytest.approx(float(plain), abs=0.3)


def test_calcification_focus_z_follows_the_cores_own_texture_not_the_scanners_noise() -> None:
    """The same calcified foci give the same z-score in a quiet and in a noisy scan (the raw
    calcification_focus scales with the noise); a core without foci stays well below them."""
    probs = _probs(*_ring((8, 8, 8), 5, enhancing=0.02))
    depth, position = torch.full((N, N, N), 15.0), torch.zeros(3, N, N, N)
    i, raw = FEATURE_NAMES.index("calcification_focus_z"), FEATURE_NAMES.index("calcification_focus")

    def features(noise: float, foci: bool) -> torch.Tensor:
        rng = np.random.default_rng(4)
        image = torch.from_numpy(rng.normal(0.0, noise, (4, N, N, N)).astype(np.float32))
        if foci:
            for z, y, x in ((7, 8, 8), (9, 9, 6), (6, 10, 9), (9, 6, 10)):
                image[2:, z, y, x] -= 10.0 * noise  # dark on T2 and FLAIR
        return radiological_features(probs, image, depth, position, (1.5,) * 3)

    quiet, noisy = features(0.1, True), features(0.4, True)
    assert float(noisy[raw]) > 3.0 * float(quiet[raw])
    assert float(quiet[i]) == pytest.approx(float(noisy[i]), rel=0.15)
    for noise, with_foci in ((0.1, quiet), (0.4, noisy)):
        assert float(with_foci[i]) > float(features(noise, False)[i]) + 3.0
    # a core without texture at all: the spread floor keeps the score finite and small
    flat = radiological_features(probs, torch.zeros(4, N, N, N), depth, position, (1.5,) * 3)
    assert float(flat[i]) == pytest.approx(0.0, abs=1e-3)


def test_enhancement_border_minus_center_tells_a_ring_from_solid_enhancement() -> None:
    """A core that enhances only at its border (a ring around necrosis) scores clearly positive; one
    that enhances evenly scores about 0; one that enhances only at its centre, negative."""
    size, r = 24, 8
    core, wt, _ = _ring((12, 12, 12), r, size=size)
    probs = _probs(core, wt, np.zeros_like(core))
    d = np.sqrt(((np.indices((size,) * 3) - 12.0) ** 2).sum(0))
    depth, position = torch.full((size,) * 3, 15.0), torch.zeros(3, size, size, size)
    i = FEATURE_NAMES.index("enhancement_border_minus_center")

    def score(enhancing: np.ndarray) -> float:
        image = np.zeros((4, size, size, size), np.float32)
        image[1] = enhancing  # t1c; t1n stays 0
        return float(radiological_features(probs, torch.from_numpy(image), depth, position, (1.5,) * 3)[i])

    # enhancement reaching the partial-volume edge of the core (the soft mask extends past d = r)
    ring, solid, centre = score((d > r - 3) & (d <= r + 1.5)), score(d <= r + 1.5), score(d <= r - 4)
    assert ring > 0.5
    assert abs(solid) < 0.1
    assert centre < -0.3


def test_fluid_smooth_share_sees_a_cyst_and_follows_the_scans_own_noise() -> None:
    """A tumor filled with smooth fluid scores high, a textured solid one low, whatever the noise
    level of the scan (the threshold is relative to the normal brain); a flat FLAIR gives 0."""
    size = 24
    core, wt, _ = _ring((12, 12, 12), 6, edema=0.5, size=size)
    two = torch.from_numpy(np.stack([1 - wt, wt]).astype(np.float32))
    depth, position = torch.full((size,) * 3, 15.0), torch.zeros(3, size, size, size)
    i = FEATURE_NAMES.index("fluid_smooth_share_wt")
    inner = (core > 0.5).astype(np.float32)

    def share(noise: float, cyst: bool) -> float:
        rng = np.random.default_rng(3)
        flair = rng.normal(0.0, noise, (size,) * 3).astype(np.float32)
        if cyst:  # fluid: 5 x smoother than the brain
            flair = flair * (1.0 - inner) + 0.2 * flair * inner - 1.0 * inner
        return float(radiological_features(two, torch.from_numpy(flair)[None], depth, position, (1.5,) * 3, ("t2f",))[i])

    for noise in (0.1, 0.4):
        assert share(noise, cyst=True) > 0.5 and share(noise, cyst=False) < 0.2
    assert share(0.1, cyst=True) == pytest.approx(share(0.4, cyst=True), abs=0.1)  # 4 x the noise
    flat = radiological_features(two, torch.zeros(1, size, size, size), depth, position, (1.5,) * 3, ("t2f",))
    assert float(flat[i]) == 0.0
    # a crop with too little brain has no normal-brain reference: 0, never the background's epsilon
    outside = radiological_features(two, torch.ones(1, size, size, size), torch.zeros(size, size, size), position,
                                    (1.5,) * 3, ("t2f",))
    assert float(outside[i]) == 0.0


def test_fluid_smooth_share_has_true_gradients_in_the_image() -> None:
    """The reference (normal brain's lower quartile) moves with the image in the gradient too, so
    integrated gradients stay complete: autograd matches finite differences (double precision)."""
    from GliomaMTLLib.genotype.features import fluid_smooth_share

    size = 10
    _, wt, _ = _ring((5, 5, 5), 3, edema=0.5, size=size)
    rng = np.random.default_rng(2)
    flair = torch.from_numpy(rng.normal(0.0, 0.3, (size,) * 3)).double().requires_grad_(True)
    wt_t, depth = torch.from_numpy(wt).double(), torch.full((size,) * 3, 15.0, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: fluid_smooth_share(f, wt_t, depth), (flair,), eps=1e-6, atol=1e-5)


def test_feature_input_shapes_are_checked() -> None:
    probs, image, depth, position = _inputs(_probs(*_ring((8, 8, 8), 4)))
    with pytest.raises(ValueError, match="must lie on the probs grid"):
        radiological_features(probs, image[:, :8], depth, position, (1.0,) * 3)
    with pytest.raises(ValueError, match="softmax"):
        radiological_features(probs[:3], image, depth, position, (1.0,) * 3)


def test_whole_tumor_model_features_match_the_same_tumor_given_as_edema() -> None:
    """A 2-class (background, tumor) model - the pediatric FLAIR model - gets the whole-tumor features
    of a 4-class prediction whose tumor is all edema; a FLAIR-dark cyst raises cyst_share_wt."""
    core, wt, et = _ring((8, 8, 8), 4)
    two = torch.from_numpy(np.stack([1 - wt, wt]).astype(np.float32))
    four = torch.from_numpy(np.stack([1 - wt, 0 * wt, wt, 0 * wt]).astype(np.float32))
    _, image, depth, position = _inputs(two)
    a = radiological_features(two, image[3:], depth, position, (1.0,) * 3, ("t2f",))
    b = radiological_features(four, image[3:], depth, position, (1.0,) * 3, ("t2f",))
    torch.testing.assert_close(a, b)
    i = FEATURE_NAMES.index("cyst_share_wt")
    wt_t = torch.from_numpy(wt.astype(np.float32))
    inner = torch.from_numpy((core > 0.5).astype(np.float32))
    solid = radiological_features(two, (2.0 * wt_t)[None], depth, position, (1.0,) * 3, ("t2f",))
    cystic = radiological_features(two, (2.0 * wt_t - 3.0 * inner)[None], depth, position, (1.0,) * 3, ("t2f",))
    assert float(cystic[i]) > float(solid[i]) + 0.1


def _spec(reg: TaskRegression, mean, scale, ood=None) -> dict:
    spec = {"kind": KIND, "features": list(FEATURE_NAMES), "mean": list(mean), "scale": list(scale),
            "tasks": {"idh": reg.to_dict()}}
    if ood is not None:
        spec["ood"] = ood.to_dict()
    return spec


def test_stored_regression_matches_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, len(FEATURE_NAMES)))
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int)
    mean, scale = fit_standardization(x)
    reg, info = fit_task((x - mean) / scale, y, ("wildtype", "mutant"), cs=(0.1, 1.0), folds=3)
    ref = LogisticRegression(C=info["C"], class_weight="balanced", max_iter=5000).fit((x - mean) / scale, y)
    path = FeatureGenotypePath(_spec(reg, mean, scale), ("t1n", "t1c", "t2w", "t2f"))
    logits = path.task_logits(torch.as_tensor(x, dtype=torch.float64))["idh"].numpy()
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], ref.decision_function((x - mean) / scale), atol=1e-5)


def test_malformed_path_spec_is_refused() -> None:
    reg = TaskRegression(["wildtype", "mutant"], np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(ValueError, match="do not fit"):
        FeatureGenotypePath(_spec(reg, np.zeros(len(FEATURE_NAMES)), np.ones(len(FEATURE_NAMES))), ("t1n",))
    with pytest.raises(ValueError, match="kind"):
        FeatureGenotypePath({"kind": "other"}, ("t1n",))


def test_calibration_refuses_to_sharpen_constant_or_unvalidated_logits() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    constant = np.stack([np.zeros(200), np.full(200, 0.3) + 1e-4 * rng.normal(size=200)], 1)
    assert fit_calibration(constant, y)["method"] == "none"
    for seed in (2, 3):  # 30 weakly separated cases: AUC interval includes 0.5; Platt would reverse / sharpen
        r = np.random.default_rng(seed)
        yy = np.arange(30) % 2
        z = 0.03 * (2 * yy - 1) + 0.1 * r.normal(size=30)
        cal = fit_calibration(np.stack([np.zeros(30), z], 1), yy)
        assert cal["val_auc_ci"][0] <= 0.5 <= cal["val_auc_ci"][1]
        assert cal["method"] == "platt" and 0.0 <= cal["a"] <= 1.0
    signal = np.stack([np.zeros(200), 0.2 * (2 * y - 1) + 0.1 * rng.normal(size=200)], 1)  # under-confident
    cal = fit_calibration(signal, y)
    assert cal["a"] > 3.0 and cal["val_auc"] > 0.9


def test_multinomial_calibration_restores_the_class_priors_of_a_balanced_fit() -> None:
    rng = np.random.default_rng(4)
    y = rng.choice(3, size=600, p=[0.6, 0.3, 0.1])
    z = np.eye(3)[y] * 1.2 + rng.normal(size=(600, 3))
    logits = z - np.log([0.6, 0.3, 0.1])  # what class-balanced weights do: every class looks equally likely
    cal = fit_calibration(logits, y)
    assert cal["method"] == "temperature_bias" and len(cal["bias"]) == 3
    reg = TaskRegression(["fusion", "v600e", "other"], np.eye(3), np.zeros(3), cal)
    probs = torch.softmax(reg.calibrate(torch.as_tensor(logits)), dim=-1).numpy()
    # at the fitted offsets the mean probability of each class is its observed frequency
    np.testing.assert_allclose(probs.mean(axis=0), np.bincount(y) / len(y), atol=0.005)
    assert probs.mean(axis=0)[0] > 0.5  # not the balanced third the raw logits give
    stored = TaskRegression.from_dict(reg.to_dict(), 3, "braf")
    torch.testing.assert_close(stored.calibrate(torch.as_tensor(logits)), reg.calibrate(torch.as_tensor(logits)))
    bad = {**reg.to_dict(), "calibration": {**cal, "bias": [0.0, 1.0]}}
    with pytest.raises(ValueError, match=r"braf.calibration: bias .* each of the 3 classes"):
        TaskRegression.from_dict(bad, 3, "braf")
    for t in (0, None, float("nan")):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            TaskRegression.from_dict({**reg.to_dict(), "calibration": {**cal, "temperature": t}}, 3, "braf")
    with pytest.raises(ValueError, match="one finite offset"):
        TaskRegression.from_dict({**reg.to_dict(), "calibration": {**cal, "bias": [0.0, float("nan"), 1.0]}}, 3, "braf")
    # a weak 3-class signal in tiny logits on 45 cases: the NLL would sharpen them (T about 0.16),
    # but the AUC interval includes 0.5, so T stays 1 and only the offsets move
    r = np.random.default_rng(6)
    yy = np.arange(45) % 3
    weak = 0.05 * (0.4 * np.eye(3)[yy] + r.normal(size=(45, 3))) + np.array([0.0, 1.0, -1.0])
    assert fit_temperature_bias(weak, yy)[0] < 0.5
    cal = fit_calibration(weak, yy)
    assert cal["val_auc_ci"][0] <= 0.5 <= cal["val_auc_ci"][1]
    assert cal["method"] == "temperature_bias" and cal["temperature"] == 1.0 and "sharpening refused" in cal["why"]
    probs = torch.softmax(TaskRegression(["a", "b", "c"], np.eye(3), np.zeros(3), cal).calibrate(torch.as_tensor(weak)), -1)
    np.testing.assert_allclose(probs.numpy().mean(axis=0), [1 / 3] * 3, atol=0.01)


def test_not_learned_status_when_interval_includes_half() -> None:
    st = task_status({"auc": 0.6, "auc_ci_low": 0.45, "auc_ci_high": 0.74, "n": 100})
    assert st == {"available": False, "reason": "held-out AUC 0.60 [0.45, 0.74] on 100 held-out synthetic cases includes 0.5 (not learned)"}
    assert task_status({"auc": 0.9, "auc_ci_low": 0.84, "auc_ci_high": 0.95, "n": 100})["available"] is True


def test_ood_threshold_has_at_most_five_percent_validation_false_alarms() -> None:
    rng = np.random.default_rng(2)
    train, val = rng.normal(size=(200, 6)), rng.normal(size=(120, 6))
    ood = fit_ood(train, val)
    assert np.mean(ood.distance(val) > ood.threshold) <= 0.05
    assert ood.distance(np.full(6, 8.0)) > ood.threshold


# ------------------------------------------------------------------ in the Predictor
def _bundle_with_path(tmp_path, *, a: float, b: float, ood_threshold: float, optional=(), headless: bool = False):
    import json

    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.inference.fixtures import make_random_bundle

    if headless:  # a segmentation-only network; its bundle declares the path's task
        bundle = make_random_bundle(tmp_path / "m", main_spacing=(3.0, 3.0, 3.0), tasks=())
    else:
        bundle = make_random_bundle(tmp_path / "m", main_spacing=(3.0, 3.0, 3.0), calibration={"idh": 3.0, "codel_1p19q": 2.0})
    f = len(FEATURE_NAMES)
    reg = TaskRegression(["wildtype", "mutant"], np.zeros((1, f)), np.array([1.0]), {"method": "platt", "a": a, "b": b})
    from GliomaMTLLib.genotype.model import OodModel

    ood = OodModel(np.zeros(f), np.eye(f), ood_threshold)
    meta = json.loads((bundle.folder / "model.json").read_text())
    meta["genotype_paths"] = [_spec(reg, np.zeros(f), np.ones(f), ood)]
    if headless:
        meta["tasks"] = {"idh": ["wildtype", "mutant"]}
    if optional:
        meta["required_sequences"] = [q for q in meta["sequences"] if q not in optional]
        meta["optional_sequences"] = list(optional)
    (bundle.folder / "model.json").write_text(json.dumps(meta))
    return load_bundle(bundle.folder)


def _case():
    from GliomaMTLLib.inference.fixtures import phantom_case
    from GliomaMTLLib.io.geometry import Geometry

    geom = Geometry(size=(40, 40, 40), spacing=(3.0, 3.0, 3.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    return phantom_case(geom, tumor_radius=4.0)


def test_predictor_genotype_comes_from_the_path_with_its_own_calibration(tmp_path) -> None:
    from GliomaMTLLib.inference import Predictor

    predictor = Predictor(_bundle_with_path(tmp_path, a=2.0, b=0.5, ood_threshold=1e9), device="cpu", engine="torch")
    prediction = predictor.predict(_case())
    # coefficients 0, intercept 1: logit a * 1 + b = 2.5; the bundle's temperature 3 is not applied to a path task
    assert prediction.genotype["idh"]["mutant"] == pytest.approx(1 / (1 + math.exp(-2.5)), abs=1e-5)
    assert not any("unlike the training data" in w for w in prediction.warnings)
    # the explanation's function gives the same logits on the same window
    window = predictor.genotype_window
    assert window is not None
    with torch.no_grad():
        from GliomaMTLLib.preprocess import crop, preprocess

        pre = preprocess(_case(), predictor.sequences, predictor.main.preprocess)
        x = torch.from_numpy(np.ascontiguousarray(crop(pre.image, window, 0.0)[None]))
        logits = predictor.task_logits(x)
    p = predictor.task_logits.probabilities(logits)["idh"][0, 1].item()
    assert p == pytest.approx(prediction.genotype["idh"]["mutant"], abs=1e-5)


def test_segmentation_only_network_gets_its_genotype_from_the_path(tmp_path) -> None:
    import json

    from GliomaMTLLib.bundle import BundleError
    from GliomaMTLLib.inference import Predictor

    bundle = _bundle_with_path(tmp_path, a=2.0, b=0.5, ood_threshold=1e9, headless=True)
    assert bundle.meta["stages"]["main"]["network"]["tasks"] == {}
    predictor = Predictor(bundle, device="cpu", engine="torch")
    prediction = predictor.predict(_case())
    assert list(prediction.genotype) == ["idh"]
    assert prediction.genotype["idh"]["mutant"] == pytest.approx(1 / (1 + math.exp(-2.5)), abs=1e-5)
    assert predictor.genotype_window is not None
    # the explanation's function works without heads and gives the same logits
    from GliomaMTLLib.preprocess import crop, preprocess

    pre = preprocess(_case(), predictor.sequences, predictor.main.preprocess)
    x = torch.from_numpy(np.ascontiguousarray(crop(pre.image, predictor.genotype_window, 0.0)[None]))
    with torch.no_grad():
        p = predictor.task_logits.probabilities(predictor.task_logits(x))["idh"][0, 1].item()
    assert p == pytest.approx(prediction.genotype["idh"]["mutant"], abs=1e-5)
    # a task that neither a head nor a path predicts is refused, naming it
    meta = json.loads((bundle.folder / "model.json").read_text())
    meta["tasks"]["codel_1p19q"] = ["intact", "codeleted"]
    (bundle.folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"\['codel_1p19q'\] have no head in the main network and no genotype path"):
        Predictor(bundle.folder, device="cpu", engine="torch")


def test_predictor_withholds_genotype_when_features_are_out_of_distribution(tmp_path) -> None:
    from GliomaMTLLib.inference import Predictor

    predictor = Predictor(_bundle_with_path(tmp_path, a=1.0, b=0.0, ood_threshold=1e-3), device="cpu", engine="torch")
    prediction = predictor.predict(_case())
    assert any(w.startswith("input unlike the training data") for w in prediction.warnings)
    calls = prediction.calls()
    assert calls["idh"]["available"] is False and calls["idh"]["probabilities"] is None
    assert "unlike the training data" in calls["idh"]["reason"]


def test_predictor_withholds_genotype_when_a_feature_sequence_is_missing(tmp_path) -> None:
    from GliomaMTLLib.inference import Predictor

    bundle = _bundle_with_path(tmp_path, a=1.0, b=0.0, ood_threshold=1e9, optional=("t1c",))
    case = _case()
    del case.images["t1c"]
    prediction = Predictor(bundle, device="cpu", engine="torch").predict(case)
    calls = prediction.calls()
    assert calls["idh"]["available"] is False and "missing t1c" in calls["idh"]["reason"]


def test_conditional_task_multiplies_parent_and_conditional_probabilities() -> None:
    f = len(FEATURE_NAMES)
    rng = np.random.default_rng(3)
    idh = TaskRegression(["wildtype", "mutant"], rng.normal(size=(1, f)), np.array([0.2]), {"method": "platt", "a": 0.8, "b": -0.1})
    codel = TaskRegression(["intact", "codeleted"], rng.normal(size=(1, f)), np.array([-0.4]), {"method": "platt", "a": 1.2, "b": 0.3},
                           given=("idh", "mutant"))
    spec = _spec(idh, np.zeros(f), np.ones(f))
    spec["tasks"]["codel_1p19q"] = codel.to_dict()
    assert spec["tasks"]["codel_1p19q"]["given"] == {"task": "idh", "class": "mutant"}
    path = FeatureGenotypePath(spec, ("t1n", "t1c", "t2w", "t2f"))
    feats = torch.tensor(rng.normal(size=(50, f)), dtype=torch.float64, requires_grad=True)
    out = path.task_logits(feats)
    p_mut = torch.softmax(out["idh"], -1)[:, 1]
    p_codel = torch.softmax(out["codel_1p19q"], -1)[:, 1]
    z = feats.detach().numpy()
    s = z @ codel.coef[0] + codel.intercept[0]
    p_cond = 1 / (1 + np.exp(-(1.2 * s + 0.3)))
    np.testing.assert_allclose(p_codel.detach().numpy(), p_mut.detach().numpy() * p_cond, rtol=1e-6, atol=1e-9)
    assert bool((p_codel <= p_mut + 1e-12).all())
    p_codel.sum().backward()  # the explanation path reaches the features through both regressions
    assert feats.grad is not None and float(feats.grad.abs().sum()) > 0


def test_malformed_conditional_task_is_refused() -> None:
    f = len(FEATURE_NAMES)
    idh = TaskRegression(["wildtype", "mutant"], np.zeros((1, f)), np.zeros(1))
    spec = _spec(idh, np.zeros(f), np.ones(f))
    spec["tasks"]["codel_1p19q"] = {**TaskRegression(["intact", "codeleted"], np.zeros((1, f)), np.zeros(1)).to_dict(),
                                    "given": {"task": "idh", "class": "oligo"}}
    with pytest.raises(ValueError, match="codel_1p19q.given.*'oligo'"):
        FeatureGenotypePath(spec, ("t1n",))
    spec["tasks"]["codel_1p19q"]["given"] = "idh"
    with pytest.raises(ValueError, match="given: expected"):
        FeatureGenotypePath(spec, ("t1n",))


# ------------------------------------------------------------------ patient age as an input
def _age_spec(base: dict, *, coef_age: float, low: float = 18.0, high: float = 90.0) -> dict:
    f = len(FEATURE_NAMES)
    reg = TaskRegression(["wildtype", "mutant"], np.concatenate([np.zeros((1, f)), [[coef_age]]], axis=1),
                         np.array([0.0]), {"method": "platt", "a": 1.0, "b": 0.0})
    return {**base, "age": {"mean": 50.0, "scale": 10.0, "min": low, "max": high, "tasks": {"idh": reg.to_dict()},
                            "status": {"idh": {"available": True, "reason": "held-out AUC 0.95 [0.90, 0.98]"}}}}


def test_age_enters_only_the_age_regression_within_its_range() -> None:
    f = len(FEATURE_NAMES)
    reg = TaskRegression(["wildtype", "mutant"], np.zeros((1, f)), np.array([1.0]), {"method": "platt", "a": 1.0, "b": 0.0})
    path = FeatureGenotypePath(_age_spec(_spec(reg, np.zeros(f), np.ones(f)), coef_age=-2.0), ("t1n", "t1c", "t2w", "t2f"))
    feats = torch.zeros(1, f, dtype=torch.float64)
    image_only = path.task_logits(feats)["idh"][0, 1].item()
    assert image_only == pytest.approx(1.0)
    assert path.task_logits(feats, age=30.0)["idh"][0, 1].item() == pytest.approx(-2.0 * (30.0 - 50.0) / 10.0)
    assert path.task_logits(feats, age=70.0)["idh"][0, 1].item() == pytest.approx(-4.0)
    assert path.task_logits(feats, age=5.0)["idh"][0, 1].item() == pytest.approx(image_only)  # outside 18-90
    assert path.uses_age(30.0) and not path.uses_age(5.0) and not path.uses_age(None)


def test_malformed_age_spec_is_refused() -> None:
    f = len(FEATURE_NAMES)
    reg = TaskRegression(["wildtype", "mutant"], np.zeros((1, f)), np.zeros(1))
    base = _spec(reg, np.zeros(f), np.ones(f))
    good = _age_spec(base, coef_age=1.0)
    with pytest.raises(ValueError, match=r"genotype_path.age: needs scale > 0"):
        FeatureGenotypePath({**good, "age": {**good["age"], "scale": 0.0}}, ("t1n",))
    with pytest.raises(ValueError, match=r"genotype_path.age.tasks: \['braf'\] are not tasks of the path"):
        FeatureGenotypePath({**good, "age": {**good["age"], "tasks": {"braf": good["age"]["tasks"]["idh"]}}}, ("t1n",))
    bad_shape = dict(good["age"]["tasks"]["idh"], coef=[[0.0] * f])  # the age column is missing
    with pytest.raises(ValueError, match=r"genotype_path.age.tasks.idh: coef \(1, %d\)" % f):
        FeatureGenotypePath({**good, "age": {**good["age"], "tasks": {"idh": bad_shape}}}, ("t1n",))


def test_predictor_uses_the_patients_age_and_says_so(tmp_path) -> None:
    import json

    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.inference import Predictor

    bundle = _bundle_with_path(tmp_path, a=1.0, b=0.0, ood_threshold=1e9)
    meta = json.loads((bundle.folder / "model.json").read_text())
    meta["genotype_paths"][0] = _age_spec(meta["genotype_paths"][0], coef_age=-2.0)
    (bundle.folder / "model.json").write_text(json.dumps(meta))
    predictor = Predictor(load_bundle(bundle.folder), device="cpu", engine="torch")
    case = _case()
    case.age_years = 30.0
    young = predictor.predict(case)
    assert young.genotype["idh"]["mutant"] == pytest.approx(1 / (1 + math.exp(-4.0)), abs=1e-5)
    assert young.calls()["idh"]["reason"] == "with patient age 30: held-out AUC 0.95 [0.90, 0.98]"
    child = _case()
    child.age_years = 5.0
    prediction = predictor.predict(child)
    assert prediction.genotype["idh"]["mutant"] == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-5)  # images alone
    assert any(w.startswith("patient age 5 not used: outside the training range 18-90 years") for w in prediction.warnings)
    from GliomaMTLLib.explain import explain

    explained = explain(case, "idh", predictor=predictor, steps=4)  # the age-aware probability is explained
    assert explained.attribution.output == pytest.approx(young.genotype["idh"][explained.target], abs=1e-4)
    # the path calibrates its own logits: the explanation names that, not a CNN head's temperature
    assert explained.output_name.endswith("(softmax of the genotype path's calibrated logits)")
    unknown = predictor.predict(_case())  # the age of the last case is not carried over
    assert unknown.genotype["idh"]["mutant"] == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-5)
    assert not any("patient age" in w for w in unknown.warnings)


def test_case_age_is_checked() -> None:
    with pytest.raises(ValueError, match="case phantom: patient age must lie between 0 and 120 years, got 150"):
        from GliomaMTLLib.io.case import Case

        c = _case()
        Case(c.case_id, c.images, c.geometry, age_years=150)
