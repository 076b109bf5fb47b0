"""GliomaMTLLib.io writers: exact geometry for every orientation, label conventions, atomicity."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from GliomaMTLLib.io import (
    Case,
    Geometry,
    read_case,
    read_label_map,
    write_case,
    write_labels,
    write_volume,
)
from GliomaMTLLib.labels import SEQUENCES

SIZE = (12, 10, 8)  # x, y, z
SHAPE = (8, 10, 12)  # z, y, x


def _rotation(ax: float, ay: float, az: float) -> tuple[float, ...]:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return tuple(float(v) for v in (rz @ ry @ rx).ravel())


GEOMETRIES = {
    "lps_identity": Geometry(SIZE, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)),
    "ras": Geometry(SIZE, (1.0, 1.0, 1.0), (90.0, 126.0, -72.0), (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)),
    "flipped_yz": Geometry(SIZE, (0.9375, 0.9375, 1.0), (-120.0, 110.0, 80.0), (1.0, 0, 0, 0, -1.0, 0, 0, 0, -1.0)),
    "permuted_axes": Geometry(SIZE, (1.0, 1.0, 1.0), (5.0, -3.0, 2.0), (0, 0, 1.0, 1.0, 0, 0, 0, 1.0, 0)),
    "oblique": Geometry(SIZE, (1.0, 1.0, 1.0), (12.5, -40.25, 33.0), _rotation(0.3, -0.2, 0.5)),
    "anisotropic_oblique": Geometry(SIZE, (0.7, 1.3, 3.0), (-1.5, 2.5, -100.0), _rotation(-0.1, 0.25, -0.4)),
}


def assert_geometry(image: sitk.Image, geometry: Geometry) -> None:
    assert tuple(image.GetSize()) == geometry.size
    np.testing.assert_allclose(image.GetSpacing(), geometry.spacing, rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), geometry.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), geometry.direction, atol=1e-6)
    assert Geometry.from_image(image).same_grid(geometry)


def sample_labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:6, 3:8, 4:10] = 2
    lab[3:5, 4:7, 5:8] = 1
    lab[3, 5, 6] = 3
    lab[1, 1, 1] = 3
    return lab


def sample_case(geometry: Geometry, case_id: str = "BraTS-GLI-01234-000") -> Case:
    rng = np.random.default_rng(0)
    images = {k: (rng.random(geometry.shape) * 1000 + i).astype(np.float32) for i, k in enumerate(SEQUENCES)}
    return Case(case_id=case_id, images=images, geometry=geometry, label=sample_labels())


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd"])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_write_labels_roundtrip_geometry(tmp_path: Path, name: str, ext: str) -> None:
    geometry = GEOMETRIES[name]
    path = write_labels(tmp_path / f"seg{ext}", sample_labels(), geometry)
    assert path == tmp_path / f"seg{ext}"
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkUInt8
    assert_geometry(image, geometry)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sample_labels())


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_write_volume_roundtrip_geometry(tmp_path: Path, name: str) -> None:
    geometry = GEOMETRIES[name]
    prob = np.random.default_rng(1).random(SHAPE).astype(np.float64)
    path = write_volume(tmp_path / "prob.nii.gz", prob, geometry)
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkFloat32
    assert_geometry(image, geometry)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), prob.astype(np.float32))


@pytest.mark.parametrize("name", ["ras", "oblique", "anisotropic_oblique"])
def test_physical_orientation_matches_nibabel(tmp_path: Path, name: str) -> None:
    """An independent reader (nibabel, RAS) must place voxel (i, j, k) where ITK (LPS) says."""
    nib = pytest.importorskip("nibabel")
    geometry = GEOMETRIES[name]
    path = write_labels(tmp_path / "seg.nii.gz", sample_labels(), geometry)
    affine = nib.load(str(path)).affine  # voxel (i, j, k) -> RAS mm
    ijk = np.array([[0, 0, 0], [11, 0, 0], [0, 9, 0], [0, 0, 7], [6, 5, 3]], dtype=float)
    ras = (affine[:3, :3] @ ijk.T).T + affine[:3, 3]
    lps = geometry.index_to_physical(ijk)
    np.testing.assert_allclose(ras * np.array([-1, -1, 1]), lps, atol=1e-3)
    data = np.asanyarray(nib.load(str(path)).dataobj)  # (i, j, k) = (x, y, z)
    np.testing.assert_array_equal(data.transpose(2, 1, 0), sample_labels())


def test_write_volume_dtype_and_errors(tmp_path: Path) -> None:
    geometry = GEOMETRIES["ras"]
    heat = (np.arange(np.prod(SHAPE)) % 200).reshape(SHAPE)
    path = write_volume(tmp_path / "heat.nrrd", heat, geometry, dtype=np.uint8)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8
    with pytest.raises(ValueError, match=r"shape \(10, 10, 12\).*does not match the grid shape \(8, 10, 12\)"):
        write_volume(tmp_path / "bad.nii.gz", np.zeros((10, 10, 12)), geometry)
    bad = np.zeros(SHAPE, np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"nan\.nii\.gz.*NaN"):
        write_volume(tmp_path / "nan.nii.gz", bad, geometry)
    with pytest.raises(ValueError, match=r"extensions"):
        write_volume(tmp_path / "x.nhdr", heat, geometry)
    assert not (tmp_path / "bad.nii.gz").exists() and not (tmp_path / "nan.nii.gz").exists()


def test_label_conventions(tmp_path: Path) -> None:
    geometry = GEOMETRIES["flipped_yz"]
    labels = sample_labels()
    p2020 = write_labels(tmp_path / "seg2020.nii.gz", labels, geometry, convention="2020")
    p2023 = write_labels(tmp_path / "seg2023.nii.gz", labels, geometry)
    a2020 = sitk.GetArrayFromImage(sitk.ReadImage(str(p2020)))
    a2023 = sitk.GetArrayFromImage(sitk.ReadImage(str(p2023)))
    assert set(np.unique(a2020)) == {0, 1, 2, 4}
    assert set(np.unique(a2023)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(a2020 == 4, labels == 3)
    for path in (p2020, p2023):
        back, _ = read_label_map(path)
        np.testing.assert_array_equal(back, labels)


def test_write_labels_rejects_bad_input(tmp_path: Path) -> None:
    geometry = GEOMETRIES["lps_identity"]
    bad = sample_labels()
    bad[0, 0, 0] = 4
    with pytest.raises(ValueError, match=r"values \[4\]"):
        write_labels(tmp_path / "seg.nii.gz", bad, geometry)
    with pytest.raises(ValueError, match=r"unknown label convention '2013'"):
        write_labels(tmp_path / "seg.nii.gz", sample_labels(), geometry, convention="2013")
    with pytest.raises(ValueError, match=r"does not match the grid"):
        write_labels(tmp_path / "seg.nii.gz", sample_labels()[:, :, :5], geometry)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_write_case_read_case_roundtrip(tmp_path: Path, name: str) -> None:
    geometry = GEOMETRIES[name]
    case = sample_case(geometry)
    written = write_case(case, tmp_path / "out")
    assert {k: p.name for k, p in written.items()} == {
        "t1n": "BraTS-GLI-01234-000-t1n.nii.gz",
        "t1c": "BraTS-GLI-01234-000-t1c.nii.gz",
        "t2w": "BraTS-GLI-01234-000-t2w.nii.gz",
        "t2f": "BraTS-GLI-01234-000-t2f.nii.gz",
        "label": "BraTS-GLI-01234-000-seg.nii.gz",
    }
    back = read_case(tmp_path / "out")
    assert back.case_id == case.case_id
    assert back.geometry.same_grid(geometry)
    assert back.warnings == []
    for key in SEQUENCES:
        assert back.images[key].dtype == np.float32
        np.testing.assert_array_equal(back.images[key], case.images[key])
    np.testing.assert_array_equal(back.label, case.label)
    for path in written.values():
        assert_geometry(sitk.ReadImage(str(path)), geometry)


@pytest.mark.parametrize("layout", ["brats2020", "short"])
def test_write_case_other_layouts(tmp_path: Path, layout: str) -> None:
    case = sample_case(GEOMETRIES["ras"], case_id="BraTS20_Training_007")
    written = write_case(case, tmp_path / "BraTS20_Training_007", layout=layout, label_convention="2020")
    if layout == "brats2020":
        assert written["t2f"].name == "BraTS20_Training_007_flair.nii.gz"
        assert written["t1c"].name == "BraTS20_Training_007_t1ce.nii.gz"
    else:
        assert written["t2f"].name == "t2f.nii.gz" and written["label"].name == "seg.nii.gz"
    assert 4 in sitk.GetArrayFromImage(sitk.ReadImage(str(written["label"])))
    back = read_case(tmp_path / "BraTS20_Training_007")
    assert back.case_id == "BraTS20_Training_007"
    np.testing.assert_array_equal(back.label, case.label)
    np.testing.assert_array_equal(back.images["t2w"], case.images["t2w"])


def test_write_case_subset_and_prefix(tmp_path: Path) -> None:
    geometry = GEOMETRIES["lps_identity"]
    case = Case("x", {"t2f": np.ones(SHAPE, np.float32) * np.arange(12, dtype=np.float32)}, geometry)
    written = write_case(case, tmp_path, prefix="BraTS-PED-00001-000")
    assert [p.name for p in written.values()] == ["BraTS-PED-00001-000-t2f.nii.gz"]
    with pytest.raises(ValueError, match=r"unknown case layout"):
        write_case(case, tmp_path, layout="nnunet")


# --------------------------------------------------------------------------- atomicity


def _failing_write(image, path, *args, **kwargs):  # noqa: ANN001
    Path(path).write_bytes(b"half a file")  # a real failure may leave bytes behind
    raise RuntimeError("disk full (simulated)")


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sitk, "WriteImage", _failing_write)
    geometry = GEOMETRIES["oblique"]
    with pytest.raises(OSError, match="writing the image failed.*disk full") as info:
        write_labels(tmp_path / "seg.nii.gz", sample_labels(), geometry)
    assert info.value.filename == str(tmp_path / "seg.nii.gz")  # the final name, not the temporary one
    with pytest.raises(OSError, match="disk full"):
        write_volume(tmp_path / "prob.nii.gz", np.zeros(SHAPE), geometry)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temporary file


def test_failed_write_keeps_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    geometry = GEOMETRIES["ras"]
    target = write_labels(tmp_path / "seg.nii.gz", sample_labels(), geometry)
    before = target.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", _failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_labels(target, np.zeros(SHAPE, np.uint8), geometry)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"]


def test_failed_write_case_keeps_previous_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    geometry = GEOMETRIES["lps_identity"]
    case = sample_case(geometry)
    written = write_case(case, tmp_path)
    contents = {k: p.read_bytes() for k, p in written.items()}
    monkeypatch.setattr(sitk, "WriteImage", _failing_write)
    with pytest.raises(OSError):
        write_case(sample_case(geometry), tmp_path)
    assert {k: p.read_bytes() for k, p in written.items()} == contents
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written.values())
