"""GliomaMTLLib.slicer_bridge: what the Slicer panel relies on, tested without Slicer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import tomllib

import pytest

from GliomaMTLLib.io.layout import identify_file
from GliomaMTLLib.paths import PACKAGE_PARENT, SHIPPED_MODELS_DIR
from GliomaMTLLib.slicer_bridge import commands, dependencies, jobs, models, results, segments
from GliomaMTLLib.slicer_bridge.exchange import JobFiles
from GliomaMTLLib.slicer_bridge.naming import assign_sequences, reference_sequence, safe_case_id, sequence_of_name

# ----------------------------------------------------------------------------- naming


@pytest.mark.parametrize("name, expected", [
    ("BraTS-GLI-00000-000-t1n", "t1n"),
    ("BraTS-GLI-00000-000-t1c", "t1c"),
    ("BraTS-PED-00030-000-t2w", "t2w"),
    ("BraTS-GLI-00000-000-t2f", "t2f"),
    ("BraTS20_Training_001_t1", "t1n"),
    ("BraTS20_Training_001_t1ce", "t1c"),
    ("BraTS2021_00012_t2", "t2w"),
    ("BraTS20_Training_001_flair", "t2f"),
    ("t1gd", "t1c"),
    ("T1 GD", "t1c"),
    ("case7_T2-FLAIR_1", "t2f"),
    ("FLAIR", "t2f"),
    ("t1n_2", "t1n"),
    ("BraTS20_Training_001_seg", None),
    ("BraTS-GLI-00000-000-seg", None),
    ("case7_ig_idh_t1c", None),
    ("MRHead", None),
    ("BraTS-GLI-00000-000", None),
])
def test_sequence_of_name(name, expected):
    assert sequence_of_name(name) == expected


def test_assign_sequences_fills_only_free_inputs_without_reuse():
    names = ["MRHead", "BraTS20_Training_001_t1", "BraTS20_Training_001_t1ce", "other_t1ce",
             "BraTS20_Training_001_flair", "BraTS20_Training_001_seg"]
    chosen = assign_sequences(names, current={"t1c": "other_t1ce", "t2w": None})
    assert chosen == {"t1n": "BraTS20_Training_001_t1", "t2f": "BraTS20_Training_001_flair"}
    assert assign_sequences(names) == {"t1n": "BraTS20_Training_001_t1", "t1c": "BraTS20_Training_001_t1ce",
                                       "t2f": "BraTS20_Training_001_flair"}


@pytest.mark.parametrize("name, expected", [
    ("BraTS-GLI-00000-000-t1c", "BraTS-GLI-00000-000"),
    ("Patient 12 (study)", "Patient-12-study"),
    ("t1n", "case"),
    ("a/b:c", "abc"),
])
def test_safe_case_id(name, expected):
    assert safe_case_id(name) == expected


# ----------------------------------------------------------------------------- exchange


def test_job_files_are_read_back_as_the_right_sequence_by_the_engine(tmp_path):
    files = JobFiles(tmp_path, "Patient-12")
    for seq in ("t1n", "t1c", "t2w", "t2f"):
        key, prefix = identify_file(files.input_file(seq))
        assert (key, prefix) == (seq, "Patient-12")
    assert files.seg_file.name == "Patient-12_seg.nii.gz"
    assert files.seg_nrrd_file.name == "Patient-12_seg.seg.nrrd"
    assert files.heatmap_file("idh", "t1c").name == "Patient-12_ig_idh_t1c.nii.gz"
    assert identify_file(files.correction_file) is None or files.correction_file.parent != files.input_dir
    with pytest.raises(ValueError, match="cannot be used in a file name"):
        JobFiles(tmp_path, "a b")


def test_reference_sequence_is_the_engines_reference_grid(tmp_path):
    """The panel places results on the volume whose grid the engine's reader makes the case grid."""
    from GliomaMTLLib.inference.fixtures import phantom_case
    from GliomaMTLLib.io.geometry import Geometry
    from GliomaMTLLib.io.readers import read_case
    from GliomaMTLLib.io.writers import write_volume

    coarse = Geometry((12, 12, 12), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    fine = Geometry((16, 16, 16), (1.5, 1.5, 1.5), (-0.25, -0.25, -0.25), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    files = JobFiles(tmp_path, "c1")
    write_volume(files.input_file("t2f"), phantom_case(fine, sequences=("t2f",)).images["t2f"], fine)
    write_volume(files.input_file("t1c"), phantom_case(coarse, sequences=("t1c",)).images["t1c"], coarse)
    assert files.written_sequences() == ["t1c", "t2f"]
    assert reference_sequence(files.written_sequences()) == "t1c"
    assert read_case(files.input_dir).geometry.same_grid(coarse)
    assert reference_sequence(["t2f", "t2w"]) == "t2w"
    with pytest.raises(ValueError, match="no MR sequence"):
        reference_sequence(["label"])


# ----------------------------------------------------------------------------- commands


def test_predict_and_cohort_commands():
    cmd = commands.predict_command("/s/PythonSlicer", "/j/input", "/j/output", model="gliomamtl_adult@0.2.0",
                                   device="cpu")
    assert cmd[:4] == ["/s/PythonSlicer", "-u", "-m", "GliomaMTLLib"]
    assert cmd[4:] == ["predict", "/j/input", "--out", "/j/output", "--model", "gliomamtl_adult@0.2.0",
                       "--device", "cpu", "--progress-json", "--seg-nrrd"]
    cohort = commands.cohort_command("py", "/root", "/out", model="m", device="auto")
    assert cohort[4:8] == ["predict", "--cohort", "/root", "--out"] and "--progress-json" in cohort
    with pytest.raises(ValueError, match="device 'gpu'"):
        commands.predict_command("py", "a", "b", model="m", device="gpu")
    assert commands.predict_command("py", "a", "b", model="m", age=54.5)[-2:] == ["--age", "54.5"]
    assert commands.predict_command("py", "a", "b", model="m", flips="on")[-1] == "--tta"
    assert commands.cohort_command("py", "/r", "/o", model="m", flips="off")[-1] == "--no-tta"
    assert commands.predict_command("py", "a", "b", model="m", flips="off")[-1] == "--no-tta"
    assert not {"--tta", "--no-tta"} & set(commands.predict_command("py", "a", "b", model="m"))
    with pytest.raises(ValueError, match="test-time flips 'yes' is not one of"):
        commands.predict_command("py", "a", "b", model="m", flips="yes")
    with pytest.raises(ValueError, match="patient age must lie between 0 and 120 years, got 130"):
        commands.predict_command("py", "a", "b", model="m", age=130)
    with pytest.raises(ValueError, match="interpreter"):
        commands.engine_command("")


def test_explain_correct_finetune_models_commands():
    assert commands.explain_command("py", "c", "o", model="m", task="idh", steps=16)[4:] == [
        "explain", "c", "--out", "o", "--model", "m", "--task", "idh", "--steps", "16", "--device", "auto",
        "--progress-json"]
    with pytest.raises(ValueError, match="at least 2 steps"):
        commands.explain_command("py", "c", "o", model="m", task="idh", steps=1)
    cmd = commands.correct_command("py", "c", "l.nrrd", store="/st", genotype={"idh": "mutant", "codel_1p19q": "",
                                                                             "braf": "fusion"}, replace=True)
    assert cmd[4:] == ["correct", "c", "--labels", "l.nrrd", "--idh", "mutant", "--braf", "fusion",
                       "--store", "/st", "--replace"]
    with pytest.raises(ValueError, match="no correction flag for genotype task 'mgmt'"):
        commands.correct_command("py", "c", "l", genotype={"mgmt": "methylated"})
    assert commands.finetune_command("py", store="/st", from_version="m@1", iterations=3)[4:] == [
        "finetune", "--store", "/st", "--from", "m@1", "--iterations", "3", "--progress-json"]
    with pytest.raises(ValueError, match="at least 1 iteration"):
        commands.finetune_command("py", store=None, from_version="m", iterations=0)
    assert commands.models_command("py", "use", "m@1")[4:] == ["models", "use", "m@1"]
    assert commands.models_command("py", "rollback", "m")[4:] == ["models", "rollback", "m"]
    assert commands.models_command("py", "list")[4:] == ["models", "list"]
    with pytest.raises(ValueError, match="needs a version"):
        commands.models_command("py", "use")
    assert commands.child_environment("cpu")["CUDA_VISIBLE_DEVICES"] == "-1"
    assert "CUDA_VISIBLE_DEVICES" not in commands.child_environment("auto")


def test_engine_command_runs_from_the_engine_folder():
    """The child command line really starts the engine's CLI (``-m`` from :func:`engine_cwd`)."""
    done = subprocess.run(commands.engine_command(sys.executable, "--help"), cwd=commands.engine_cwd(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "predict" in done.stdout
    assert commands.engine_cwd() == PACKAGE_PARENT and (PACKAGE_PARENT / "GliomaMTLLib").is_dir()


# ----------------------------------------------------------------------------- jobs


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_job_reads_progress_log_and_done():
    proc = _child("""
        import json
        print(json.dumps({"event": "progress", "fraction": 0.25, "message": "reading"}))
        print("a plain log line")
        print(json.dumps({"event": "progress", "fraction": 0.75, "message": "predicting"}))
        print(json.dumps({"event": "done", "case_id": "c1"}))
    """)
    job = jobs.ChildJob(proc, command=["child"])
    seen = []
    assert job.wait(timeout=60, on_events=seen.extend) == "done"
    assert [e["event"] for e in seen] == ["progress", "progress", "done"]
    assert job.state.result["case_id"] == "c1" and job.state.fraction == 1.0
    assert "a plain log line" in job.state.log


def test_job_error_event_and_missing_done_are_errors():
    proc = _child("""
        import json, sys
        print(json.dumps({"event": "progress", "fraction": 0.5, "message": "x"}))
        print(json.dumps({"event": "error", "message": "file t1c.nrrd is truncated"}))
        sys.exit(1)
    """)
    job = jobs.ChildJob(proc)
    assert job.wait(timeout=60) == "error"
    assert job.error_message() == "file t1c.nrrd is truncated"
    assert job.state.fraction == 0.5
    quiet = jobs.ChildJob(_child("print('no protocol')"))
    assert quiet.wait(timeout=60) == "error"
    assert "without reporting" in quiet.error_message()
    plain = jobs.ChildJob(_child("print('stored entry')"), expects_done=False)
    assert plain.wait(timeout=60) == "done"
    crashed = jobs.ChildJob(_child("import sys; print('Traceback: ValueError: bad label 7'); sys.exit(3)"),
                            expects_done=False)
    assert crashed.wait(timeout=60) == "error" and "bad label 7" in crashed.error_message()
    assert "Traceback" in crashed.details()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tree_child():
    """A launcher-like child that starts a long-running grandchild and reports its pid."""
    proc = _child("""
        import json, subprocess, sys, time
        grand = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(json.dumps({"event": "progress", "fraction": 0.1, "message": str(grand.pid)}))
        time.sleep(120)
    """)
    job = jobs.ChildJob(proc)
    deadline = time.monotonic() + 60
    while not job.state.message and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    return job, int(job.state.message)


def test_cancel_kills_the_whole_process_tree():
    job, grandchild = _tree_child()
    assert job.poll() == [] and not job.finished  # nothing new: poll returns at once, job still running
    assert jobs.descendant_pids(job.process.pid) == [grandchild]
    job.cancel()
    assert job.wait(timeout=30) == "cancelled"
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild) and not _alive(job.process.pid)


def test_descendants_found_without_psutil(monkeypatch):
    job, grandchild = _tree_child()
    try:
        monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now fails: the ps fallback is used
        assert jobs.descendant_pids(job.process.pid) == [grandchild]
        job.cancel()
    finally:
        monkeypatch.undo()
        job.cancel()
    assert job.wait(timeout=30) == "cancelled"


# ----------------------------------------------------------------------------- results


REPORT = {
    "model": {"name": "gliomamtl_adult", "version": "0.2.0"},
    "device": "cpu",
    "labels": {"1": "necrotic core", "2": "edema", "3": "enhancing tumor"},
    "genotype": {
        "idh": {"available": False, "reason": "card: IDH head not learned (AUC 0.48)",
                "probabilities": {"wildtype": 0.5, "mutant": 0.5}},
        "codel_1p19q": {"available": True, "probabilities": {"intact": 0.3, "codeleted": 0.7}, "call": "codeleted"},
    },
    "volumes_ml": {"WT": 12.5, "TC": 4.25, "ET": 1.0},
    "warnings": ["no tumor found in slice range"],
}


def test_genotype_rows_mark_unavailable_tasks_and_the_call():
    rows = results.genotype_rows(REPORT)
    assert rows[0] == results.GenotypeRow("idh", "not available", None, False, "card: IDH head not learned (AUC 0.48)")
    assert rows[0].probability_text == "-"
    assert [(r.label, r.probability, r.predicted) for r in rows[1:]] == [("codeleted", 0.7, True),
                                                                         ("intact", 0.3, False)]
    old_style = {"genotype": {"idh": {"probabilities": {"wildtype": 0.2, "mutant": 0.8}, "predicted": "mutant"}}}
    assert [r.predicted for r in results.genotype_rows(old_style)] == [True, False]


def test_report_parsing_names_missing_keys():
    assert results.volume_rows(REPORT) == [("WT", 12.5), ("TC", 4.25), ("ET", 1.0)]
    assert results.warnings_of(REPORT) == ["no tumor found in slice range"]
    assert results.label_names(REPORT) == {1: "necrotic core", 2: "edema", 3: "enhancing tumor"}
    assert results.model_line(REPORT) == "gliomamtl_adult 0.2.0 on cpu"
    flipped = {**REPORT, "device": "cuda", "model": {**REPORT["model"], "test_time_flips": True}}
    assert results.model_line(flipped) == "gliomamtl_adult 0.2.0 on cuda, test-time flips"
    with pytest.raises(results.ResultError, match="has no 'genotype' entry"):
        results.genotype_rows({"volumes_ml": {}})
    with pytest.raises(results.ResultError, match="'volumes_ml' is a list"):
        results.volume_rows({"volumes_ml": [1, 2]})
    with pytest.raises(results.ResultError, match="genotype 'idh' has no 'probabilities'"):
        results.genotype_rows({"genotype": {"idh": {"predicted": "mutant"}}})


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(results.ResultError, match=r"report.json .*was not written"):
        results.read_json(tmp_path / "report.json", "report.json")
    bad = tmp_path / "explain.json"
    bad.write_text("{not json")
    with pytest.raises(results.ResultError, match="cannot be read"):
        results.read_json(bad, "explain.json")
    bad.write_text("[1]")
    with pytest.raises(results.ResultError, match="holds a list"):
        results.read_json(bad, "explain.json")


def test_explain_summary_and_heatmap_files(tmp_path):
    data = {"task": "idh", "class_explained": "mutant", "probability": 0.61, "delta": 0.0123, "steps": 32,
            "baseline": "zero (brain mean)", "sequence_share": {"t1c": 0.5, "t2f": 0.3}}
    summary = results.explain_summary(data)
    assert (summary.explained_class, summary.delta, summary.steps) == ("mutant", 0.0123, 32)
    assert "delta 0.0123" in summary.text() and "t1c 50%" in summary.text()
    assert "(2.5% of the explained change)" in results.explain_summary({**data, "relative_delta": 0.025}).text()
    assert "Warning" not in summary.text()  # explain.json's warnings (e.g. an incomplete heatmap) reach the panel
    warned = results.explain_summary({**data, "warnings": ["the heatmap's sum misses the explained change by 133%"]})
    assert warned.text().endswith("\nWarning: the heatmap's sum misses the explained change by 133%")
    with pytest.raises(results.ResultError, match="numeric 'delta'"):
        results.explain_summary({"task": "idh"})
    for seq in ("t1c", "combined"):
        (tmp_path / f"c1_ig_idh_{seq}.nii.gz").write_bytes(b"x")
    found = results.heatmap_files(data, tmp_path, "c1", "idh", ["t1n", "t1c"])
    assert found == {"t1c": tmp_path / "c1_ig_idh_t1c.nii.gz", "combined": tmp_path / "c1_ig_idh_combined.nii.gz"}
    (tmp_path / "other_name_t2f.nii.gz").write_bytes(b"x")
    listed = {**data, "files": {"ig_t2f": str(tmp_path / "other_name_t2f.nii.gz"), "explain_png": "explain.png",
                                "ig_t1n": str(tmp_path / "missing.nii.gz")}}
    assert results.heatmap_files(listed, tmp_path, "c1", "idh", ["t1n", "t1c", "t2f"]) == {
        "t2f": tmp_path / "other_name_t2f.nii.gz", **found}


# ----------------------------------------------------------------------------- models


def test_shipped_models_and_required_sequences():
    choices = {c.name: c for c in models.list_choices(registry="/nonexistent")}
    assert {"gliomamtl_adult", "gliomamtl_pediatric"} <= set(choices)
    ped = choices["gliomamtl_pediatric"]
    assert ped.shipped and ped.active and ped.sequences == ("t2f",)
    assert models.sequence_roles(ped) == {"t1n": "not used", "t1c": "not used", "t2w": "not used", "t2f": "required"}
    # the adult model reads all four but needs only FLAIR (model.json required/optional_sequences)
    adult = choices["gliomamtl_adult"]
    assert adult.sequences == ("t1n", "t1c", "t2w", "t2f") and adult.required_sequences == ("t2f",)
    assert models.sequence_roles(adult) == {"t1n": "optional", "t1c": "optional", "t2w": "optional", "t2f": "required"}
    assert models.sequence_label("t2f", "required") == "FLAIR (t2f), required"
    assert ped.folder == SHIPPED_MODELS_DIR / "gliomamtl_pediatric"


def test_registry_versions_active_and_metrics(tmp_path):
    reg = tmp_path / "registry"
    folder = reg / "gliomamtl_adult" / "0.2.0-ft.1"
    folder.mkdir(parents=True)
    meta = json.loads((SHIPPED_MODELS_DIR / "gliomamtl_adult" / "model.json").read_text())
    shipped = f"gliomamtl_adult@{meta['version']}"
    meta["finetune"] = {"parent": {"id": shipped}, "held_out": ["a", "b"],
                        "metrics_before": {"dice": {"WT": 0.41}}, "metrics_after": {"dice": {"WT": 0.83}}}
    (folder / "model.json").write_text(json.dumps(meta))
    (reg / ".staging").mkdir()  # hidden folders (a bundle being written) are skipped
    by_id = {c.id: c for c in models.list_choices(registry=reg)}
    ft = by_id["gliomamtl_adult@0.2.0-ft.1"]
    assert not ft.shipped and ft.parent == shipped and not ft.active
    assert by_id[shipped].active
    (reg / "active.json").write_text(json.dumps({"history": {"gliomamtl_adult": ["0.2.0-ft.1"]}}))
    by_id = {c.id: c for c in models.list_choices(registry=reg)}
    assert by_id["gliomamtl_adult@0.2.0-ft.1"].active and not by_id[shipped].active
    rows = models.version_rows([by_id["gliomamtl_adult@0.2.0-ft.1"]])
    assert rows == [["gliomamtl_adult@0.2.0-ft.1", shipped, "0.410 -> 0.830", "active"]]


# ----------------------------------------------------------------------------- segments


def test_segment_specs_standard_and_pediatric():
    specs = segments.segment_specs()
    assert [(s.label, s.segment_id, s.name) for s in specs] == [
        (1, "NCR", "necrotic core"), (2, "ED", "edema"), (3, "ET", "enhancing tumor")]
    parts = specs[0].terminology.split("~")
    assert len(parts) == 7 and parts[2] == "SCT^6574001^Necrosis" and parts[5] == "SCT^12738006^Brain"
    assert specs[1].terminology.split("~")[2] == "SCT^79654002^Edema"
    assert specs[0].terminology_dict()["category"] == ["SCT", "49755003", "Morphologically Altered Structure"]
    ped = segments.segment_specs({"1": "tumor"})
    assert [(s.label, s.name) for s in ped] == [(1, "tumor")]
    assert "Necrosis" not in ped[0].terminology and "Neoplasm, Primary" in ped[0].terminology
    with pytest.raises(KeyError, match="unknown segment type"):
        segments.terminology_entry("tumour")


# ----------------------------------------------------------------------------- dependencies


def test_dependency_helpers():
    assert dependencies.parse_requirement("monai>=1.4") == ("monai", "1.4")
    with pytest.raises(ValueError, match="not NAME or NAME>=VERSION"):
        dependencies.parse_requirement("monai<2")
    installed = {"monai": "1.5.1", "captum": "0.6.0", "numpy": "2.1.3", "SimpleITK": "2.4.0"}
    missing = dependencies.missing_requirements(["monai>=1.4", "captum>=0.7", "psutil>=5"], installed.get)
    assert missing == ["captum>=0.7", "psutil>=5"]
    assert dependencies.is_satisfied("2.13.0+cpu", "2.2")
    assert dependencies.constraints_text(installed.get) == "numpy==2.1.3\nSimpleITK==2.4.0\n"
    assert dependencies.pip_install_args(["captum>=0.7"], "/t/c.txt") == ["-c", "/t/c.txt", "captum>=0.7"]
    with pytest.raises(ValueError, match="refusing to install numpy"):
        dependencies.pip_install_args(["numpy>=2"], None)
    assert dependencies.torch_pip_args("cpu") == ["torch>=2.2", "--index-url", "https://download.pytorch.org/whl/cpu"]
    with pytest.raises(ValueError, match="unknown torch backend"):
        dependencies.torch_pip_args("rocm")
    text = dependencies.confirmation_text(["captum>=0.7"], torch_missing=True, via_pytorch_utils=True)
    assert "torch>=2.2 (through the PyTorch extension)" in text and "numpy, SimpleITK, vtk stay" in text


def test_engine_requirements_follow_pyproject():
    project = tomllib.loads((PACKAGE_PARENT / "pyproject.toml").read_text())["project"]
    declared = {}
    for req in [*project["dependencies"], *project["optional-dependencies"]["explain"],
                *project["optional-dependencies"]["onnx"]]:
        name, floor = dependencies.parse_requirement(req.split(";")[0])
        declared[name.lower()] = floor
    ours = dict(dependencies.parse_requirement(r) for r in dependencies.ENGINE_REQUIREMENTS)
    ours_lower = {k.lower(): v for k, v in ours.items()}
    for name, floor in declared.items():
        if name in ("numpy", "simpleitk"):
            continue  # Slicer's own: never installed
        if name == "torch":
            assert dependencies.TORCH_REQUIREMENT == f"torch>={floor}"
            continue
        assert ours_lower.get(name) == floor, f"{name}>={floor} from pyproject.toml is missing in ENGINE_REQUIREMENTS"


def test_bridge_imports_nothing_heavy():
    """The panel imports the bridge before the first-use install: no torch, numpy, SimpleITK, nibabel."""
    code = ("import sys; import GliomaMTLLib.slicer_bridge.commands, GliomaMTLLib.slicer_bridge.jobs, "
            "GliomaMTLLib.slicer_bridge.models, GliomaMTLLib.slicer_bridge.results, "
            "GliomaMTLLib.slicer_bridge.naming, GliomaMTLLib.slicer_bridge.segments, "
            "GliomaMTLLib.slicer_bridge.exchange, GliomaMTLLib.slicer_bridge.dependencies; "
            "print(sorted(m for m in ('torch', 'numpy', 'SimpleITK', 'nibabel', 'monai', 'slicer', 'qt') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE_PARENT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- contract with the CLI


def _panel_commands() -> dict[str, list[str]]:
    py = "PythonSlicer"
    return {
        "predict": commands.predict_command(py, "/j/input", "/j/output", model="gliomamtl_adult@0.2.0", device="cpu",
                                            age=61),
        "cohort": commands.cohort_command(py, "/root", "/out", model="gliomamtl_adult", device="cuda"),
        "explain": commands.explain_command(py, "/j/input", "/j/explain", model="gliomamtl_adult", task="idh", steps=8,
                                            age=47),
        "correct": commands.correct_command(py, "/j/input", "/j/c.nrrd", store="/st", genotype={"idh": "mutant"},
                                            replace=True, model="gliomamtl_adult@0.2.0", prediction="/j/p.nii.gz",
                                            case_id="case-1"),
        "finetune": commands.finetune_command(py, store="/st", from_version="gliomamtl_adult@0.2.0", iterations=2),
        "models use": commands.models_command(py, "use", "gliomamtl_adult@0.2.0"),
        "models rollback": commands.models_command(py, "rollback", "gliomamtl_adult"),
        "models list": commands.models_command(py, "list"),
    }


@pytest.mark.parametrize("kind", sorted(_panel_commands()))
def test_panel_command_lines_are_accepted_by_the_engine_cli(kind):
    """Every command the panel runs parses with the real `gliomamtl` parser, flags and values."""
    from GliomaMTLLib.cli import build_parser

    command = _panel_commands()[kind]
    parser = build_parser()
    subcommand = command[4]
    known = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps sub-parsers here
    if subcommand not in known:
        pytest.skip(f"`gliomamtl {subcommand}` is not registered in GliomaMTLLib.cli yet")
    args = parser.parse_args(command[4:])
    assert callable(args.func)
    if kind == "predict":
        assert args.progress_json and args.seg_nrrd and args.model == "gliomamtl_adult@0.2.0" and args.age == 61.0
    if kind == "explain":
        assert (args.task, args.steps, args.age) == ("idh", 8, 47.0)
    if kind == "correct":
        assert (args.labels, args.idh, args.replace, args.case_id) == ("/j/c.nrrd", "mutant", True, "case-1")
    if kind == "finetune":
        assert (args.store, args.source, args.iterations, args.progress_json) == ("/st", "gliomamtl_adult@0.2.0", 2, True)
