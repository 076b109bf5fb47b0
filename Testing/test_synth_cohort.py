"""Synthetic cohort writer (BraTS 2023 layout + labels.csv), preview PNG and `gliomamtl synth`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("nilearn")
sitk = pytest.importorskip("SimpleITK")

from GliomaMTLLib.cli import main  # noqa: E402
from GliomaMTLLib.labels import SEQUENCES  # noqa: E402
from GliomaMTLLib.synth import (LABELS_CSV_COLUMNS, SMALL_GRID, case_id_for, case_seed,  # noqa: E402
                                generate_cohort, synthesize)
from GliomaMTLLib.synth.preview import read_brats_case  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(folder):
    with open(folder / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_case_ids_and_seeds():
    assert case_id_for("adult", 3) == "BraTS-GLI-00003-000"
    assert case_id_for("pediatric", 12) == "BraTS-PED-00012-000"
    assert case_seed(0, 1) != case_seed(0, 2) != case_seed(1, 1)
    assert case_seed(5, 3) == case_seed(5, 3)
    with pytest.raises(ValueError):
        case_id_for("feline", 0)


def test_generate_cohort_layout_and_labels(tmp_path):
    messages = []
    out = generate_cohort(tmp_path / "adult", 3, cohort="adult", seed=4, small=True,
                          progress=lambda f, m: messages.append((f, m)))
    names, rows = _rows(out)
    assert tuple(names) == LABELS_CSV_COLUMNS
    assert [r["case_id"] for r in rows] == [f"BraTS-GLI-{i:05d}-000" for i in range(3)]
    assert len(messages) == 3 and messages[-1][0] == pytest.approx(1.0)
    for i, row in enumerate(rows):
        cid = row["case_id"]
        folder = out / cid
        files = sorted(p.name for p in folder.iterdir())
        assert files == sorted(f"{cid}-{k}.nii.gz" for k in ("t1n", "t1c", "t2w", "t2f", "seg"))
        assert row["cohort"] == "adult"
        assert row["idh"] in ("wildtype", "mutant") and row["codel_1p19q"] in ("intact", "codeleted")
        assert row["braf"] == ""
        assert int(row["survival_days"]) >= 1 and row["event"] in ("0", "1")
        # Files read back on the small grid, with the values the generator made.
        ref = synthesize(case_seed(4, i), "adult", small=True, case_id=cid)
        for seq in SEQUENCES:
            img = sitk.ReadImage(str(folder / f"{cid}-{seq}.nii.gz"))
            assert img.GetSize() == SMALL_GRID.size
            np.testing.assert_allclose(img.GetOrigin(), SMALL_GRID.origin)
            np.testing.assert_allclose(img.GetSpacing(), SMALL_GRID.spacing)
            np.testing.assert_allclose(img.GetDirection(), SMALL_GRID.direction, atol=1e-6)
            expected = sitk.sitkInt16 if ref.store_int16 else sitk.sitkFloat32
            assert img.GetPixelID() == expected
            np.testing.assert_array_equal(sitk.GetArrayFromImage(img).astype(np.float32), ref.case.images[seq])
        seg = sitk.ReadImage(str(folder / f"{cid}-seg.nii.gz"))
        assert seg.GetPixelID() == sitk.sitkUInt8
        seg_arr = sitk.GetArrayFromImage(seg)
        np.testing.assert_array_equal(seg_arr, ref.case.label)
        assert set(np.unique(seg_arr)) <= {0, 1, 2, 3}
    # No temporary files left behind.
    assert not list(out.rglob("*.partial*"))


def test_pediatric_cohort_parallel_matches_serial(tmp_path):
    out = generate_cohort(tmp_path / "ped", 2, cohort="pediatric", seed=9, small=True, workers=2)
    _, rows = _rows(out)
    for i, row in enumerate(rows):
        assert row["case_id"] == f"BraTS-PED-{i:05d}-000"
        assert row["cohort"] == "pediatric"
        assert row["idh"] == "" and row["codel_1p19q"] == ""
        assert row["braf"] in ("fusion", "v600e", "other")
        ref = synthesize(case_seed(9, i), "pediatric", small=True)
        case = read_brats_case(out / row["case_id"])
        np.testing.assert_array_equal(case.images["t2f"], ref.case.images["t2f"])
        np.testing.assert_array_equal(case.label, ref.case.label)


def test_cli_synth_small(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--n", "2", "--small", "--seed", "3"])
    assert code == 0
    text = capsys.readouterr().out
    assert "[1/2]" in text and "[2/2]" in text
    png = out / "preview.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    names, rows = _rows(out)
    assert tuple(names) == LABELS_CSV_COLUMNS and len(rows) == 2


def test_cli_synth_json_progress_and_custom_preview(tmp_path, capsys):
    out = tmp_path / "cli_json"
    png = tmp_path / "elsewhere" / "p.png"
    code = main(["synth", "--out", str(out), "--n", "1", "--small", "--cohort", "pediatric",
                 "--preview", str(png), "--json"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["progress", "done"]
    assert events[-1]["preview"] == str(png)
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert (out / "BraTS-PED-00000-000" / "BraTS-PED-00000-000-t2f.nii.gz").is_file()


def test_cli_synth_rejects_bad_arguments(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--n", "0", "--small"]) == 1
    assert "--n must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path / "x"), "--cohort", "feline"])
