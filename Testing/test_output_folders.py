"""Output folders, OS errors and the progress protocol (issue 8, section 2), and caches in the test tmp.

Each test asserts the exit status and the words of the message.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from GliomaMTLLib import paths
from GliomaMTLLib.cli import main
from GliomaMTLLib.cli import predict_cmd
from GliomaMTLLib.inference.fixtures import phantom_case
from GliomaMTLLib.io import output_folder
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.writers import write_case
from GliomaMTLLib.progress import parse_event

RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
GRID = Geometry((40, 44, 36), (1.0, 1.2, 1.5), (12.0, -30.0, 4.0), RAS)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    for i, name in enumerate(("A", "B")):
        write_case(phantom_case(GRID, case_id=name, seed=i), root / name, layout="brats2023")
    return root


def predict(args, bundle_dir, *extra):
    return main(["predict", *map(str, args), "--model", str(bundle_dir), "--device", "cpu", *extra])


@pytest.fixture
def no_computation(monkeypatch):
    """Fail the test if a model is loaded: the output folder must be refused before."""
    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the output folder was checked")
    monkeypatch.setattr(predict_cmd, "make_predictor", refuse)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gliomamtl predict: error: ")
    return lines[0]


# ------------------------------------------------------------------------- unusable --out, one line first


def test_out_is_a_file(cases, bundle_dir, tmp_path, capsys, no_computation):
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    assert predict([cases / "A", "--out", out], bundle_dir) == 1
    assert f"output folder {out} is a file, not a folder" in one_error_line(capsys.readouterr().err)


def test_out_under_a_file(cases, bundle_dir, tmp_path, capsys, no_computation):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert predict([cases / "A", "--out", blocker / "sub" / "out"], bundle_dir) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot create output folder {blocker / 'sub' / 'out'}: {blocker} is a file, not a folder" in line


def test_read_only_out(cases, bundle_dir, tmp_path, capsys, no_computation, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()

    def denied(*_a, dir=None, **_k):  # the tests run as root, for whom chmod does not forbid writing
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))
    monkeypatch.setattr(output_folder.tempfile, "mkstemp", denied)
    assert predict([cases / "A", "--out", out], bundle_dir) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot write into output folder {out}: Permission denied" in line


def test_full_disk_before_computing(cases, bundle_dir, tmp_path, capsys, no_computation, monkeypatch):
    usage = type("Usage", (), {"total": 10**9, "used": 10**9 - 2**20, "free": 2**20})
    monkeypatch.setattr(output_folder.shutil, "disk_usage", lambda _p: usage)
    assert predict([cases / "A", "--out", tmp_path / "o"], bundle_dir) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"not enough free space for the outputs in {tmp_path / 'o'}: 1 MB free, at least 64 MB needed" in line


def test_disk_full_while_writing_is_one_error_event_and_no_done(cases, bundle_dir, tmp_path, capsys, monkeypatch):
    import GliomaMTLLib.io.writers as writers

    def full(image, path, *args):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("sitk::ERROR: could not write the file")
    monkeypatch.setattr(writers.sitk, "WriteImage", full)
    monkeypatch.setattr(writers, "free_bytes", lambda _folder: 0)
    out = tmp_path / "o"
    assert predict([cases / "A", "--out", out], bundle_dir, "--progress-json") == 1
    captured = capsys.readouterr()
    events = [parse_event(line) for line in captured.out.strip().splitlines()]
    assert all(e is not None for e in events)
    kinds = [e["event"] for e in events]
    assert kinds.count("error") == 1 and "done" not in kinds and kinds[-1] == "error"
    assert f"{out / 'A_seg.nii.gz'}: No space left on device" in events[-1]["message"]
    assert f"{out / 'A_seg.nii.gz'}: No space left on device" in one_error_line(captured.err)
    assert sorted(p.name for p in out.iterdir()) == []  # no partial file, no report


def test_os_error_anywhere_is_one_line_with_path_and_reason_and_debug_shows_the_traceback(
        cases, bundle_dir, tmp_path, capsys, monkeypatch):
    def boom(*_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied", "/models/x/model.safetensors")
    monkeypatch.setattr(predict_cmd, "make_predictor", boom)
    assert predict([cases / "A", "--out", tmp_path / "o"], bundle_dir) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.endswith("/models/x/model.safetensors: Permission denied (no permission; choose a folder you can "
                         "write to)")
    assert predict([cases / "A", "--out", tmp_path / "o", "--debug"], bundle_dir) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == line
    monkeypatch.setenv("GLIOMAMTL_DEBUG", "1")
    assert predict([cases / "A", "--out", tmp_path / "o"], bundle_dir) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_is_one_line_that_points_to_debug(cases, bundle_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(predict_cmd, "make_predictor", lambda *_a, **_k: None)
    assert predict([cases / "A", "--out", tmp_path / "o"], bundle_dir) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "internal error: AttributeError" in line and "rerun with --debug" in line


# ---------------------------------------------------------------------------------------- flag values


@pytest.mark.parametrize("flag", ["--et-min-ml", "--min-component-ml"])
def test_bad_flag_value_names_the_flag(cases, bundle_dir, tmp_path, capsys, no_computation, flag):
    assert predict([cases / "A", "--out", tmp_path / "o", flag, "-1"], bundle_dir) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{flag} must be a number >= 0 (ml; 0 disables the rule), got -1" in line
    assert "model.json" not in line


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_confidence_outside_0_1_names_the_flag(cases, bundle_dir, tmp_path, capsys, no_computation, value):
    assert predict([cases / "A", "--out", tmp_path / "o", "--et-min-confidence", value], bundle_dir) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"--et-min-confidence must be a probability in [0, 1] (0 disables the rule), got {float(value):g}" in line


def test_bad_flag_with_progress_json_is_an_error_event(cases, bundle_dir, tmp_path, capsys, no_computation):
    assert predict([cases / "A", "--out", tmp_path / "o", "--et-min-ml", "-1", "--progress-json"], bundle_dir) == 1
    events = [parse_event(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [e["event"] for e in events] == ["error"] and "--et-min-ml" in events[0]["message"]


# ---------------------------------------------------------------- earlier outputs: never a mix of two runs


def test_finished_case_needs_overwrite_and_old_files_do_not_survive(cases, bundle_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert predict([cases / "A", "--out", out, "--probabilities"], bundle_dir) == 0
    stamp = (out / "A_seg.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert predict([cases / "A", "--out", out], bundle_dir) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"case A is already done in {out} (report.json exists); pass --overwrite" in line
    assert (out / "A_seg.nii.gz").stat().st_mtime_ns == stamp  # nothing touched
    assert predict([cases / "A", "--out", out, "--overwrite"], bundle_dir) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["A_seg.nii.gz", "report.json", "report.png"]  # old probability maps removed
    report = json.loads((out / "report.json").read_text())
    assert set(report["output_files"]) == {"seg", "report_png", "report_json"}
    assert any("replaced the earlier outputs of case A" in w for w in report["warnings"])


def test_another_cases_outputs_are_not_mixed(cases, bundle_dir, tmp_path, capsys):
    out = tmp_path / "o"
    (out).mkdir()
    (out / "notes.txt").write_text("mine")
    assert predict([cases / "A", "--out", out], bundle_dir) == 0
    capsys.readouterr()
    assert predict([cases / "B", "--out", out], bundle_dir) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"output folder {out} already holds the finished outputs of case A" in line
    assert "would mix two cases" in line and "--overwrite" in line
    assert predict([cases / "B", "--out", out, "--overwrite"], bundle_dir) == 0
    assert sorted(p.name for p in out.iterdir()) == ["B_seg.nii.gz", "notes.txt", "report.json", "report.png"]
    assert json.loads((out / "report.json").read_text())["case_id"] == "B"


def test_interrupted_run_is_replaced_and_partial_files_cleaned(cases, bundle_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "A_seg.nii.gz").write_bytes(b"from a killed run")
    (out / "A_prob_ET.nii.gz").write_bytes(b"from a killed run")
    (out / ".A_prob_WT.nii.gz.x1y2.partial.nii.gz").write_bytes(b"half")
    (out / ".report.json.abc.partial.json").write_bytes(b"half")
    assert predict([cases / "A", "--out", out], bundle_dir) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["A_seg.nii.gz", "report.json", "report.png"]
    report = json.loads((out / "report.json").read_text())
    assert any("replaced the unfinished outputs of an interrupted run of case A" in w for w in report["warnings"])


def test_done_comes_after_every_output_is_in_place(cases, bundle_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert predict([cases / "A", "--out", out, "--probabilities", "--progress-json"], bundle_dir) == 0
    events = [parse_event(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [e["event"] for e in events].count("done") == 1 and events[-1]["event"] == "done"
    for path in events[-1]["outputs"].values():
        assert Path(path).is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cohort_overwrite_redoes_finished_cases(cases, bundle_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert predict(["--cohort", cases, "--out", out], bundle_dir) == 0
    assert "2 done" in capsys.readouterr().out
    assert predict(["--cohort", cases, "--out", out], bundle_dir) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out
    assert predict(["--cohort", cases, "--out", out, "--overwrite"], bundle_dir) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out


# ----------------------------------------------------------------------------- caches in the test tmp


def test_suite_caches_live_in_a_temporary_folder(tmp_path_factory):
    base = tmp_path_factory.getbasetemp().resolve()
    home = Path.home().resolve()
    for folder in (paths.cache_dir(), paths.data_dir(), paths.store_dir(), paths.registry_dir()):
        assert base in folder.resolve().parents, folder
        assert home not in folder.resolve().parents or home in base.parents
    assert os.environ["GLIOMAMTL_CACHE"].startswith(str(tmp_path_factory.getbasetemp()))


def test_other_commands_check_their_out_too(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["synth", "--out", str(blocker / "cohort"), "--n", "1", "--small", "--json"]) == 1
    captured = capsys.readouterr()
    events = [parse_event(line) for line in captured.out.strip().splitlines()]
    assert [e["event"] for e in events] == ["error"]
    assert f"{blocker} is a file, not a folder" in events[0]["message"]
    assert captured.err.strip().startswith("gliomamtl synth: error: cannot create output folder")
