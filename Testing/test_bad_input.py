"""Inputs that used to be accepted, or answered with the wrong reason (issue 8, section 1).

Each test asserts the exit status and the words of the message. Tiny volumes, a tiny random bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from GliomaMTLLib.cli import main
from GliomaMTLLib.inference.checks import acquisition_warnings, check_field_of_view, input_warnings
from GliomaMTLLib.inference.fixtures import phantom_case
from GliomaMTLLib.inference.postprocess import PostprocessConfig, apply_postprocess
from GliomaMTLLib.io import read_case
from GliomaMTLLib.io.completeness import TruncatedFileError, check_complete
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.registration import MisregistrationError, registration_agreement
from GliomaMTLLib.io.validation import InvalidVolumeError, UnknownSequenceError
from GliomaMTLLib.io.writers import write_case
from GliomaMTLLib.labels import LABEL_NAMES

RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
GRID = Geometry((40, 44, 36), (1.0, 1.2, 1.5), (12.0, -30.0, 4.0), RAS)


def predict(args, bundle_dir):
    return main(["predict", *map(str, args), "--model", str(bundle_dir), "--device", "cpu"])


def write_phantom(folder: Path, case_id: str = "P", grid: Geometry = GRID, layout: str = "short") -> Path:
    write_case(phantom_case(grid, case_id=case_id), folder, layout=layout)
    return folder


# ------------------------------------------------------------------------------------ truncated files

FORMATS = [  # (file name, compress, file holding the data)
    ("t1n.nii.gz", True, "t1n.nii.gz"),
    ("t1n.nii", False, "t1n.nii"),
    ("t1n.nrrd", True, "t1n.nrrd"),
    ("t1n.nrrd", False, "t1n.nrrd"),
    ("t1n.nhdr", False, None),
    ("t1n.mha", True, "t1n.mha"),
    ("t1n.mha", False, "t1n.mha"),
    ("t1n.mhd", False, None),
]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("name, compress, data_name", FORMATS)
def test_truncated_file_is_a_named_error(tmp_path, name, compress, data_name, dtype):
    array = (np.random.default_rng(0).random((12, 14, 16)) * 100 + 1).astype(dtype)
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), compress)
    check_complete(path)  # the complete file passes
    data = tmp_path / data_name if data_name else next(p for p in tmp_path.iterdir() if p != path)
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) - len(raw) // 3])
    with pytest.raises(TruncatedFileError, match=r"is truncated: expected \d+ bytes of image data.*found \d+"):
        read_case({"t1n": path})


def test_truncated_nifti_gz_through_the_cli(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "c")
    flair = case / "t2f.nii.gz"
    raw = flair.read_bytes()
    flair.write_bytes(raw[: len(raw) // 2])  # today: read without a word, the missing slices become 0
    assert predict([case, "--out", tmp_path / "o"], bundle_dir) == 1
    err = capsys.readouterr().err
    assert f"file {flair} is truncated: expected {40 * 44 * 36 * 4} bytes of image data, found" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_nifti_with_fewer_data_bytes_than_the_header_promises(tmp_path):
    path = tmp_path / "t2w.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((10, 10, 10), np.int16)), str(path))
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(TruncatedFileError, match="expected 2000 bytes of image data, found 1500"):
        check_complete(path)


# ----------------------------------------------------------------------------------- misregistration


def _rotate_header(path: Path, degrees: float) -> None:
    """Rotate a file's direction cosines about the volume's corner (the grids still overlap)."""
    image = sitk.ReadImage(str(path))
    a = np.deg2rad(degrees)
    rotation = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    image.SetDirection(tuple((rotation @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel()))
    sitk.WriteImage(image, str(path))


def test_grossly_misregistered_sequence_is_refused(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "c")
    _rotate_header(case / "t2f.nii.gz", 10.0)
    assert predict([case, "--out", tmp_path / "o"], bundle_dir) == 1
    err = capsys.readouterr().err
    assert f"t2f ({case / 't2f.nii.gz'}) is not registered to t1n ({case / 't1n.nii.gz'})" in err
    assert "head masks overlap with Dice 0.7" in err and "register every sequence" in err
    assert not (tmp_path / "o" / "c_seg.nii.gz").exists()


def test_mildly_misregistered_sequence_is_a_warning(tmp_path):
    case = write_phantom(tmp_path / "c")
    _rotate_header(case / "t2f.nii.gz", 5.0)
    read = read_case(case)
    assert any("t2f" in w and "may be slightly misregistered to t1n" in w for w in read.warnings), read.warnings
    with pytest.raises(MisregistrationError):
        _rotate_header(case / "t2f.nii.gz", 10.0)
        read_case(case)


def test_registered_sequences_agree_and_a_partial_field_of_view_is_not_penalised(tmp_path):
    case = phantom_case(GRID)
    assert min(registration_agreement(case.images, "t1n").values()) > 0.99
    images = dict(case.images)
    fov = np.zeros(GRID.shape, dtype=bool)
    fov[:, :, :25] = True  # a FLAIR slab covering part of the brain, zero elsewhere
    images["t2f"] = np.where(fov, images["t2f"], 0.0)
    assert registration_agreement(images, "t1n", {"t2f": fov})["t2f"] > 0.99


def test_no_label_outside_the_brain_of_the_reference_sequence(bundle_dir, tmp_path):
    case = write_phantom(tmp_path / "c")
    out = tmp_path / "o"
    assert predict([case, "--out", out], bundle_dir) == 0  # random weights see tumor almost everywhere
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "c_seg.nii.gz")))
    t1n = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "t1n.nii.gz")))
    assert seg.any()
    assert not seg[t1n == 0].any()  # the phantom's background is exactly 0, its brain is not


def test_postprocess_removes_labels_outside_the_brain_but_keeps_dark_necrosis():
    image = np.zeros((20, 20, 20), np.float32)
    image[3:17, 3:17, 3:17] = 100.0
    image[8:12, 8:12, 8:12] = 0.0  # dark necrosis / cyst inside the brain
    labels = np.zeros(image.shape, np.uint8)
    labels[6:14, 6:14, 6:14] = 1
    labels[0:2, 0:2, 0:2] = 2  # outside the head
    out, notes = apply_postprocess(labels.copy(), LABEL_NAMES, 1e-3, PostprocessConfig(0.0, 0.0), brain_image=image)
    assert not out[0:2, 0:2, 0:2].any()
    assert (out[8:12, 8:12, 8:12] == 1).all()
    assert "outside the brain" in notes[0]


# --------------------------------------------------------------------------- warnings with the real reason


def test_tiny_field_of_view_is_an_error_not_a_warning(bundle_dir, tmp_path, capsys):
    grid = Geometry((16, 16, 16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), RAS)
    with pytest.raises(InvalidVolumeError, match="field of view too small to hold a brain"):
        check_field_of_view(grid)
    case = write_phantom(tmp_path / "c", grid=grid)
    assert predict([case, "--out", tmp_path / "o"], bundle_dir) == 1
    err = capsys.readouterr().err
    assert "field of view too small to hold a brain: 16x16x16 voxels of 1 x 1 x 1 mm" in err
    assert "skull-stripped" not in err and not (tmp_path / "o" / "report.json").exists()


def test_background_offset_is_named_as_such(bundle_dir, tmp_path):
    big = Geometry((40, 44, 36), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), RAS)
    images = {k: v - 5000.0 for k, v in phantom_case(big).images.items()}
    warnings = input_warnings(images, big)
    assert not any("skull-stripped" in w for w in warnings), warnings
    assert any("t1n (T1) (background -5000)" in w and "intensities look offset" in w for w in warnings), warnings


def test_fine_voxels_are_not_thick_slices():
    fine = Geometry((120, 120, 96), (0.47, 0.47, 0.47), (0.0, 0.0, 0.0), RAS)
    warnings = acquisition_warnings(phantom_case(fine).images, fine)
    assert not any("thick" in w for w in warnings), warnings
    thick = Geometry((40, 44, 12), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), RAS)
    assert any("thick slices" in w and "along z" in w for w in acquisition_warnings(phantom_case(thick).images, thick))


def test_volume_cut_through_the_head_is_not_called_unstripped():
    grid = Geometry((40, 44, 36), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), RAS)
    t1 = phantom_case(grid).images["t1n"][12:28, 12:32, 10:26]  # a crop inside the brain
    sub = Geometry(t1.shape[::-1], (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), RAS)
    warnings = acquisition_warnings({"t1n": t1}, sub)
    assert any("tissue reaches the edges of the volume" in w for w in warnings), warnings
    assert not any("skull-stripped" in w for w in warnings)


# ---------------------------------------------------------------------------------- unrecognised names


def test_folder_of_unrecognised_names_says_so(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "c")
    for i, path in enumerate(sorted(case.glob("t*.nii.gz"))):
        path.rename(case / f"series_{i}.nii.gz")
    with pytest.raises(UnknownSequenceError, match="found 4 image file"):
        read_case(case)
    assert predict([case, "--out", tmp_path / "o"], bundle_dir) == 1
    err = capsys.readouterr().err
    assert "found 4 image file(s) in folder" in err and "could not tell which sequence each is" in err
    assert "series_0.nii.gz" in err and "name the files t1n/t1c/t2w/t2f" in err
    assert "--t1n FILE" in err and "mapping" not in err  # only what the CLI can do
    # ... and the files can indeed be passed explicitly
    files = sorted(case.glob("series_*.nii.gz"))
    explicit = [a for key, f in zip(("t1n", "t1c", "t2w", "t2f"), files) for a in (f"--{key}", f)]
    assert predict([*explicit, "--out", tmp_path / "o"], bundle_dir) == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["input_files"]["t2f"] == str(files[3])


def test_extra_label_maps_do_not_stop_a_prediction(bundle_dir, tmp_path):
    case = write_phantom(tmp_path / "c", case_id="X", layout="brats2023")
    (case / "seg.nii.gz").write_bytes((case / "X-seg.nii.gz").read_bytes())  # a second label map
    assert predict([case, "--out", tmp_path / "o"], bundle_dir) == 0


def test_no_message_suggests_a_mapping(tmp_path):
    case = write_phantom(tmp_path / "c")
    (case / "flair.nii.gz").write_bytes((case / "t2f.nii.gz").read_bytes())
    with pytest.raises(Exception) as info:
        read_case(case)
    assert "two files map to sequence t2f" in str(info.value)
    assert "mapping" not in str(info.value) and "--t2f FILE" in str(info.value)


def test_one_unrecognised_name_among_recognised_ones_is_named(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "c")
    (case / "t1c.nii.gz").rename(case / "post_gd_axial.nii.gz")
    assert predict([case, "--out", tmp_path / "o"], bundle_dir) == 1
    err = capsys.readouterr().err
    assert "needs sequence(s) ['t1c']" in err
    assert "could not tell which sequence these files are: post_gd_axial.nii.gz" in err and "--t1c FILE" in err


def test_different_skull_stripping_is_not_called_misregistration(tmp_path):
    case = phantom_case(GRID)
    images = dict(case.images)
    head = images["t1n"].copy()
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in GRID.shape], indexing="ij")
    c = (np.asarray(GRID.shape) - 1) / 2.0
    r = np.sqrt(sum(((g - ci) / (0.49 * n)) ** 2 for g, ci, n in zip((zz, yy, xx), c, GRID.shape)))
    head[(r > 1.0) & (r <= 1.2) & (head == 0)] = 300.0  # a scalp around the brain: t1n not skull-stripped
    images["t1n"] = head
    from GliomaMTLLib.io.registration import check_registration

    warnings = check_registration(images, "t1n")
    assert warnings and all("cover different extents" in w and "skull-stripped" in w for w in warnings)


# ------------------------------------------------------------------------------------ patient age

@pytest.mark.parametrize("age, words", [("-3", "--age: patient age must lie between 0 and 120 years, got -3"),
                                        ("nan", "--age: patient age must lie between 0 and 120 years, got nan"),
                                        ("200", "--age: patient age must lie between 0 and 120 years, got 200")])
def test_bad_age_is_refused_before_any_work(tmp_path, bundle_dir, capsys, age, words):
    case = write_phantom(tmp_path / "case")
    assert predict([case, "--out", tmp_path / "o", "--age", age], bundle_dir) == 1
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


def test_age_with_a_cohort_is_refused(tmp_path, bundle_dir, capsys):
    assert predict(["--cohort", tmp_path, "--out", tmp_path / "o", "--age", "40"], bundle_dir) == 1
    assert "--age is the age of one patient: it cannot be given with --cohort" in capsys.readouterr().err


def test_age_on_a_model_without_an_age_input_is_named_in_the_report(tmp_path, bundle_dir):
    case = write_phantom(tmp_path / "case")
    assert predict([case, "--out", tmp_path / "o", "--age", "40"], bundle_dir) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    genotype_models = bool(report.get("genotype"))
    notes = [w for w in report["warnings"] if "patient age 40 not used" in w]
    assert bool(notes) == genotype_models  # a model without genotype tasks has nothing to use it for
