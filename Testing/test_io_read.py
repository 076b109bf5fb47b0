"""GliomaMTLLib.io readers: folder layouts, aliases, label schemes, validation errors, resampling."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from GliomaMTLLib.io import (
    CaseInputError,
    DuplicateSequenceError,
    Geometry,
    GridMismatchError,
    InvalidVolumeError,
    LabelValueError,
    MissingFileError,
    MissingSequenceError,
    UnknownSequenceError,
    UnreadableFileError,
    convert_labels,
    detect_label_scheme,
    overlap_fraction,
    read_case,
    read_label_map,
)
from GliomaMTLLib.labels import SEQUENCES

SIZE = (12, 10, 8)  # x, y, z
SHAPE = (8, 10, 12)  # z, y, x


def volume(seed: int, dtype=np.float32) -> np.ndarray:
    """Random positive (z, y, x) volume with a distinct value per sequence."""
    rng = np.random.default_rng(seed)
    return (rng.random(SHAPE) * 100 + 10 * (seed + 1)).astype(dtype)


def labels_with(values: list[int], dtype=np.uint8) -> np.ndarray:
    lab = np.zeros(SHAPE, dtype=dtype)
    for i, v in enumerate(values):
        lab[i, 2:5, 3:7] = v
    return lab


def save(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> Path:
    """Write with SimpleITK directly (independent of the writers under test)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def fname(path: Path) -> str:
    return re.escape(path.name)


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_brats2020_layout(tmp_path: Path, ext: str) -> None:
    folder = tmp_path / "BraTS20_Training_001"
    names = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}
    arrays = {}
    for i, (key, suffix) in enumerate(names.items()):
        arrays[key] = volume(i)
        save(folder / f"BraTS20_Training_001_{suffix}{ext}", arrays[key])
    save(folder / f"BraTS20_Training_001_seg{ext}", labels_with([1, 2, 4]))

    case = read_case(folder)
    assert case.case_id == "BraTS20_Training_001"
    assert case.sequences == SEQUENCES
    for key in SEQUENCES:
        assert case.images[key].dtype == np.float32
        np.testing.assert_array_equal(case.images[key], arrays[key])
    np.testing.assert_array_equal(case.label, labels_with([1, 2, 3]))
    assert case.label.dtype == np.uint8
    assert case.sources["t2f"].name == f"BraTS20_Training_001_flair{ext}"
    assert case.sources["label"].name == f"BraTS20_Training_001_seg{ext}"
    assert case.warnings == []


@pytest.mark.parametrize("prefix", ["BraTS-GLI-00000-000", "BraTS-PED-00012-000", "BraTS-MEN-00100-001"])
def test_brats2023_layout_any_prefix(tmp_path: Path, prefix: str) -> None:
    folder = tmp_path / "some_other_name"
    arrays = {}
    for i, key in enumerate(SEQUENCES):
        arrays[key] = volume(i)
        save(folder / f"{prefix}-{key}.nii.gz", arrays[key])
    save(folder / f"{prefix}-seg.nii.gz", labels_with([1, 2, 3]))
    (folder / "README.txt").write_text("not an image")
    save(folder / f"{prefix}-brain_mask.nii.gz", np.ones(SHAPE, np.uint8))  # unrecognized: ignored

    case = read_case(folder)
    assert case.case_id == prefix  # the shared file prefix wins over the folder name
    for key in SEQUENCES:
        np.testing.assert_array_equal(case.images[key], arrays[key])
    np.testing.assert_array_equal(case.label, labels_with([1, 2, 3]))
    assert set(case.sources) == {*SEQUENCES, "label"}


@pytest.mark.parametrize(
    "names",
    [
        {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f", "label": "seg"},
        {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "label": "label"},
        {"t1n": "T1", "t1c": "T1Gd", "t2w": "T2", "t2f": "T2-FLAIR", "label": "Segmentation"},
        {"t1n": "T1w", "t1c": "t1_ce", "t2w": "T2w", "t2f": "FLAIR", "label": "labels"},
    ],
)
def test_short_names_and_aliases(tmp_path: Path, names: dict[str, str]) -> None:
    folder = tmp_path / "patient7"
    arrays = {}
    for i, key in enumerate(SEQUENCES):
        arrays[key] = volume(i)
        save(folder / f"{names[key]}.nii.gz", arrays[key])
    save(folder / f"{names['label']}.nii.gz", labels_with([1, 2]))
    case = read_case(folder)
    assert case.case_id == "patient7"  # no shared prefix: the folder name
    for key in SEQUENCES:
        np.testing.assert_array_equal(case.images[key], arrays[key])
    np.testing.assert_array_equal(case.label, labels_with([1, 2]))


def test_mapping_with_aliases_and_case_id(tmp_path: Path) -> None:
    files = {alias: save(tmp_path / f"vol{i}.nrrd", volume(i)) for i, alias in enumerate(["T1", "t1gd", "T2", "Flair"])}
    files["seg"] = save(tmp_path / "truth.nrrd", labels_with([4, 2, 1]))
    case = read_case(files, case_id="P1")
    assert case.case_id == "P1"
    assert case.sequences == SEQUENCES
    np.testing.assert_array_equal(case.images["t1c"], volume(1))
    np.testing.assert_array_equal(case.label, labels_with([3, 2, 1]))
    assert case.sources["t2f"] == files["Flair"]


def test_list_of_files_and_single_file(tmp_path: Path) -> None:
    a = save(tmp_path / "caseA" / "caseA_flair.nii.gz", volume(3))
    b = save(tmp_path / "caseA" / "caseA_t1ce.nii.gz", volume(1))
    case = read_case([a, b])
    assert case.case_id == "caseA"
    assert case.sequences == ("t1c", "t2f")
    single = read_case(str(a))
    assert single.sequences == ("t2f",)
    np.testing.assert_array_equal(single.images["t2f"], volume(3))


def test_hidden_partial_files_are_ignored(tmp_path: Path) -> None:
    """Temporary files of an interrupted atomic write never count as a sequence or a duplicate."""
    folder = tmp_path / "BraTS-GLI-00003-000"
    save(folder / "BraTS-GLI-00003-000-t1n.nii.gz", volume(0))
    (folder / ".BraTS-GLI-00003-000-t1n.nii.gz.x1y2.partial.nii.gz").write_bytes(b"half")
    (folder / ".BraTS-GLI-00003-000-t2f.nii.gz").write_bytes(b"half")
    case = read_case(folder)
    assert case.sequences == ("t1n",)


def test_flair_only_with_required(tmp_path: Path) -> None:
    save(tmp_path / "ped" / "flair.nii.gz", volume(0))
    case = read_case(tmp_path / "ped", required=["FLAIR"])
    assert case.sequences == ("t2f",)
    assert case.label is None


def test_missing_required_sequence_names_them_and_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "incomplete"
    save(folder / "t1n.nii.gz", volume(0))
    save(folder / "t2f.nii.gz", volume(1))
    with pytest.raises(MissingSequenceError, match=r"\['t1c', 't2w'\].*incomplete"):
        read_case(folder, required=SEQUENCES)
    with pytest.raises(MissingSequenceError, match=r"label map"):
        read_case(folder, required=["t1", "label"])


def test_folder_without_sequences(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(MissingSequenceError, match=r"no MR sequence file found in folder .*empty.*notes\.txt"):
        read_case(tmp_path / "empty")
    with pytest.raises(MissingFileError, match=r"nowhere.*does not exist"):
        read_case(tmp_path / "nowhere")


def test_reference_grid_default_and_explicit(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    t1 = save(folder / "t1n.nii.gz", volume(0), spacing=(0.9, 1.1, 2.5), origin=(10.0, -20.0, 5.0), direction=direction)
    save(folder / "t2f.nii.gz", volume(1), spacing=(0.9, 1.1, 2.5), origin=(10.0, -20.0, 5.0), direction=direction)
    case = read_case(folder)
    assert case.geometry == Geometry.from_image(sitk.ReadImage(str(t1)))  # exactly as read
    case2 = read_case(folder, reference="flair")
    assert case2.geometry.same_grid(case.geometry)
    with pytest.raises(MissingSequenceError, match=r"reference sequence 't1c'"):
        read_case(folder, reference="t1c")


def test_integer_images_become_float32(tmp_path: Path) -> None:
    arr = (volume(0) * 10).astype(np.int16) - 5
    save(tmp_path / "x" / "t1.nii.gz", arr)
    case = read_case(tmp_path / "x")
    assert case.images["t1n"].dtype == np.float32
    np.testing.assert_array_equal(case.images["t1n"], arr.astype(np.float32))


@pytest.mark.parametrize("ext", [".nrrd", ".nhdr"])
def test_nrrd_read(tmp_path: Path, ext: str) -> None:
    direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    path = save(tmp_path / "n" / f"BraTS-GLI-00001-000-t1c{ext}", volume(5), spacing=(1.0, 1.0, 2.0),
                origin=(3.0, 4.0, 5.0), direction=direction)
    case = read_case(tmp_path / "n")
    assert case.case_id == "BraTS-GLI-00001-000"
    np.testing.assert_array_equal(case.images["t1c"], volume(5))
    assert case.geometry.direction == direction
    assert case.geometry.spacing == (1.0, 1.0, 2.0)
    assert case.sources["t1c"] == path


# --------------------------------------------------------------------------- label schemes


@pytest.mark.parametrize(
    "scheme, file_values, internal",
    [
        ("2013", [1, 2, 3, 4], [1, 2, 1, 3]),
        ("2020", [1, 2, 4], [1, 2, 3]),
        ("2023", [1, 2, 3], [1, 2, 3]),
        ("auto", [1, 2, 3, 4], [1, 2, 1, 3]),  # both 3 and 4 -> 2013
        ("auto", [1, 2, 4], [1, 2, 3]),  # 4 without 3 -> 2020
        ("auto", [1, 2, 3], [1, 2, 3]),  # 3 without 4 -> 2023
        ("auto", [2, 1], [2, 1]),  # neither: identical in every scheme
    ],
)
def test_label_schemes(tmp_path: Path, scheme: str, file_values: list[int], internal: list[int]) -> None:
    folder = tmp_path / "c"
    save(folder / "t1n.nii.gz", volume(0))
    save(folder / "seg.nii.gz", labels_with(file_values).astype(np.int16))
    case = read_case(folder, label_scheme=scheme)
    np.testing.assert_array_equal(case.label, labels_with(internal))


def test_detect_label_scheme() -> None:
    assert detect_label_scheme({0, 1, 2, 4}) == "2020"
    assert detect_label_scheme(np.array([0, 1, 2, 3])) == "2023"
    assert detect_label_scheme([0, 3, 4]) == "2013"
    assert detect_label_scheme({0}) == "2023"
    labels, used = convert_labels(np.array([0.0, 1.0, 4.0]), "auto")
    assert used == "2020" and labels.tolist() == [0, 1, 3] and labels.dtype == np.uint8


@pytest.mark.parametrize(
    "scheme, values, bad",
    [
        ("2020", [1, 3], r"\[3\]"),
        ("2023", [1, 4], r"\[4\]"),
        ("auto", [1, 5], r"\[5\]"),
        ("auto", [2, 4, 7], r"\[7\]"),
        ("2013", [-1, 2], r"\[-1\]"),
    ],
)
def test_bad_label_values_are_rejected_with_file(tmp_path: Path, scheme: str, values: list[int], bad: str) -> None:
    save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    seg = save(tmp_path / "c" / "c_seg.nii.gz", labels_with(values, np.int16))
    with pytest.raises(LabelValueError, match=fname(seg) + r".*values " + bad):
        read_case(tmp_path / "c", label_scheme=scheme)


def test_non_integer_labels_rejected(tmp_path: Path) -> None:
    lab = labels_with([1, 2]).astype(np.float32)
    lab[0, 0, 0] = 1.5
    seg = save(tmp_path / "seg.nii.gz", lab)
    with pytest.raises(LabelValueError, match=fname(seg) + r".*non-integer values \[1\.5\]"):
        read_label_map(seg)


def test_unknown_label_scheme_name(tmp_path: Path) -> None:
    save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    save(tmp_path / "c" / "seg.nii.gz", labels_with([1]))
    with pytest.raises(ValueError, match=r"unknown label scheme '2017'"):
        read_case(tmp_path / "c", label_scheme="2017")


# --------------------------------------------------------------------------- validation


def test_missing_file_in_mapping(tmp_path: Path) -> None:
    t1 = save(tmp_path / "t1.nii.gz", volume(0))
    missing = tmp_path / "flair_is_not_here.nii.gz"
    with pytest.raises(MissingFileError, match=fname(missing) + r" does not exist") as info:
        read_case({"t1": t1, "flair": missing})
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CaseInputError)
    assert info.value.paths == [missing]


def test_unreadable_file(tmp_path: Path) -> None:
    save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    bad = tmp_path / "c" / "t2f.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all")
    with pytest.raises(UnreadableFileError, match=r"cannot read image file .*" + fname(bad)):
        read_case(tmp_path / "c")


def test_not_3d_2d_image(tmp_path: Path) -> None:
    path = tmp_path / "t1n.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(10, 12).astype(np.float32)), str(path))
    with pytest.raises(InvalidVolumeError, match=fname(path) + r" is not a 3D volume: it is 2D"):
        read_case([path])


def test_not_3d_time_series(tmp_path: Path) -> None:
    path = tmp_path / "t2w.nrrd"
    image = sitk.GetImageFromArray(np.random.rand(2, *SHAPE).astype(np.float32), isVector=False)
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(path))
    with pytest.raises(InvalidVolumeError, match=fname(path) + r" is not a 3D volume: it is 4D.*time series of 2"):
        read_case([path])


def test_4d_singleton_is_squeezed_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "t2w.nrrd"
    arr = volume(2)
    sitk.WriteImage(sitk.GetImageFromArray(arr[None], isVector=False), str(path))
    case = read_case([path])
    np.testing.assert_array_equal(case.images["t2w"], arr)
    assert case.geometry.size == SIZE
    assert any("squeezed to 3D" in w and path.name in w for w in case.warnings)


def test_vector_image_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t1c.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(*SHAPE, 3).astype(np.float32), isVector=True), str(path))
    with pytest.raises(InvalidVolumeError, match=fname(path) + r".*3 components per voxel"):
        read_case([path])


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd"])
@pytest.mark.parametrize("bad_value, what", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_nan_inf_rejected(tmp_path: Path, bad_value: float, what: str, ext: str) -> None:
    """NIfTI included: SimpleITK 2.x (ITK 5) would silently read these voxels as 0."""
    arr = volume(0)
    arr[3, 4, 5] = bad_value
    path = save(tmp_path / f"t1n{ext}", arr)
    with pytest.raises(InvalidVolumeError, match=fname(path) + r" contains 1 " + what):
        read_case([path])


def test_float64_beyond_float32_range_rejected(tmp_path: Path) -> None:
    arr = volume(0).astype(np.float64)
    arr[0, 0, 0] = 1e300
    path = save(tmp_path / "t2w.nrrd", arr)
    with pytest.raises(InvalidVolumeError, match=fname(path) + r" contains 1 infinite"):
        read_case([path])


def test_nan_in_label_map_rejected(tmp_path: Path) -> None:
    save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    lab = labels_with([1, 2], np.float32)
    lab[0, 0, 0] = np.nan
    seg = save(tmp_path / "c" / "seg.nii.gz", lab)
    with pytest.raises(InvalidVolumeError, match=fname(seg) + r" contains 1 NaN"):
        read_case(tmp_path / "c")


def test_constant_and_all_zero_rejected(tmp_path: Path) -> None:
    zero = save(tmp_path / "a" / "t1n.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(InvalidVolumeError, match=fname(zero) + r" is all zero"):
        read_case(tmp_path / "a")
    const = save(tmp_path / "b" / "t2f.nii.gz", np.full(SHAPE, 7.0, np.float32))
    with pytest.raises(InvalidVolumeError, match=r"b/" + fname(const) + r" is constant \(every voxel is 7\)"):
        read_case(tmp_path / "b")


def test_all_zero_label_is_fine(tmp_path: Path) -> None:
    save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    save(tmp_path / "c" / "seg.nii.gz", np.zeros(SHAPE, np.uint8))
    case = read_case(tmp_path / "c")
    assert case.label is not None and not case.label.any()


def test_duplicate_sequence_in_folder(tmp_path: Path) -> None:
    a = save(tmp_path / "c" / "t1.nii.gz", volume(0))
    b = save(tmp_path / "c" / "t1n.nii.gz", volume(1))
    with pytest.raises(DuplicateSequenceError, match=r"sequence t1n: .*" + fname(a) + r" and .*" + fname(b)):
        read_case(tmp_path / "c")


def test_duplicate_label_in_folder(tmp_path: Path) -> None:
    save(tmp_path / "c" / "t1.nii.gz", volume(0))
    save(tmp_path / "c" / "seg.nii.gz", labels_with([1]))
    save(tmp_path / "c" / "label.nii.gz", labels_with([1]))
    with pytest.raises(DuplicateSequenceError, match=r"the label map: .*label\.nii\.gz and .*seg\.nii\.gz"):
        read_case(tmp_path / "c")


def test_duplicate_sequence_in_mapping_and_list(tmp_path: Path) -> None:
    a = save(tmp_path / "a.nii.gz", volume(0))
    b = save(tmp_path / "b.nii.gz", volume(1))
    with pytest.raises(DuplicateSequenceError, match=r"sequence t2f: .*a\.nii\.gz and .*b\.nii\.gz"):
        read_case({"flair": a, "T2F": b})
    c = save(tmp_path / "x_t1ce.nii.gz", volume(0))
    d = save(tmp_path / "x_t1gd.nii.gz", volume(1))
    with pytest.raises(DuplicateSequenceError, match=r"sequence t1c"):
        read_case([c, d])


def test_unknown_sequence_names(tmp_path: Path) -> None:
    a = save(tmp_path / "a.nii.gz", volume(0))
    with pytest.raises(UnknownSequenceError, match=r"unknown sequence name 'dwi'.*a\.nii\.gz"):
        read_case({"t1": a, "dwi": a})
    t1 = save(tmp_path / "scan_t1.nii.gz", volume(0))
    odd = save(tmp_path / "scan_dwi.nii.gz", volume(0))
    with pytest.raises(UnknownSequenceError, match=r"cannot tell which sequence .*scan_dwi\.nii\.gz"):
        read_case([t1, odd])


# --------------------------------------------------------------------------- grids


def test_shifted_overlapping_sequence_is_resampled(tmp_path: Path) -> None:
    spacing = (1.0, 1.5, 2.0)
    t1 = volume(0)
    t2 = volume(1)
    save(tmp_path / "c" / "t1n.nii.gz", t1, spacing=spacing, origin=(0.0, 0.0, 0.0))
    # shifted by +2 voxels along x (2 mm) and +1 voxel along y (1.5 mm): overlap (10/12) * (9/10) = 75 %
    moved = save(tmp_path / "c" / "t2w.nii.gz", t2, spacing=spacing, origin=(2.0, 1.5, 0.0))
    case = read_case(tmp_path / "c")
    out = case.images["t2w"]
    assert out.shape == SHAPE and out.dtype == np.float32
    # reference voxel (x=5, y=4, z=3) lies at source voxel (x=3, y=3, z=3)
    assert out[3, 4, 5] == pytest.approx(float(t2[3, 3, 3]), rel=1e-5)
    np.testing.assert_allclose(out[:, 1:, 2:], t2[:, :-1, :-2], rtol=1e-5)
    assert np.all(out[:, :, 0] == 0)  # outside the moved field of view: 0
    assert len(case.warnings) == 1 and moved.name in case.warnings[0] and "resampled" in case.warnings[0]
    np.testing.assert_array_equal(case.images["t1n"], t1)


def test_label_on_other_grid_nearest_neighbour(tmp_path: Path) -> None:
    save(tmp_path / "c" / "t1n.nii.gz", volume(0), spacing=(1.0, 1.0, 1.0))
    coarse = np.zeros((4, 5, 6), np.uint8)  # half resolution, same field of view
    coarse[1, 2, 3] = 4
    coarse[2, 1, 1] = 2
    save(tmp_path / "c" / "seg.nii.gz", coarse, spacing=(2.0, 2.0, 2.0), origin=(0.5, 0.5, 0.5))
    case = read_case(tmp_path / "c")
    assert set(np.unique(case.label)) == {0, 2, 3}  # nearest neighbour: no in-between values
    # coarse voxel (x=3, y=2, z=1) covers fine voxels x 6..7, y 4..5, z 2..3
    assert np.all(case.label[2:4, 4:6, 6:8] == 3)
    assert np.all(case.label[4:6, 2:4, 2:4] == 2)
    assert int((case.label == 3).sum()) == 8
    assert any("label map" in w and "nearest" in w for w in case.warnings)


def test_non_overlapping_sequence_is_refused(tmp_path: Path) -> None:
    a = save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    b = save(tmp_path / "c" / "t2f.nii.gz", volume(1), origin=(100.0, 0.0, 0.0))
    with pytest.raises(GridMismatchError, match=fname(b) + r" and .*" + fname(a) + r".*do not overlap") as info:
        read_case(tmp_path / "c")
    assert set(info.value.paths) == {a, b}


def test_small_overlap_is_refused(tmp_path: Path) -> None:
    save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    save(tmp_path / "c" / "seg.nii.gz", labels_with([1]), origin=(9.0, 0.0, 0.0))  # 3 of 12 columns: 25 %
    with pytest.raises(GridMismatchError, match=r"seg\.nii\.gz and .*t1n\.nii\.gz .*overlap only 25%"):
        read_case(tmp_path / "c")


def test_overlap_fraction() -> None:
    g = Geometry(SIZE, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    assert overlap_fraction(g, g) == pytest.approx(1.0)
    shifted = Geometry(SIZE, (1.0, 1.0, 1.0), (6.0, 0.0, 0.0), g.direction)
    assert overlap_fraction(g, shifted) == pytest.approx(0.5)
    # a flipped axis with the origin at the other end covers the same box
    flipped = Geometry(SIZE, (1.0, 1.0, 1.0), (11.0, 0.0, 0.0), (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    assert overlap_fraction(g, flipped) == pytest.approx(1.0)


def test_flipped_grid_same_field_of_view_is_resampled_exactly(tmp_path: Path) -> None:
    """An x-flipped copy of the same data (RAS-style storage) maps back voxel for voxel."""
    arr = volume(0)
    save(tmp_path / "c" / "t1n.nii.gz", arr)
    save(tmp_path / "c" / "t1c.nii.gz", arr[:, :, ::-1].copy(), origin=(11.0, 0.0, 0.0),
         direction=(-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    case = read_case(tmp_path / "c")
    np.testing.assert_allclose(case.images["t1c"], arr, rtol=1e-6)
    assert case.warnings  # it was a different grid, so it says so


# --------------------------------------------------------------------------- concurrent reading


def test_concurrent_read_reports_the_first_bad_file_in_sequence_order(tmp_path: Path) -> None:
    """Sequences are read at once; the error is still that of the first bad file (t1c before t2f)."""
    save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    save(tmp_path / "c" / "t2w.nii.gz", volume(2))
    first = tmp_path / "c" / "t1c.nii.gz"
    first.write_bytes(b"not an image")
    last = save(tmp_path / "c" / "t2f.nii.gz", np.zeros(SHAPE, dtype=np.float32))  # all zero
    for _ in range(3):  # whichever thread fails first, the message is the same
        with pytest.raises(UnreadableFileError, match=fname(first)) as info:
            read_case(tmp_path / "c")
        assert fname(last) not in str(info.value)


def test_concurrent_read_equals_serial_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads change nothing: the same arrays, grid and warnings, in sequence order."""
    import GliomaMTLLib.io.readers as readers

    spacing = (1.0, 1.5, 2.0)
    save(tmp_path / "c" / "t1n.nii.gz", volume(0), spacing=spacing)
    for i, (key, shift) in enumerate([("t1c", 2.0), ("t2w", 0.0), ("t2f", 1.0)], start=1):
        arr = volume(i)[None] if key == "t2w" else volume(i)  # t2w: a 4D singleton, squeezed with a note
        image = sitk.GetImageFromArray(arr, isVector=False)
        image.SetSpacing(spacing + ((1.0,) if key == "t2w" else ()))
        image.SetOrigin((shift, 0.0, 0.0) + ((0.0,) if key == "t2w" else ()))
        sitk.WriteImage(image, str(tmp_path / "c" / f"{key}.nrrd"))
    monkeypatch.setattr(readers, "READ_THREADS", 1)
    serial = read_case(tmp_path / "c")
    monkeypatch.setattr(readers, "READ_THREADS", 4)
    concurrent = read_case(tmp_path / "c")
    assert list(concurrent.images) == list(SEQUENCES) == list(serial.images)
    for key in SEQUENCES:
        np.testing.assert_array_equal(concurrent.images[key], serial.images[key])
    assert concurrent.geometry.same_grid(serial.geometry)
    assert concurrent.warnings == serial.warnings
    # t1c resampled, t2w squeezed, t2f resampled: in that order
    assert ["t1c" in w and "resampled" in w for w in concurrent.warnings] == [True, False, False]
    assert "squeezed to 3D" in concurrent.warnings[1] and "t2w" in concurrent.warnings[1]
    assert "t2f" in concurrent.warnings[2] and "resampled" in concurrent.warnings[2]


def test_prefetched_case_reads_the_same_and_a_changed_file_is_read_again(tmp_path: Path) -> None:
    """The command line starts reading before the model loads; read_case takes only unchanged files."""
    import os

    from GliomaMTLLib.io.readers import _PREFETCHED, prefetch_case

    folder = tmp_path / "c"
    for i, key in enumerate(SEQUENCES):
        save(folder / f"{key}.nii.gz", volume(i))
    prefetch_case(folder)
    assert len([k for k in _PREFETCHED if k[0].startswith(str(folder.resolve()))]) == 4
    changed = save(folder / "t2f.nii.gz", volume(9))  # rewritten after the prefetch started
    os.utime(changed, ns=(10**18, 10**18))  # a new mtime even on coarse-clock file systems
    case = read_case(folder)
    for i, key in enumerate(SEQUENCES):
        np.testing.assert_array_equal(case.images[key], volume(9 if key == "t2f" else i))
    # consumed: nothing of the three unchanged files is left behind
    assert not [k for k in _PREFETCHED if k[0].startswith(str(folder.resolve())) and "t2f" not in k[0]]


def test_prefetched_bad_file_raises_at_read_with_its_message(tmp_path: Path) -> None:
    from GliomaMTLLib.io.readers import prefetch_case

    save(tmp_path / "c" / "t1n.nii.gz", volume(0))
    bad = tmp_path / "c" / "t2f.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all")
    prefetch_case(tmp_path / "c")  # raises nothing itself
    prefetch_case(tmp_path / "no such folder")
    with pytest.raises(UnreadableFileError, match=r"cannot read image file .*" + fname(bad)):
        read_case(tmp_path / "c")
