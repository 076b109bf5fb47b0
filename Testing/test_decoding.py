"""Decoders from class probabilities to labels: the argmax and nested region thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from GliomaMTLLib.bundle import BundleError
from GliomaMTLLib.inference import Predictor
from GliomaMTLLib.inference.decoding import Decoding, foreground_from_regions
from test_inference import GEOMETRIES, IntensityNet, UnsureNet, blob_case, dice, tiny_bundle


def _foreground(*voxels: tuple[float, float, float]) -> np.ndarray:
    """(3, n) foreground probabilities (NCR, ED, ET), one column per voxel."""
    return np.asarray(voxels, np.float32).T


def test_argmax_and_regions_differ_where_the_tumor_is_split_between_classes():
    fg = _foreground(
        (0.25, 0.35, 0.00),  # background 0.40 wins the argmax; tumor 0.60 > 0.5 for the regions, core 0.25: edema
        (0.30, 0.10, 0.45),  # argmax ET; core 0.75, ET 0.45: ET at et 0.4, NCR at et 0.5
        (0.05, 0.90, 0.05),  # edema for both
        (0.00, 0.00, 0.00),  # background for both
    )
    assert Decoding().labels(fg).tolist() == [0, 3, 2, 0]
    assert Decoding("regions", 0.5, 0.5, 0.5).labels(fg).tolist() == [2, 1, 2, 0]
    assert Decoding("regions", 0.5, 0.4, 0.4).labels(fg).tolist() == [2, 3, 2, 0]
    assert Decoding("regions", 0.7, 0.5, 0.4).labels(fg).tolist() == [0, 3, 2, 0]


def test_argmax_sends_ties_to_the_background():
    assert Decoding().labels(_foreground((0.5, 0.0, 0.0))).tolist() == [0]


def test_foreground_from_regions_inverts_the_nesting():
    fg = np.random.default_rng(0).dirichlet(np.ones(4), size=50).T[1:].astype(np.float64)
    wt, tc, et = fg.sum(0), fg[0] + fg[2], fg[2]
    assert np.allclose(foreground_from_regions(wt, tc, et), fg)


@pytest.mark.parametrize("data, message", [
    ({"mode": "nested"}, "decoding mode 'nested' is not one of"),
    ({"mode": "regions", "wt": 1.2}, r"decoding threshold wt=1.2 must be a number between 0 and 1"),
    ({"mode": "regions", "tc": 0}, r"decoding threshold tc=0 must be"),
    ({"mode": "regions", "threshold": 0.5}, r"decoding has unknown key\(s\) \['threshold'\]"),
])
def test_bad_decoding_settings_are_named(data, message):
    with pytest.raises(ValueError, match=message):
        Decoding.from_dict(data)


def test_decoding_round_trips_through_its_dict():
    for decoding in (Decoding(), Decoding("regions", 0.5, 0.4, 0.4)):
        assert Decoding.from_dict(decoding.to_dict()) == decoding
    assert Decoding.from_dict(None) == Decoding()


def test_predictor_decodes_by_regions_when_asked(tmp_path):
    rules_off = {"et_min_ml": 0.0, "et_min_confidence": 0.0}
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None, postprocess=rules_off)
    case, blob = blob_case(GEOMETRIES["lps"], center=(18, 22, 20), radius=5.0)
    n = bundle.meta["stages"]["main"]["network"]["num_seg_classes"]
    nets = {"main": UnsureNet(n, bundle.tasks, 3), "localizer": IntensityNet(n, {}, 3)}
    argmax = Predictor(bundle, device="cpu", networks=nets).predict(case)
    assert dice(argmax.labels == 3, blob) > 0.9
    # P(ET) ~ 0.73 inside the blob: enhancing at an ET threshold of 0.5, necrotic core at 0.8
    low = Predictor(bundle, device="cpu", networks=nets, decoding={"mode": "regions", "et": 0.5}).predict(case)
    assert np.array_equal(low.labels, argmax.labels)
    high = Predictor(bundle, device="cpu", networks=nets, decoding={"mode": "regions", "et": 0.8}).predict(case)
    assert not (high.labels == 3).any() and dice(high.labels == 1, blob) > 0.9


def test_bad_decoding_names_model_json_or_the_argument(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    with pytest.raises(ValueError, match=r"^decoding argument: decoding mode 'best' is not one of"):
        Predictor(bundle, device="cpu", decoding={"mode": "best"})
    with pytest.raises(ValueError, match=r"^tta argument: tta must be true, false or 'gpu', got 'always'"):
        Predictor(bundle, device="cpu", tta="always")
    bundle.meta["decoding"] = "regions"
    with pytest.raises(BundleError, match=r"model\.json: decoding must be a mapping such as"):
        Predictor(bundle, device="cpu")


def test_flips_on_a_gpu_only_resolve_by_device(tmp_path):
    from GliomaMTLLib.inference.predictor import resolve_tta

    assert resolve_tta("gpu", torch.device("cuda")) is True
    assert resolve_tta("gpu", torch.device("cpu")) is False
    assert resolve_tta(True, torch.device("cpu")) is True
    with pytest.raises(ValueError, match=r"tta must be true, false or 'gpu', got 'always'"):
        resolve_tta("always", torch.device("cpu"))
    bundle = tiny_bundle(tmp_path / "b", main_spacing=None)
    bundle.meta["tta"] = "gpu"
    predictor = Predictor(bundle, device="cpu")
    assert predictor.tta is False and predictor.model_info["test_time_flips"] is False
    assert Predictor(bundle, device="cpu", tta=True).model_info["test_time_flips"] is True
    bundle.meta["tta"] = "yes"
    with pytest.raises(BundleError, match=r"model\.json: tta must be true, false or 'gpu', got 'yes'"):
        Predictor(bundle, device="cpu")


def test_check_regions_refuses_a_model_without_the_nested_regions():
    Decoding("regions").check_regions({"WT": (1, 2, 3), "TC": (3, 1), "ET": (3,)})  # order does not matter
    Decoding().check_regions({"WT": (1, 2)})  # the argmax needs no regions
    with pytest.raises(ValueError, match="region decoding needs the regions"):
        Decoding("regions").check_regions({"WT": (1, 2), "TC": (1,)})
