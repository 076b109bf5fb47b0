"""Reports that say what they mean (issue 8, section 4): label keys, genotype status, report.png, cohort warnings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from GliomaMTLLib.bundle import load_bundle
from GliomaMTLLib.cli import main
from GliomaMTLLib.inference import Predictor, make_random_bundle
from GliomaMTLLib.inference.fixtures import phantom_case
from GliomaMTLLib.inference.genotype_call import abstain_band, call_task, describe_call, genotype_calls
from GliomaMTLLib.inference.report import DISCLAIMER, OVERLAY_ALPHA, build_report_figure
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.label_schemes import label_key
from GliomaMTLLib.io.writers import write_case
from GliomaMTLLib.labels import LABEL_NAMES
from GliomaMTLLib.paths import SHIPPED_MODELS_DIR
from GliomaMTLLib.progress import parse_event

RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
GRID = Geometry((40, 44, 36), (1.0, 1.2, 1.5), (12.0, -30.0, 4.0), RAS)
REASON = "held-out AUC 0.48 [0.22, 0.71] includes 0.5 (not learned)"
TINY = dict(main_features=(4, 8), crop_size=(48, 48, 48), localizer_features=(4, 8), input_size=(16, 16, 16),
            localizer_options={"margin_mm": 0.0})


def with_status(folder: Path, **extra) -> Path:
    """Add model-card fields to a bundle's model.json (the sha256 covers the weights only)."""
    meta_path = folder / "model.json"
    meta = json.loads(meta_path.read_text())
    meta.update(extra)
    meta_path.write_text(json.dumps(meta, indent=2))
    return folder


@pytest.fixture(scope="module")
def adult_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "adult"
    make_random_bundle(folder, **TINY)
    return with_status(folder, genotype_status={"idh": {"available": False, "reason": REASON}})


@pytest.fixture(scope="module")
def pediatric_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "ped"
    make_random_bundle(folder, sequences=("t2f",), labels={1: "tumor"}, tasks=("braf",), **TINY)
    return folder


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    for i, name in enumerate(("A", "B")):
        write_case(phantom_case(GRID, case_id=name, seed=i), root / name, layout="brats2023")
    return root


def predict(args, model):
    return main(["predict", *map(str, args), "--model", str(model), "--device", "cpu"])


# --------------------------------------------------------------------------------------- label keys


def test_label_key_is_the_key_of_the_file_as_written(adult_dir, cohort, tmp_path):
    out = tmp_path / "o"
    assert predict([cohort / "A", "--out", out, "--labels", "2020"], adult_dir) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["labels"] == {"1": "necrotic / non-enhancing tumor core (NCR)",
                                "2": "edema / surrounding FLAIR hyperintensity (ED)", "4": "enhancing tumor (ET)"}
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "A_seg.nii.gz")))
    assert {str(v) for v in np.unique(seg) if v} <= set(report["labels"])
    assert label_key(LABEL_NAMES, "2023")["3"] == "enhancing tumor (ET)"


def test_whole_tumor_model_is_not_read_as_necrotic_core(pediatric_dir, cohort, tmp_path):
    out = tmp_path / "o"
    assert predict([cohort / "A", "--out", out], pediatric_dir) == 0
    key = json.loads((out / "report.json").read_text())["labels"]
    assert list(key) == ["1"] and key["1"].startswith("whole tumor")
    assert "does not separate necrotic core, edema and enhancing tumor" in key["1"]


# --------------------------------------------------------------------------------- genotype status


def test_genotype_not_learned_is_not_available_everywhere(adult_dir, cohort, tmp_path, capsys):
    out = tmp_path / "o"
    assert predict([cohort / "A", "--out", out], adult_dir) == 0
    printed = capsys.readouterr().out
    assert f"  idh: not available ({REASON})" in printed
    assert "codel_1p19q: " in printed and "codel_1p19q: not available" not in printed
    entry = json.loads((out / "report.json").read_text())["genotype"]["idh"]
    assert entry["available"] is False and entry["probabilities"] is None and entry["call"] is None
    assert entry["shown"] == f"not available ({REASON})"
    other = json.loads((out / "report.json").read_text())["genotype"]["codel_1p19q"]
    assert other["available"] is True and other["call"] in ("intact", "codeleted")

    assert predict([cohort / "A", "--out", tmp_path / "p", "--progress-json"], adult_dir) == 0
    done = parse_event(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["event"] == "done" and done["genotype"]["idh"]["available"] is False
    assert done["genotype"]["idh"]["probabilities"] is None


def test_summary_csv_and_cohort_warnings_as_it_goes(adult_dir, cohort, tmp_path, capsys):
    out = tmp_path / "o"
    assert predict(["--cohort", cohort, "--out", out], adult_dir) == 0
    err = capsys.readouterr().err
    assert "case A: warning: very few brain voxels" in err and "case B: warning: " in err
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["idh"] for r in rows] == [f"not available ({REASON})"] * 2
    assert [r["p_idh"] for r in rows] == ["", ""]
    assert all(r["codel_1p19q"] in ("intact", "codeleted") and float(r["p_codel_1p19q"]) >= 0.5 for r in rows)
    assert all(int(r["n_warnings"]) >= 1 and "very few brain voxels" in r["warnings"] for r in rows)


def test_shipped_bundles_declare_their_genotype_heads_not_learned():
    for name in ("gliomamtl_adult", "gliomamtl_pediatric"):
        meta = json.loads((SHIPPED_MODELS_DIR / name / "model.json").read_text())
        calls = genotype_calls({t: {c: 0.5 for c in cls} for t, cls in meta["tasks"].items()}, meta, meta["tasks"])
        assert set(calls) == set(meta["tasks"])
        for task, entry in calls.items():
            if entry["available"]:  # adult 0.2.1: learned by the radiological-feature path (issue 12)
                assert entry["reason"].startswith("held-out AUC") and "includes 0.5" not in entry["reason"], (name, task)
                continue
            assert entry["available"] is False and "includes 0.5" in entry["reason"], (name, task)
            assert describe_call(entry).startswith("not available (held-out AUC")


def test_abstain_band_and_status_checks():
    meta = {"abstain_band": [0.35, 0.65]}
    assert abstain_band(meta) == (0.35, 0.65)
    assert call_task({"wildtype": 0.6, "mutant": 0.4}, (0.35, 0.65)) == "uncertain"
    assert call_task({"wildtype": 0.2, "mutant": 0.8}, (0.35, 0.65)) == "mutant"
    assert describe_call(genotype_calls({"idh": {"wildtype": 0.6, "mutant": 0.4}}, meta)["idh"]).startswith("uncertain")
    with pytest.raises(ValueError, match="abstain_band"):
        abstain_band({"abstain_band": [0.7, 0.3]})
    with pytest.raises(ValueError, match="gives no 'reason'"):
        genotype_calls({}, {"genotype_status": {"idh": {"available": False}}})


# ----------------------------------------------------------------------------------------- report.png


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_report_sheet_says_what_it_shows(adult_dir):
    case = phantom_case(GRID, case_id="C")
    prediction = Predictor(load_bundle(adult_dir), device="cpu").predict(case)
    long = "a warning long enough to need wrapping because it keeps going with several clauses"
    prediction.warnings = [f"{long} number {i} ends with word{i}" for i in range(9)]
    fig = build_report_figure(prediction, case.images)
    fig.canvas.draw()
    texts = _texts(fig)
    flat = " ".join(" ".join(t.split()) for t in texts)
    assert "random_test_model" in flat and DISCLAIMER in flat and "research use only, trained on synthetic data" in flat
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 6  # T1c and FLAIR rows, three views each
    titles = [ax.get_title() for ax in image_axes]
    assert sum(t.startswith("T1 post-contrast:") for t in titles) == 3 and sum(t.startswith("FLAIR:") for t in titles) == 3
    assert all("slice" in t and " mm" in t for t in titles)
    for ax in image_axes:
        marks = {t.get_text() for t in ax.texts}
        assert {"A", "P"} <= marks or {"S", "I"} <= marks
        assert len(marks & {"A", "P", "S", "I"}) >= 2 and len(marks) == 4
        overlay = ax.images[1].get_array()
        assert overlay[..., 3].max() <= OVERLAY_ALPHA < 1.0  # necrotic core included: translucent
    for i in range(9):  # every warning, every word, inside the sheet
        assert f"{long} number {i} ends with word{i}" in flat
    renderer = fig.canvas.get_renderer()
    sheet = fig.bbox
    from matplotlib.text import Text

    warning_text = next(t for t in fig.findobj(Text) if "word8" in t.get_text())
    box = warning_text.get_window_extent(renderer)
    assert box.x0 >= sheet.x0 - 1 and box.x1 <= sheet.x1 + 1 and box.y0 >= sheet.y0 - 1
    assert f"idh: not available ({REASON})" in " ".join(" ".join(t.split()) for t in texts)
