"""`gliomamtl predict` and `gliomamtl demo`: files written, conventions, progress protocol, cohorts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from GliomaMTLLib.cli import main
from GliomaMTLLib.inference.fixtures import phantom_case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.writers import write_case
from GliomaMTLLib.progress import parse_event

RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
GRID = Geometry((40, 44, 36), (1.0, 1.2, 1.5), (12.0, -30.0, 4.0), RAS)


def write_phantom(folder: Path, case_id: str, seed: int = 0, sequences=("t1n", "t1c", "t2w", "t2f")) -> Path:
    case = phantom_case(GRID, seed=seed, case_id=case_id, sequences=sequences)
    write_case(case, folder, layout="brats2023")
    return folder


def test_predict_case_folder(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "BraTS-GLI-00007-000", "BraTS-GLI-00007-000")
    out = tmp_path / "out"
    code = main(["predict", str(case), "--out", str(out), "--model", str(bundle_dir), "--device", "cpu",
                 "--labels", "2020", "--probabilities"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "case BraTS-GLI-00007-000" in printed and "idh:" in printed
    names = {p.name for p in out.iterdir()}
    assert {"BraTS-GLI-00007-000_seg.nii.gz", "report.json", "report.png"} <= names
    assert {f"BraTS-GLI-00007-000_prob_{r}.nii.gz" for r in ("WT", "TC", "ET")} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary file left behind
    seg = sitk.ReadImage(str(out / "BraTS-GLI-00007-000_seg.nii.gz"))
    assert Geometry.from_image(seg).same_grid(GRID)
    values = set(np.unique(sitk.GetArrayFromImage(seg)))
    assert values <= {0, 1, 2, 4}
    report = json.loads((out / "report.json").read_text())
    assert report["label_convention"] == "2020"
    assert set(report["input_files"]) == {"t1n", "t1c", "t2w", "t2f"}  # the label map is not read
    assert report["model"]["name"] == "random_test_model" and len(report["model"]["sha256"]) == 64
    prob = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "BraTS-GLI-00007-000_prob_WT.nii.gz")))
    assert prob.min() >= 0.0 and prob.max() <= 1.0


def test_predict_four_files_and_too_many(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "c", "P1")
    files = sorted(str(p) for p in case.glob("P1-t*.nii.gz"))
    assert len(files) == 4
    assert main(["predict", *files, "--out", str(tmp_path / "o"), "--model", str(bundle_dir), "--device", "cpu"]) == 0
    assert (tmp_path / "o" / "P1_seg.nii.gz").is_file()
    assert main(["predict", *files, files[0], "--out", str(tmp_path / "o2"), "--model", str(bundle_dir)]) == 1
    assert "at most 4" in capsys.readouterr().err


def test_missing_sequence_and_missing_model_are_one_line_errors(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "c", "P2", sequences=("t1n", "t2w", "t2f"))
    assert main(["predict", str(case), "--out", str(tmp_path / "o"), "--model", str(bundle_dir)]) == 1
    err = capsys.readouterr().err
    assert "needs sequence(s) ['t1c']" in err and str(case) in err and "Traceback" not in err
    assert main(["predict", str(case), "--out", str(tmp_path / "o"), "--model", "no_such_model"]) == 1
    assert "no_such_model" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "c", "P3")
    assert main(["predict", str(case), "--out", str(tmp_path / "o"), "--model", str(bundle_dir), "--device", "cuda"]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err


def test_progress_json_protocol(bundle_dir, tmp_path, capsys):
    case = write_phantom(tmp_path / "c", "P4")
    assert main(["predict", str(case), "--out", str(tmp_path / "o"), "--model", str(bundle_dir), "--device", "cpu",
                 "--progress-json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    events = [parse_event(line) for line in lines]
    assert all(e is not None for e in events), lines  # stdout holds protocol lines only
    progress = [e["fraction"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    done = events[-1]
    assert done["event"] == "done" and done["case_id"] == "P4"
    assert Path(done["outputs"]["report_json"]).is_file()
    # errors are reported as an error event too
    assert main(["predict", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--model", str(bundle_dir),
                 "--progress-json"]) == 1
    assert parse_event(capsys.readouterr().out.strip().splitlines()[-1])["event"] == "error"


def test_cohort_skips_done_cases_and_records_bad_ones(bundle_dir, tmp_path, capsys):
    root = tmp_path / "cohort"
    for i in range(3):
        write_phantom(root / f"case{i}", f"case{i}", seed=i)
    bad = root / "case1" / "case1-t1c.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file")
    out = tmp_path / "out"
    args = ["predict", "--cohort", str(root), "--out", str(out), "--model", str(bundle_dir), "--device", "cpu"]

    assert main(args) == 1  # one case failed
    printed = capsys.readouterr().out
    assert "2 done, 0 skipped (done before), 1 failed" in printed
    assert (out / "case0" / "report.json").is_file() and (out / "case2" / "report.json").is_file()
    assert not (out / "case1" / "report.json").exists()
    rows = list(csv.DictReader((out / "errors.csv").open()))
    assert [r["case"] for r in rows] == ["case1"] and "case1-t1c.nii.gz" in rows[0]["error"]
    summary = json.loads((out / "cohort_summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    stamp = (out / "case0" / "report.json").stat().st_mtime_ns

    assert main(args) == 1  # rerun: done cases skipped, the bad one tried again
    assert "0 done, 2 skipped (done before), 1 failed" in capsys.readouterr().out
    assert (out / "case0" / "report.json").stat().st_mtime_ns == stamp

    write_phantom(root / "case1", "case1", seed=1)  # repaired
    assert main(args) == 0
    assert "1 done, 2 skipped (done before), 0 failed" in capsys.readouterr().out
    assert not (out / "errors.csv").exists()
    with (out / "summary.csv").open() as handle:
        assert {r["case"]: r["status"] for r in csv.DictReader(handle)}["case1"] == "done"


def test_case_and_cohort_are_exclusive(bundle_dir, tmp_path, capsys):
    assert main(["predict", "--out", str(tmp_path)]) == 1
    assert "give a case" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--cohort", str(tmp_path), "--out", str(tmp_path)]) == 1


def case_dirs_id(out) -> str:
    (case_dir,) = list((out / "input").iterdir())
    return case_dir.name


def test_demo_runs_end_to_end(bundle_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("nilearn")
    import GliomaMTLLib.synth as synth

    real = synth.generate_case
    monkeypatch.setattr(synth, "generate_case", lambda seed, cohort="adult", **kw: real(seed, cohort=cohort, small=True))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", str(bundle_dir), "--device", "cpu", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "comparison with the synthetic ground truth" in printed and "Dice" in printed
    assert "demo: integrated gradients of" in printed
    explained = json.loads((out / "explain" / "explain.json").read_text())
    assert explained["steps"] >= 1 and explained["case_id"] == case_dirs_id(out)
    assert (out / "explain" / "explain.png").is_file()
    assert any(p.name.endswith(".nii.gz") and "_ig_" in p.name for p in (out / "explain").iterdir())
    case_dirs = list((out / "input").iterdir())
    assert len(case_dirs) == 1 and any(p.name.endswith("-t2f.nii.gz") for p in case_dirs[0].iterdir())
    assert (out / "prediction" / "report.json").is_file()
