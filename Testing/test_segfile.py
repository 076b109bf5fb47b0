"""`.seg.nrrd` writing: segment names, colours, terminology and exact geometry (LPS, RAS, oblique)."""

from __future__ import annotations

import json

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.segfile import ijk_to_lps, read_seg_nrrd, seg_nrrd_filename, write_seg_nrrd
from GliomaMTLLib.labels import LABEL_COLORS


def _rotation(ax: float, ay: float, az: float) -> tuple[float, ...]:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return tuple((rz @ ry @ rx).ravel())


GRIDS = {
    "lps": Geometry((14, 12, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
    "ras_stored": Geometry((14, 12, 10), (0.9, 1.1, 2.5), (90.0, 110.0, -40.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
    "oblique": Geometry((14, 12, 10), (1.2, 0.8, 3.0), (-12.5, 33.0, 7.25), _rotation(0.3, -0.2, 0.5)),
}


def _labels(grid: Geometry) -> np.ndarray:
    labels = np.zeros(grid.shape, dtype=np.uint8)
    labels[2:7, 3:9, 4:10] = 2
    labels[3:6, 4:8, 5:9] = 3
    labels[4, 5:7, 6:8] = 1
    labels[0, 0, 1] = 1  # asymmetric voxel: a flip or transpose would move it
    return labels


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_round_trip_keeps_labels_geometry_and_segments(tmp_path, name):
    grid = GRIDS[name]
    labels = _labels(grid)
    path = write_seg_nrrd(tmp_path / seg_nrrd_filename("case1"), labels, grid)
    assert path.name == "case1_seg.seg.nrrd"
    back, geometry, segments = read_seg_nrrd(path)
    np.testing.assert_array_equal(back, labels)
    assert geometry.size == grid.size
    np.testing.assert_allclose(geometry.spacing, grid.spacing, atol=1e-9)
    np.testing.assert_allclose(geometry.origin, grid.origin, atol=1e-9)
    np.testing.assert_allclose(geometry.direction, grid.direction, atol=1e-9)
    assert [(s["name"], s["labelValue"], s["id"]) for s in segments] == [
        ("necrotic core", 1, "NCR"), ("edema", 2, "ED"), ("enhancing tumor", 3, "ET")]
    for seg in segments:
        np.testing.assert_allclose(seg["color"], LABEL_COLORS[seg["labelValue"]], atol=1e-6)
    assert segments[0]["terminology"]["type"] == ["SCT", "6574001", "Necrosis"]
    assert segments[2]["terminology"]["anatomicRegion"] == ["SCT", "12738006", "Brain"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial file left


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_header_geometry_matches_simpleitk_nrrd(tmp_path, name):
    """The physical frame equals the one SimpleITK (the engine's reader) writes for the same grid,
    and the asymmetric voxel lands at the same physical point."""
    grid = GRIDS[name]
    labels = _labels(grid)
    write_seg_nrrd(tmp_path / "a.seg.nrrd", labels, grid)
    sitk.WriteImage(grid.to_image(labels), str(tmp_path / "b.nrrd"))
    _, ours = nrrd.read(str(tmp_path / "a.seg.nrrd"))
    _, theirs = nrrd.read(str(tmp_path / "b.nrrd"))
    assert ours["space"] == theirs["space"] == "left-posterior-superior"
    np.testing.assert_allclose(ours["space directions"], theirs["space directions"], atol=1e-9)
    np.testing.assert_allclose(ours["space origin"], theirs["space origin"], atol=1e-9)
    k, j, i = 0, 0, 1
    point = ijk_to_lps(grid) @ np.array([i, j, k, 1.0])
    np.testing.assert_allclose(point[:3], grid.to_image(labels).TransformIndexToPhysicalPoint((i, j, k)), atol=1e-9)
    assert ours["Segment0_Name"] == "necrotic core"
    assert "SCT^6574001^Necrosis" in ours["Segment0_Tags"]


def test_pediatric_label_set_is_not_called_necrotic_core(tmp_path):
    grid = GRIDS["lps"]
    labels = (_labels(grid) > 0).astype(np.uint8)
    _, _, segments = read_seg_nrrd(write_seg_nrrd(tmp_path / "p.seg.nrrd", labels, grid, {"1": "tumor"}))
    assert [(s["name"], s["labelValue"]) for s in segments] == [("tumor", 1)]
    assert segments[0]["terminology"]["type"][2] == "Neoplasm, Primary"


def test_bad_inputs_are_named(tmp_path):
    grid = GRIDS["lps"]
    with pytest.raises(ValueError, match=r"must end in \.seg\.nrrd"):
        write_seg_nrrd(tmp_path / "x.nrrd", _labels(grid), grid)
    with pytest.raises(ValueError, match="does not match the grid shape"):
        write_seg_nrrd(tmp_path / "x.seg.nrrd", np.zeros((3, 3, 3), np.uint8), grid)
    bad = _labels(grid)
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"label values \[7\] have no segment name"):
        write_seg_nrrd(tmp_path / "x.seg.nrrd", bad, grid)
    assert not list(tmp_path.iterdir())


def test_predict_seg_nrrd_option(tmp_path, monkeypatch):
    """`gliomamtl predict --seg-nrrd` writes the segmentation on the grid of the NIfTI label map."""
    from GliomaMTLLib.cli import main
    from GliomaMTLLib.inference import make_random_bundle
    from GliomaMTLLib.inference.fixtures import phantom_case
    from GliomaMTLLib.io.writers import write_case

    monkeypatch.setenv("GLIOMAMTL_CACHE", str(tmp_path / "cache"))
    bundle = tmp_path / "tiny"
    make_random_bundle(bundle, main_features=(4, 8), crop_size=(32, 32, 32), localizer_features=(4, 8),
                       input_size=(16, 16, 16), localizer_options={"margin_mm": 0.0})
    grid = Geometry((30, 28, 24), (1.0, 1.2, 1.5), (12.0, -30.0, 4.0), GRIDS["oblique"].direction)
    case = tmp_path / "BraTS-GLI-00001-000"
    write_case(phantom_case(grid, case_id=case.name), case, layout="brats2023")
    out = tmp_path / "out"
    code = main(["predict", str(case), "--out", str(out), "--model", str(bundle), "--device", "cpu",
                 "--engine", "torch", "--seg-nrrd"])
    assert code == 0
    labels, geometry, segments = read_seg_nrrd(out / "BraTS-GLI-00001-000_seg.seg.nrrd")
    nifti = sitk.ReadImage(str(out / "BraTS-GLI-00001-000_seg.nii.gz"))
    np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(nifti))
    assert Geometry.from_image(nifti).same_grid(geometry)
    assert [s["name"] for s in segments] == ["necrotic core", "edema", "enhancing tumor"]
    assert json.loads((out / "report.json").read_text())["case_id"] == "BraTS-GLI-00001-000"
