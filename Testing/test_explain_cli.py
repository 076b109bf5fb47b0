"""`gliomamtl explain`: files written on the input grid, the progress protocol, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from GliomaMTLLib.cli import main
from GliomaMTLLib.inference.fixtures import make_random_bundle, phantom_case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.writers import write_case
from GliomaMTLLib.progress import parse_event

RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
GRID = Geometry((24, 22, 20), (2.0, 2.0, 2.0), (12.0, -30.0, 4.0), RAS)


@pytest.fixture(autouse=True)
def _one_thread(single_torch_thread, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("GLIOMAMTL_CACHE", str(tmp_path_factory.getbasetemp() / "gliomamtl_cache"))
    yield


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny"
    make_random_bundle(folder, main_features=(4, 8), crop_size=(16, 16, 16), main_spacing=(2.0, 2.0, 2.0),
                       localizer=False)
    return folder


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases") / "BraTS-GLI-00003-000"
    write_case(phantom_case(GRID, tumor_center=(6.0, 14.0, 8.0), tumor_radius=3.0, case_id="BraTS-GLI-00003-000"),
               folder, layout="brats2023")
    return folder


def test_explain_writes_heatmaps_json_and_figure(bundle_dir, case_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", str(case_dir), "--out", str(out), "--model", str(bundle_dir), "--task", "idh",
                 "--steps", "4", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "case BraTS-GLI-00003-000: idh =" in printed and "delta" in printed
    cid = "BraTS-GLI-00003-000"
    expected = {f"{cid}_ig_idh_{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f", "combined")}
    names = {p.name for p in out.iterdir()}
    assert expected | {"explain.json", "explain.png"} == names  # nothing else, no temporary file
    for name in expected:
        assert Geometry.from_image(sitk.ReadImage(str(out / name))).same_grid(GRID)
    report = json.loads((out / "explain.json").read_text())
    assert report["task"] == "idh" and report["class_explained"] in ("wildtype", "mutant")
    assert 0.0 <= report["probability"] <= 1.0 and report["steps"] == 4
    assert set(report["sequence_share"]) == {"t1n", "t1c", "t2w", "t2f"}
    assert sum(report["sequence_share"].values()) == pytest.approx(1.0, abs=1e-4)
    assert {"inside", "near"} == set(report["tumor_share"])
    assert "blurred" in report["baseline"] and isinstance(report["delta"], float)
    combined = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{cid}_ig_idh_combined.nii.gz")))
    parts = sum(sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{cid}_ig_idh_{s}.nii.gz")))
                for s in ("t1n", "t1c", "t2w", "t2f"))
    np.testing.assert_allclose(combined, parts, rtol=1e-5, atol=1e-9)


def test_progress_json_ends_with_done_after_the_files(bundle_dir, case_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(case_dir), "--out", str(out), "--model", str(bundle_dir), "--task", "WT",
                 "--steps", "4", "--batch", "2", "--progress-json"]) == 0
    events = [parse_event(line) for line in capsys.readouterr().out.splitlines()]
    assert all(e is not None for e in events)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and "error" not in kinds
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and len(fractions) >= 4
    done = events[-1]
    assert done["task"] == "WT" and Path(done["outputs"]["explain_json"]).is_file()


def test_bad_task_steps_and_case_are_one_line_errors(bundle_dir, case_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["explain", str(case_dir), "--out", out, "--model", str(bundle_dir), "--task", "braf"]) == 1
    err = capsys.readouterr().err
    assert "no task 'braf'" in err and "idh" in err and len(err.strip().splitlines()) == 1
    assert main(["explain", str(case_dir), "--out", out, "--model", str(bundle_dir), "--steps", "0"]) == 1
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert main(["explain", str(case_dir), "--out", out, "--model", str(bundle_dir), "--age", "-5"]) == 1
    assert "--age: patient age must lie between 0 and 120 years, got -5" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "nowhere"), "--out", out, "--model", str(bundle_dir),
                 "--progress-json"]) == 1
    captured = capsys.readouterr()
    events = [parse_event(line) for line in captured.out.splitlines()]
    assert events and events[-1]["event"] == "error" and "nowhere" in events[-1]["message"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_command_line_defaults_are_the_library_defaults():
    """The command line keeps its own copies (it must not import torch for --help)."""
    from GliomaMTLLib.cli import explain_cmd
    from GliomaMTLLib.explain import DEFAULT_BATCH, DEFAULT_BLUR_MM, DEFAULT_STEPS

    assert (explain_cmd.DEFAULT_STEPS, explain_cmd.DEFAULT_BATCH, explain_cmd.DEFAULT_BLUR_MM) == (
        DEFAULT_STEPS, DEFAULT_BATCH, DEFAULT_BLUR_MM)
