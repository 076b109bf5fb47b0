"""Inference pipeline: geometry exactness, cascade, post-processing, genotype, bundles, devices.

Tiny random-weight bundles are built in tmp_path with `make_random_bundle`; the location tests
replace the networks by `IntensityNet`, whose output is a fixed function of the intensity, so a
flipped axis or a misplaced crop moves or loses the predicted blob and fails the test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from GliomaMTLLib.bundle import BundleError
from GliomaMTLLib.inference import PostprocessConfig, Predictor, make_random_bundle, write_prediction
from GliomaMTLLib.inference.device import DeviceError, resolve_device
from GliomaMTLLib.inference.fixtures import phantom_case
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.validation import MissingSequenceError
from GliomaMTLLib.io.writers import write_case
from GliomaMTLLib.labels import GENOTYPE_TASKS

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
FLIP_Z = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
# Axes permuted: array x points superior, y left, z anterior.
PERMUTED = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0)


def _oblique(degrees: float) -> tuple[float, ...]:
    a = math.radians(degrees)
    rot_z = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, math.cos(a / 2), -math.sin(a / 2)], [0, math.sin(a / 2), math.cos(a / 2)]])
    return tuple(float(v) for v in (rot_z @ rot_x).ravel())


GEOMETRIES = {
    "lps": Geometry((40, 44, 36), (1.0, 1.0, 1.0), (-20.0, 10.0, 5.0), IDENTITY),
    "ras": Geometry((40, 44, 36), (1.0, 1.0, 1.0), (20.0, 30.0, -5.0), RAS),
    "flipped_z": Geometry((40, 44, 36), (1.0, 1.0, 1.0), (0.0, 0.0, 40.0), FLIP_Z),
    "permuted": Geometry((40, 44, 36), (1.0, 1.0, 1.0), (3.0, -7.0, 11.0), PERMUTED),
    "oblique": Geometry((40, 44, 36), (1.0, 1.0, 1.0), (5.0, -3.0, 2.0), _oblique(30.0)),
    "anisotropic": Geometry((40, 44, 24), (0.9, 1.1, 1.6), (1.0, 2.0, 3.0), RAS),
}
# Blob centre (z, y, x voxel indices): off-centre on every axis, so any flip moves it.
BLOB_CENTER = (9, 30, 12)
BLOB_RADIUS = 3.5


@pytest.fixture(autouse=True)
def onnx_cache(monkeypatch, tmp_path_factory):
    """ONNX exports of the test bundles go to a temporary cache, shared by the tests of a session."""
    monkeypatch.setenv("GLIOMAMTL_CACHE", str(tmp_path_factory.getbasetemp() / "gliomamtl_cache"))


def blob_case(geometry: Geometry, sequences=("t1n", "t1c", "t2w", "t2f"), center=BLOB_CENTER,
              radius=BLOB_RADIUS, case_id="blob", noise=2.0) -> tuple[Case, np.ndarray]:
    """A uniform ellipsoid 'brain' (value 100 + noise) holding one bright blob (300)."""
    rng = np.random.default_rng(0)
    shape = np.asarray(geometry.shape)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    c = (shape - 1) / 2.0
    brain = sum(((g - ci) / (0.48 * n)) ** 2 for g, ci, n in zip(grids, c, shape)) <= 1.0
    blob = sum((g - ci) ** 2 for g, ci in zip(grids, center)) <= np.sign(radius) * radius**2
    assert not (blob & ~brain).any()
    images = {}
    for key in sequences:
        image = np.where(brain, 100.0 + rng.normal(0, noise, brain.shape), 0.0)
        image[blob] = 300.0
        images[key] = image.astype(np.float32)
    return Case(case_id=case_id, images=images, geometry=geometry), blob


class IntensityNet(torch.nn.Module):
    """Stand-in network: label ``blob_label`` where the last channel's z-score exceeds 2, else
    background; genotype logits ``[scale, 0, ...]`` per task."""

    def __init__(self, num_classes=4, tasks=None, blob_label=1, logits=(2.0, 0.0)):
        super().__init__()
        self.num_classes, self.blob_label = num_classes, blob_label
        self.tasks = tasks or {}
        self.logits = logits
        self.calls = []

    def forward(self, x, tabular=None, with_genotype=True, with_dist=True):
        self.calls.append(tuple(x.shape[2:]))
        seg = torch.full((x.shape[0], self.num_classes, *x.shape[2:]), -20.0, dtype=x.dtype, device=x.device)
        seg[:, 0] = 0.0
        seg[:, self.blob_label] = 20.0 * (x[:, -1] - 2.0)
        genotype = {}
        if with_genotype:
            for task, classes in self.tasks.items():
                row = torch.zeros(len(classes))
                row[: len(self.logits)] = torch.tensor(self.logits[: len(classes)])
                genotype[task] = row[None].repeat(x.shape[0], 1)
        return {"seg": seg, "genotype": genotype}


def tiny_bundle(folder, **kwargs):
    """Tiny networks; a 16^3 main window and no localizer margin beyond its one coarse voxel (the blob
    tests' crops are tight on purpose: a misplaced crop loses the blob)."""
    defaults = dict(main_features=(4, 8), crop_size=(16, 16, 16), localizer_features=(4, 8), input_size=(16, 16, 16),
                    localizer_options={"margin_mm": 0.0})
    return make_random_bundle(folder, **{**defaults, **kwargs})


def random_bundle(folder, **kwargs):
    """Tiny random networks whose single main window covers a whole test case: random weights see
    tumor everywhere, and tiling a whole case with 16^3 windows would only make the tests slow."""
    return tiny_bundle(folder, crop_size=(48, 48, 48), localizer_options={"margin_mm": 0.0}, **kwargs)


def stub_predictor(bundle, blob_label=1, **kwargs):
    n = bundle.meta["stages"]["main"]["network"]["num_seg_classes"]
    nets = {"main": IntensityNet(n, bundle.tasks, blob_label)}
    if "localizer" in bundle.stages:
        nets["localizer"] = IntensityNet(n, {}, blob_label)
    return Predictor(bundle, device="cpu", networks=nets, **kwargs)


def read_back(path):
    image = sitk.ReadImage(str(path))
    return Geometry.from_image(image), sitk.GetArrayFromImage(image)


def dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return random_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


# ---------------------------------------------------------------------------- geometry exactness


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_random_bundle_outputs_lie_on_the_input_grid(bundle, name, tmp_path):
    geometry = GEOMETRIES[name]
    case = phantom_case(geometry, case_id=f"case_{name}")
    prediction = Predictor(bundle, device="cpu").predict(case)
    assert prediction.labels.shape == geometry.shape and prediction.labels.dtype == np.uint8
    assert set(np.unique(prediction.labels)) <= {0, 1, 2, 3}
    assert set(prediction.probabilities) == {"WT", "TC", "ET"}
    for array in prediction.probabilities.values():
        assert array.shape == geometry.shape and array.dtype == np.float32
        assert array.min() >= 0.0 and array.max() <= 1.0
    wt, tc, et = (prediction.probabilities[k] for k in ("WT", "TC", "ET"))
    assert np.all(et <= tc + 1e-6) and np.all(tc <= wt + 1e-6)
    counts = np.bincount(prediction.labels.ravel(), minlength=4)
    vox = geometry.voxel_volume_ml
    assert prediction.volumes_ml["WT"] == pytest.approx(counts[1:].sum() * vox)
    assert prediction.volumes_ml["TC"] == pytest.approx((counts[1] + counts[3]) * vox)
    assert prediction.volumes_ml["ET"] == pytest.approx(counts[3] * vox)
    assert prediction.volumes_ml["edema"] == pytest.approx(counts[2] * vox)

    written = write_prediction(prediction, tmp_path, probabilities=True, images=case.images)
    for key in ("seg", "prob_WT", "prob_TC", "prob_ET"):
        got, array = read_back(written[key])
        assert got.size == geometry.size
        assert np.allclose(got.spacing, geometry.spacing, atol=1e-5)
        assert np.allclose(got.origin, geometry.origin, atol=1e-4)
        assert np.allclose(got.direction, geometry.direction, atol=1e-5)
    _, seg = read_back(written["seg"])
    assert np.array_equal(seg, prediction.labels)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_blob_location_survives_every_orientation(tmp_path, name):
    """Exact round trip without resampling at the main stage: the label map is the blob itself."""
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, crop_size=(24, 24, 24))
    geometry = GEOMETRIES[name]
    case, blob = blob_case(geometry)
    prediction = stub_predictor(bundle).predict(case)
    assert prediction.tumor["found"] and prediction.tumor["windows"] == 1
    assert np.array_equal(prediction.labels == 1, blob)
    assert not (prediction.labels > 1).any()
    # The reported centre is where the blob is in physical space.
    blob_mm = geometry.index_to_physical(np.array(BLOB_CENTER, dtype=float)[::-1])[0]
    assert np.allclose(prediction.tumor["center_mm"], blob_mm, atol=0.01)
    # Written and read back: still at the same voxels.
    written = write_prediction(prediction, tmp_path / "out", figure=False)
    _, seg = read_back(written["seg"])
    assert np.array_equal(seg == 1, blob)


@pytest.mark.parametrize("name", ["ras", "oblique", "anisotropic"])
def test_blob_location_survives_resampling_to_1mm(tmp_path, name):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=(1.0, 1.0, 1.0))
    case, blob = blob_case(GEOMETRIES[name])
    prediction = stub_predictor(bundle).predict(case)
    predicted = prediction.labels == 1
    assert dice(predicted, blob) > 0.75
    assert np.abs(np.argwhere(predicted).mean(axis=0) - np.argwhere(blob).mean(axis=0)).max() < 0.75


def test_localizer_crop_follows_the_tumor(tmp_path):
    """Blobs in opposite corners: the main window (16^3 of a 40x44x36 case) must follow each one."""
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    predictor = stub_predictor(bundle)
    for center in [(10, 12, 11), (25, 31, 28)]:
        case, blob = blob_case(GEOMETRIES["ras"], center=center)
        prediction = predictor.predict(case)
        assert np.array_equal(prediction.labels == 1, blob), center


def test_tumor_larger_than_the_window_is_tiled(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    predictor = stub_predictor(bundle)
    case, blob = blob_case(GEOMETRIES["lps"], center=(18, 22, 20), radius=11.0)
    prediction = predictor.predict(case)
    assert prediction.tumor["windows"] > 2
    assert np.array_equal(prediction.labels == 1, blob)
    # the genotype window (full outputs) is the crop size, centred on the tumor
    assert (16, 16, 16) in predictor.networks["main"].calls


def test_bundle_without_localizer_uses_whole_brain_windows(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, localizer=False)
    assert "localizer" not in bundle.stages
    predictor = stub_predictor(bundle)
    case, blob = blob_case(GEOMETRIES["flipped_z"])
    prediction = predictor.predict(case)
    assert np.array_equal(prediction.labels == 1, blob)
    assert prediction.tumor["windows"] > 1 and prediction.tumor["found"]
    assert set(prediction.genotype) == {"idh", "codel_1p19q"}
    # random weights through the same path
    random = random_bundle(tmp_path / "r", localizer=False)
    assert Predictor(random, device="cpu", engine="torch").predict(phantom_case(GEOMETRIES["lps"])).labels.shape == case.geometry.shape


def _edit_main_stage(bundle, **changes):
    meta = json.loads((bundle.folder / "model.json").read_text())
    meta["stages"]["main"].update(changes)
    (bundle.folder / "model.json").write_text(json.dumps(meta))
    return bundle.folder


@pytest.mark.parametrize("resize", [False, True])
def test_whole_volume_main_stage(tmp_path, resize):
    """Bundles of whole-volume recipes (mode "whole", optionally paper 001's resize to a fixed size)."""
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, localizer=False, crop_size=(48, 48, 48))
    folder = _edit_main_stage(bundle, mode="whole", **({"resize_to": [32, 32, 32]} if resize else {}))
    predictor = Predictor(folder, device="cpu", networks={"main": IntensityNet(4, bundle.tasks)})
    assert predictor.main.mode == "whole" and predictor.main.resize_to == resize
    case, blob = blob_case(GEOMETRIES["ras"])
    prediction = predictor.predict(case)
    assert prediction.tumor["windows"] == 1 and set(prediction.genotype) == {"idh", "codel_1p19q"}
    assert predictor.networks["main"].calls == [(32, 32, 32) if resize else (48, 48, 48)]
    if resize:
        assert dice(prediction.labels == 1, blob) > 0.7
    else:
        assert np.array_equal(prediction.labels == 1, blob)
    with pytest.raises(BundleError, match="mode"):
        Predictor(_edit_main_stage(bundle, mode="tiles"), device="cpu", engine="torch")


def test_no_tumor_is_a_warning_not_an_error(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    case, _ = blob_case(GEOMETRIES["lps"], radius=-1.0, noise=0.0)  # no blob, no z-score above 2
    prediction = stub_predictor(bundle).predict(case)
    assert not prediction.labels.any() and not prediction.tumor["found"]
    assert prediction.warnings[0].startswith("no tumor found")
    assert prediction.volumes_ml["WT"] == 0.0


# ---------------------------------------------------------------------------- label sets, genotype


def test_flair_only_bundle_runs_on_a_flair_only_case(tmp_path):
    bundle = tiny_bundle(tmp_path / "ped", sequences=["t2f"], labels={1: "tumor"}, tasks=["braf"], main_spacing=None)
    case, blob = blob_case(GEOMETRIES["lps"], sequences=("t2f",))
    prediction = stub_predictor(bundle).predict(case)
    assert set(prediction.probabilities) == {"WT"}
    assert set(prediction.volumes_ml) == {"WT", "tumor"}
    assert np.array_equal(prediction.labels == 1, blob)
    assert list(prediction.genotype["braf"]) == list(GENOTYPE_TASKS["braf"])
    assert sum(prediction.genotype["braf"].values()) == pytest.approx(1.0)
    # and with the real (random) networks
    bundle = random_bundle(tmp_path / "r", sequences=["t2f"], labels={1: "tumor"}, tasks=["braf"])
    random = Predictor(bundle, device="cpu", engine="torch").predict(phantom_case(GEOMETRIES["ras"], sequences=("t2f",)))
    assert set(np.unique(random.labels)) <= {0, 1} and set(random.genotype) == {"braf"}


def test_genotype_probabilities_are_temperature_calibrated(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, calibration={"idh": 2.0})
    case, _ = blob_case(GEOMETRIES["lps"])
    genotype = stub_predictor(bundle).predict(case).genotype  # stub logits: [2, 0]
    expected_idh = 1.0 / (1.0 + math.exp(-2.0 / 2.0))
    expected_codel = 1.0 / (1.0 + math.exp(-2.0))
    assert genotype["idh"]["wildtype"] == pytest.approx(expected_idh)
    assert genotype["codel_1p19q"]["intact"] == pytest.approx(expected_codel)


def test_missing_sequence_is_a_clear_error(bundle, tmp_path):
    case = phantom_case(GEOMETRIES["lps"], sequences=("t1n", "t2w", "t2f"))
    predictor = Predictor(bundle, device="cpu", engine="torch")
    with pytest.raises(MissingSequenceError, match="t1c"):
        predictor.predict(case)
    folder = tmp_path / "case"
    write_case(case, folder, layout="brats2023", prefix="BraTS-GLI-00001-000")
    with pytest.raises(MissingSequenceError, match="t1c"):
        predictor.predict_files(folder)


def test_optional_sequences_may_be_missing_and_are_filled_as_sequence_dropout(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, required_sequences=["t2f"])
    predictor = stub_predictor(bundle)
    assert predictor.required_sequences == ("t2f",) and predictor.optional_sequences == ("t1n", "t1c", "t2w")
    case, blob = blob_case(GEOMETRIES["lps"], sequences=("t1c", "t2f"))
    prediction = predictor.predict(case)
    # the stub labels where the last channel (t2f) is bright: the blob is found without t1n and t2w
    assert np.array_equal(prediction.labels == 1, blob)
    missing = [w for w in prediction.warnings if w.startswith("missing sequence")]
    assert len(missing) == 1 and "t1n (T1)" in missing[0] and "t2w (T2)" in missing[0] and "t1c" not in missing[0]
    # the absent channels reach the network as zeros (z-score space), as sequence dropout trains them
    seen = []
    predictor.networks["main"].forward = lambda x, **kw: (seen.append(x.clone()), IntensityNet.forward(
        predictor.networks["main"], x, **kw))[1]
    predictor.predict(case)
    assert seen and all(float(x[:, [0, 2]].abs().max()) == 0.0 for x in seen)
    assert all(float(x[:, 1].abs().max()) > 0.0 for x in seen)
    # the same files from a folder: read without complaint
    folder = tmp_path / "case"
    write_case(case, folder, layout="brats2023", prefix="BraTS-GLI-00002-000")
    assert np.array_equal(predictor.predict_files(folder).labels == 1, blob)


def test_a_missing_required_sequence_is_a_clear_error_naming_it(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, required_sequences=["t1c", "t2f"])
    case, _ = blob_case(GEOMETRIES["lps"], sequences=("t1n", "t2f"))
    with pytest.raises(MissingSequenceError, match=r"needs sequence\(s\) \['t1c'\].*only t1n, t2w may be missing"):
        stub_predictor(bundle).predict(case)


def test_sequence_roles_must_split_the_input_channels(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    bundle.meta["required_sequences"] = ["t2f", "flair"]
    with pytest.raises(BundleError, match="must split the input sequences"):
        stub_predictor(bundle)
    bundle.meta["required_sequences"] = []
    with pytest.raises(BundleError, match="at least one required"):
        stub_predictor(bundle)


def test_region_probabilities_are_held_in_the_window_box_only(bundle):
    case = phantom_case(GEOMETRIES["lps"])
    prediction = Predictor(bundle, device="cpu", engine="torch").predict(case)
    probs = prediction.probabilities
    stored = sum(v.size for v in probs._values.values())
    assert stored < 3 * int(np.prod(case.geometry.shape))  # the box, not the whole grid per region
    full = probs["WT"]
    assert full.shape == case.geometry.shape and full.dtype == np.float32
    outside = np.ones(case.geometry.shape, dtype=bool)
    outside[probs.slices] = False
    assert not full[outside].any()
    assert dict(probs).keys() == {"WT", "TC", "ET"}


def test_test_time_flips_average_four_passes_and_follow_the_model_default(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    case, blob = blob_case(GEOMETRIES["lps"])
    plain = stub_predictor(bundle)
    assert plain.tta is False  # off unless model.json says otherwise
    flipped = stub_predictor(bundle, tta=True)
    a, b = plain.predict(case), flipped.predict(case)
    # the stub is mirror-symmetric (it thresholds intensities): the flips change nothing but the cost
    assert np.array_equal(a.labels, b.labels) and np.array_equal(b.labels == 1, blob)
    assert len(flipped.networks["main"].calls) == 4 * len(plain.networks["main"].calls)
    assert a.genotype == b.genotype  # the genotype reads the unflipped pass only
    bundle.meta["tta"] = True
    assert stub_predictor(bundle).tta is True and stub_predictor(bundle, tta=False).tta is False


def test_corrupt_weights_are_a_clear_error_naming_the_file(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    weights = bundle.weights_path
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.safetensors.*sha256"):
        Predictor(tmp_path / "b", device="cpu")


def test_architecture_mismatch_is_a_clear_error(tmp_path):
    bundle = tiny_bundle(tmp_path / "b")
    meta = json.loads((bundle.folder / "model.json").read_text())
    meta["stages"]["main"]["network"]["features"] = [4, 16]
    (bundle.folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="do not match the architecture"):
        Predictor(bundle.folder, device="cpu")


def test_window_size_must_fit_the_network(tmp_path):
    with pytest.raises(BundleError, match="crop_size"):
        Predictor(tiny_bundle(tmp_path / "b", main_features=(4, 8, 16), crop_size=(18, 16, 16)), device="cpu")


# ---------------------------------------------------------------------------- post-processing


def test_small_enhancing_tumor_becomes_necrosis_independent_of_spacing():
    from GliomaMTLLib.inference.postprocess import apply_postprocess

    config = PostprocessConfig(et_min_ml=0.5, min_component_ml=0.0)
    names = {1: "ncr", 2: "ed", 3: "et"}
    for voxel_ml in (0.001, 0.008):  # 1 mm and 2 mm voxels
        n_small = int(0.4 / voxel_ml)
        n_large = int(0.6 / voxel_ml)
        labels = np.zeros(1000, np.uint8)
        labels[:n_small] = 3
        out, notes = apply_postprocess(labels.copy(), names, voxel_ml, config)
        assert not (out == 3).any() and (out == 1).sum() == n_small and notes
        labels[:n_large] = 3
        out, notes = apply_postprocess(labels.copy(), names, voxel_ml, config)
        assert (out == 3).sum() == n_large and not notes
    # whole-tumor-only label sets have no ET rule
    out, _ = apply_postprocess(np.ones(10, np.uint8), {1: "tumor"}, 0.001, config)
    assert (out == 1).all()


def test_small_components_are_removed_but_the_largest_is_kept():
    from GliomaMTLLib.inference.postprocess import remove_small_components

    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:5, 2:5, 2:5] = 2  # 27 voxels
    labels[10:12, 10:12, 10:12] = 3  # 8 voxels
    labels[15, 15, 15] = 1  # 1 voxel
    out, removed = remove_small_components(labels.copy(), min_voxels=10)
    assert removed == 2 and (out > 0).sum() == 27
    out, removed = remove_small_components(labels.copy(), min_voxels=100)  # all small: keep the largest
    assert removed == 2 and (out[2:5, 2:5, 2:5] == 2).all()


def test_postprocess_settings_come_from_the_bundle_and_can_be_overridden(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, postprocess={"et_min_ml": 2.0})
    case, blob = blob_case(GEOMETRIES["lps"], center=(18, 22, 20), radius=5.0)  # ~0.5 ml, labelled ET by the stub
    assert Predictor(bundle, device="cpu", engine="torch").postprocess_config.et_min_ml == 2.0
    relabelled = stub_predictor(bundle, blob_label=3).predict(case)
    assert not (relabelled.labels == 3).any() and np.array_equal(relabelled.labels == 1, blob)
    assert any("relabelled" in w for w in relabelled.warnings)
    kept = stub_predictor(bundle, blob_label=3, postprocess={"et_min_ml": 0}).predict(case)
    assert np.array_equal(kept.labels == 3, blob)
    with pytest.raises(ValueError, match="et_min"):
        PostprocessConfig.from_dict({"et_min": 1})


def test_unsure_enhancing_tumor_becomes_necrosis_but_large_or_confident_et_stays():
    from GliomaMTLLib.inference.postprocess import apply_postprocess, et_mean_probability

    config = PostprocessConfig(et_min_ml=0.0, min_component_ml=0.0, et_min_confidence=0.8, et_confidence_max_ml=10.0)
    names = {1: "ncr", 2: "ed", 3: "et"}
    voxel_ml = 0.001
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = 2
    labels[8:12, 8:12, 8:12] = 3  # 64 voxels = 0.064 ml of ET
    et = labels == 3
    unsure = np.where(et, 0.7, 0.1).astype(np.float32)
    out, notes = apply_postprocess(labels.copy(), names, voxel_ml, config, et_probability=unsure)
    assert not (out == 3).any() and np.array_equal(out == 1, et) and (out == 2).sum() == (labels == 2).sum()
    assert any("mean probability of 0.70" in n and "relabelled as necrotic core" in n for n in notes)
    sure = np.where(et, 0.9, 0.1).astype(np.float32)
    out, notes = apply_postprocess(labels.copy(), names, voxel_ml, config, et_probability=sure)
    assert np.array_equal(out == 3, et) and not notes
    # ET of at least et_confidence_max_ml is never removed by the rule
    out, _ = apply_postprocess(labels.copy(), names, 0.2, config, et_probability=unsure)  # 12.8 ml of ET
    assert np.array_equal(out == 3, et)
    # without the probability (or with the rule off) nothing happens
    out, notes = apply_postprocess(labels.copy(), names, voxel_ml, config)
    assert np.array_equal(out == 3, et) and not notes
    # a probability given on a box of the grid: ET outside it counts with probability 0
    box = (slice(8, 12), slice(8, 12), slice(8, 12))
    assert et_mean_probability(labels, np.full((4, 4, 4), 0.9, np.float32), box, voxel_ml) == (pytest.approx(0.9), pytest.approx(0.064))
    half = (slice(8, 10), slice(8, 12), slice(8, 12))
    assert et_mean_probability(labels, np.full((2, 4, 4), 0.9, np.float32), half, voxel_ml)[0] == pytest.approx(0.45)
    with pytest.raises(ValueError, match="does not match the label box"):
        et_mean_probability(labels, np.zeros((3, 4, 4), np.float32), box, voxel_ml)
    assert et_mean_probability(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.float32), None, voxel_ml) == (None, 0.0)
    with pytest.raises(ValueError, match="et_min_confidence is a probability"):
        PostprocessConfig(et_min_confidence=1.5)


class UnsureNet(IntensityNet):
    """ET where the last channel's z-score exceeds 2, at a probability of about 0.73 (logit 1 against 0)."""

    def forward(self, x, tabular=None, with_genotype=True, with_dist=True):
        out = super().forward(x, tabular, with_genotype, with_dist)
        out["seg"][:, self.blob_label] = torch.where(x[:, -1] > 2.0, 1.0, -20.0)
        return out


def test_predictor_relabels_unsure_enhancing_tumor_with_a_note(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, postprocess={"et_min_ml": 0.0, "et_min_confidence": 0.8})
    case, blob = blob_case(GEOMETRIES["lps"], center=(18, 22, 20), radius=5.0)
    n = bundle.meta["stages"]["main"]["network"]["num_seg_classes"]
    nets = {"main": UnsureNet(n, bundle.tasks, 3), "localizer": IntensityNet(n, {}, 3)}
    relabelled = Predictor(bundle, device="cpu", networks=nets).predict(case)
    assert not (relabelled.labels == 3).any() and dice(relabelled.labels == 1, blob) > 0.9
    assert any("unsure this tumor enhances" in w for w in relabelled.warnings)
    kept = Predictor(bundle, device="cpu", networks=nets, postprocess={"et_min_confidence": 0.7}).predict(case)
    assert dice(kept.labels == 3, blob) > 0.9 and not any("unsure" in w for w in kept.warnings)


# ---------------------------------------------------------------------------- input checks


def test_textbook_phantom_raises_no_sequence_warning():
    from GliomaMTLLib.inference.checks import sequence_warnings

    for seed in range(3):
        assert sequence_warnings(phantom_case(GEOMETRIES["lps"], seed=seed).images) == []


@pytest.mark.parametrize(
    "swap, expected",
    [
        (("t2w", "t2f"), "t2w (T2) and t2f (FLAIR) may be swapped"),
        (("t1n", "t2w"), "t2w (T2) and t1n (T1) may be swapped"),
        (("t1n", "t1c"), "t1n (T1) and t1c (T1 post-contrast) may be swapped"),
    ],
)
def test_swapped_sequences_are_flagged(swap, expected):
    from GliomaMTLLib.inference.checks import sequence_warnings

    images = dict(phantom_case(GEOMETRIES["lps"]).images)
    a, b = swap
    images[a], images[b] = images[b], images[a]
    warnings = sequence_warnings(images)
    assert any(expected in w for w in warnings), warnings


def test_duplicated_sequence_is_flagged():
    from GliomaMTLLib.inference.checks import sequence_warnings

    images = dict(phantom_case(GEOMETRIES["lps"]).images)
    images["t1c"] = images["t1n"] * 2.0
    assert any("nearly identical" in w for w in sequence_warnings(images))


def test_acquisition_warnings():
    from GliomaMTLLib.inference.checks import acquisition_warnings

    big = Geometry((40, 44, 36), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), IDENTITY)  # 1014 ml field of view
    images = phantom_case(big).images
    warnings = acquisition_warnings(images, big)
    assert len(warnings) == 1 and "spacing 4 x 4 x 4 mm" in warnings[0]
    rng = np.random.default_rng(0)
    not_stripped = {k: v + rng.uniform(20.0, 80.0, v.shape).astype(np.float32) for k, v in images.items()}
    assert any("skull-stripped" in w for w in acquisition_warnings(not_stripped, big))
    small = GEOMETRIES["lps"]
    assert any("very few brain voxels" in w for w in acquisition_warnings(phantom_case(small).images, small))


def test_synthetic_phantoms_raise_no_sequence_warning():
    pytest.importorskip("nilearn")
    from GliomaMTLLib.inference.checks import sequence_warnings
    from GliomaMTLLib.synth import generate_case

    case = generate_case(3, small=True)
    assert sequence_warnings(case.images) == []
    images = dict(case.images)
    images["t2w"], images["t2f"] = images["t2f"], images["t2w"]
    assert any("may be swapped" in w for w in sequence_warnings(images))


# ---------------------------------------------------------------------------- devices


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_out_of_memory_falls_back_to_smaller_windows_then_cpu(bundle):
    predictor = Predictor(bundle, device="cpu", engine="torch")
    predictor.device = torch.device("cuda")  # pretend, to exercise the GPU fallback ladder
    attempts, warnings = [], []

    def run(device, small):
        attempts.append((device.type, small))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert predictor._with_fallback(run, warnings, "main") == "ok"
    assert attempts == [("cuda", False), ("cuda", True), ("cpu", False)]
    assert "smaller windows" in warnings[0] and "on the CPU" in warnings[1]
    with pytest.raises(ValueError):  # other errors are not retried
        predictor._with_fallback(lambda d, s: (_ for _ in ()).throw(ValueError("bad")), [], "main")


def test_smaller_windows_give_the_same_blob(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    predictor = stub_predictor(bundle)
    case, blob = blob_case(GEOMETRIES["lps"])
    from GliomaMTLLib.preprocess import preprocess

    pre = preprocess(case, predictor.sequences, predictor.main.preprocess)
    box = np.array([[2.0, 20.0, 5.0], [16.0, 38.0, 19.0]])
    probs, region, logits, windows, _ = predictor._run_main(pre, box, torch.device("cpu"), small=True)
    assert (8, 8, 8) in predictor.networks["main"].calls and windows > 1 and set(logits) == {"idh", "codel_1p19q"}
    labels, _ = predictor._to_input_grid(probs, region, pre.record)
    assert np.array_equal(labels == 1, blob)


def test_onnx_runtime_engine_matches_pytorch(bundle):
    from GliomaMTLLib.inference.engines import onnx_available

    if not onnx_available():
        pytest.skip("onnx / onnxruntime not installed (extra gliomamtl[onnx])")
    case = phantom_case(GEOMETRIES["oblique"])
    fast = Predictor(bundle, device="cpu", engine="onnx")
    assert fast.engine_used == "onnxruntime"
    a = fast.predict(case)
    b = Predictor(bundle, device="cpu", engine="torch").predict(case)
    assert "onnxruntime" in a.device and "torch" in b.device
    for region in a.probabilities:
        assert np.abs(a.probabilities[region] - b.probabilities[region]).max() < 1e-3
    assert (a.labels == b.labels).mean() > 0.999
    for task in a.genotype:
        for cls in a.genotype[task]:
            assert a.genotype[task][cls] == pytest.approx(b.genotype[task][cls], abs=1e-4)
    with pytest.raises(ValueError, match="unknown engine"):
        Predictor(bundle, device="cpu", engine="tensorrt")


# ---------------------------------------------------------------------------- report


def test_report_json_and_png(bundle, tmp_path):
    case = phantom_case(GEOMETRIES["oblique"], case_id="BraTS-GLI-00042-000")
    prediction = Predictor(bundle, device="cpu").predict(case)
    written = write_prediction(prediction, tmp_path, convention="2020", images=case.images)
    report = json.loads(written["report_json"].read_text())
    assert report["case_id"] == "BraTS-GLI-00042-000"
    assert report["model"]["sha256"] == bundle.meta["weights"]["sha256"]
    assert report["label_convention"] == "2020"
    assert set(report["genotype"]) == {"idh", "codel_1p19q"}
    for task, entry in report["genotype"].items():
        assert set(entry["probabilities"]) == set(GENOTYPE_TASKS[task])
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0)
    assert {"preprocess", "localize", "main", "resample", "postprocess", "write"} <= set(report["timings_s"])
    assert report["volumes_ml"]["WT"] == pytest.approx(prediction.volumes_ml["WT"], abs=1e-3)
    assert written["report_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written["seg"].name == "BraTS-GLI-00042-000_seg.nii.gz"
    assert not list(tmp_path.glob(".*partial*"))


def test_2020_convention_writes_4_for_enhancing_tumor(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    case, blob = blob_case(GEOMETRIES["ras"])
    prediction = stub_predictor(bundle, blob_label=3, postprocess={"et_min_ml": 0}).predict(case)
    _, seg2020 = read_back(write_prediction(prediction, tmp_path / "a", convention="2020", figure=False)["seg"])
    _, seg2023 = read_back(write_prediction(prediction, tmp_path / "b", convention="2023", figure=False)["seg"])
    assert set(np.unique(seg2020)) == {0, 4} and np.array_equal(seg2020 == 4, blob)
    assert set(np.unique(seg2023)) == {0, 3} and np.array_equal(seg2023 == 3, blob)


# ---------------------------------------------------------------------------- shipped bundles


@pytest.mark.parametrize("name, cohort", [("gliomamtl_adult", "adult"), ("gliomamtl_pediatric", "pediatric")])
def test_shipped_bundle_runs_on_a_small_synthetic_case(name, cohort):
    from GliomaMTLLib.bundle import SHIPPED_MODELS_DIR

    folder = SHIPPED_MODELS_DIR / name
    if not (folder / "model.json").is_file():
        pytest.skip(f"shipped bundle {name} is not in {SHIPPED_MODELS_DIR} (this model has no shipped weights yet)")
    pytest.importorskip("nilearn")
    from GliomaMTLLib.synth import generate_case

    predictor = Predictor(folder, device="cpu")
    case = generate_case(7, cohort=cohort, small=True)
    prediction = predictor.predict(case)
    assert prediction.labels.shape == case.geometry.shape
    assert set(prediction.genotype) == set(predictor.tasks)
    assert prediction.model["sha256"] == predictor.bundle.meta["weights"]["sha256"]


@pytest.mark.parametrize("name, cohort", [("gliomamtl_adult", "adult"), ("gliomamtl_pediatric", "pediatric")])
def test_shipped_bundle_finds_the_tumor_of_a_full_size_phantom(name, cohort):
    """A regression check of the shipped weights: on an unseen full-size phantom (seed 1, not in
    any training split) the whole tumor must be found with Dice well above chance (the cards
    report ~0.77-0.80 mean over their test splits)."""
    from GliomaMTLLib.bundle import SHIPPED_MODELS_DIR
    from GliomaMTLLib.metrics import region_metrics

    folder = SHIPPED_MODELS_DIR / name
    if not (folder / "model.json").is_file():
        pytest.skip(f"shipped bundle {name} is not in {SHIPPED_MODELS_DIR}")
    pytest.importorskip("nilearn")
    from GliomaMTLLib.synth import generate_case

    case = generate_case(1, cohort=cohort)
    prediction = Predictor(folder, device="cpu").predict(case)
    truth = (case.label > 0).astype(np.uint8)
    dice = region_metrics((prediction.labels > 0).astype(np.uint8), truth, case.geometry.spacing,
                          regions={"WT": (1,)})["WT"]["dice"]
    assert dice > 0.6, f"{name}: whole-tumor Dice {dice:.3f} on the seed-1 phantom"
