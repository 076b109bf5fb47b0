"""GliomaMTLLib.io.cohort: case folders and clinical / genotype CSV tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from GliomaMTLLib.io import (
    Case,
    ClinicalTableError,
    Geometry,
    MissingFileError,
    attach_clinical,
    list_case_folders,
    normalize_genotype,
    read_case,
    read_clinical_table,
)


def touch_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)), str(path))


def test_list_case_folders(tmp_path: Path) -> None:
    touch_image(tmp_path / "BraTS20_Training_002" / "BraTS20_Training_002_flair.nii")
    touch_image(tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1n.nii.gz")
    touch_image(tmp_path / "patient_b" / "T1.nrrd")
    touch_image(tmp_path / "only_labels" / "seg.nii.gz")  # no MR sequence: not a case
    touch_image(tmp_path / ".hidden" / "t1n.nii.gz")
    touch_image(tmp_path / "masks" / "brain_mask.nii.gz")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "t1n.txt").write_text("not an image")
    (tmp_path / "t1n.nii.gz").write_text("a file, not a folder")
    found = list_case_folders(tmp_path)
    assert [p.name for p in found] == ["BraTS-GLI-00001-000", "BraTS20_Training_002", "patient_b"]
    with pytest.raises(MissingFileError, match=r"cohort folder .*absent does not exist"):
        list_case_folders(tmp_path / "absent")


MESSY_CSV = (
    "\ufeffBraTS21ID ; IDH status;1p/19q;BRAF;Survival_days;Event;Cohort;Age\n"
    "BraTS2021_00000; IDH-wildtype ;intact;;450;1;TCGA-GBM;61\n"
    "BraTS2021_00002;mut;Co-deleted;NA;ALIVE (361 days later);;TCGA-LGG;38\n"
    "BraTS2021_00003;1;non-codeleted;;  ;;;\n"
    "BraTS2021_00005;WT;0;n/a;120.5;0;UPENN;70\n"
    "BraTS2021_00006;IDH1 mutant;1;;;dead;;\n"
    "BraTS2021_00008;unknown;NOS;;;;;\n"
    "\n"
)


def test_read_clinical_table_messy(tmp_path: Path) -> None:
    csv_path = tmp_path / "clinical.csv"
    csv_path.write_text(MESSY_CSV, encoding="utf-8")
    table = read_clinical_table(csv_path)
    assert list(table) == [
        "BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003", "BraTS2021_00005", "BraTS2021_00006", "BraTS2021_00008"
    ]
    r0 = table["BraTS2021_00000"]
    assert (r0["idh"], r0["codel_1p19q"], r0["braf"]) == ("wildtype", "intact", None)
    assert (r0["survival_days"], r0["event"], r0["cohort"]) == (450.0, True, "TCGA-GBM")
    assert r0["extra"] == {"Age": "61"}
    r2 = table["BraTS2021_00002"]
    assert (r2["idh"], r2["codel_1p19q"], r2["survival_days"], r2["event"]) == ("mutant", "codeleted", 361.0, False)
    r3 = table["BraTS2021_00003"]
    assert (r3["idh"], r3["codel_1p19q"], r3["survival_days"], r3["event"], r3["cohort"]) == (
        "mutant", "intact", None, None, None
    )
    r5 = table["BraTS2021_00005"]
    assert (r5["idh"], r5["codel_1p19q"], r5["survival_days"], r5["event"]) == ("wildtype", "intact", 120.5, False)
    assert table["BraTS2021_00006"]["idh"] == "mutant" and table["BraTS2021_00006"]["event"] is True
    assert table["BraTS2021_00006"]["codel_1p19q"] == "codeleted"
    r8 = table["BraTS2021_00008"]
    assert r8["idh"] is None and r8["codel_1p19q"] is None


@pytest.mark.parametrize("id_column", ["case_id", "BraTS21ID", "BraTS_2020_subject_ID", "Subject", "id", "CASE ID"])
def test_id_column_names(tmp_path: Path, id_column: str) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(f"{id_column},idh\nA,0\nB,1\n")
    assert {k: v["idh"] for k, v in read_clinical_table(csv_path).items()} == {"A": "wildtype", "B": "mutant"}


def test_braf_and_tab_separated(tmp_path: Path) -> None:
    csv_path = tmp_path / "ped.tsv"
    csv_path.write_text(
        "subject\tbraf\tcohort\n"
        "p1\tKIAA1549-BRAF fusion\tSickKids\n"
        "p2\tBRAF V600E\tSickKids\n"
        "p3\tother\t\n"
        "p4\t2\t\n"
        "p5\tFusion\t\n"
    )
    table = read_clinical_table(csv_path)
    assert [table[p]["braf"] for p in ("p1", "p2", "p3", "p4", "p5")] == ["fusion", "v600e", "other", "other", "fusion"]
    assert table["p1"]["cohort"] == "SickKids" and table["p3"]["cohort"] is None
    assert table["p1"]["idh"] is None  # column absent: unknown


@pytest.mark.parametrize(
    "task, value, expected",
    [
        ("idh", "IDH-mutant", "mutant"),
        ("idh", "IDH wild type", "wildtype"),
        ("idh", "1.0", "mutant"),
        ("idh", "N/A", None),
        ("codel_1p19q", "1p/19q codeleted", "codeleted"),
        ("codel_1p19q", "Non-Codeleted", "intact"),
        ("codel_1p19q", "co-deleted", "codeleted"),
        ("braf", "v600e", "v600e"),
    ],
)
def test_normalize_genotype(task: str, value: str, expected: str | None) -> None:
    assert normalize_genotype(task, value) == expected


@pytest.mark.parametrize(
    "header, row, pattern",
    [
        ("case_id,idh", "C7,maybe", r"line 3 \(case C7\): unknown idh value 'maybe'"),
        ("case_id,codel_1p19q", "C7,partial", r"line 3 \(case C7\): unknown codel_1p19q value 'partial'"),
        ("case_id,braf", "C7,BRAF mutant", r"line 3 \(case C7\): unknown braf value 'BRAF mutant'"),
        ("case_id,idh", "C7,3", r"line 3 \(case C7\): class index 3 out of range"),
        ("case_id,survival_days", "C7,about a year", r"line 3 \(case C7\): survival_days value 'about a year'"),
        ("case_id,survival_days", "C7,-5", r"line 3 \(case C7\): survival_days value '-5' must be a non-negative"),
        ("case_id,event", "C7,2", r"line 3 \(case C7\): event value '2' is not 0/1"),
        ("case_id,idh", ",1", r"line 3: empty case id"),
        ("case_id,idh", "C1,1", r"line 3: case 'C1' appears twice \(also on line 2\)"),
    ],
)
def test_bad_values_name_csv_line_and_value(tmp_path: Path, header: str, row: str, pattern: str) -> None:
    csv_path = tmp_path / "genotypes.csv"
    csv_path.write_text(f"{header}\nC1,{'1' if 'idh' in header else '0'}\n{row}\n")
    with pytest.raises(ClinicalTableError, match=r"genotypes\.csv, " + pattern):
        read_clinical_table(csv_path)


def test_missing_id_column_and_missing_file(tmp_path: Path) -> None:
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("patient_name,idh\nA,1\n")
    with pytest.raises(ClinicalTableError, match=r"x\.csv has no case id column.*patient_name"):
        read_clinical_table(csv_path)
    with pytest.raises(MissingFileError, match=r"clinical table .*nope\.csv does not exist"):
        read_clinical_table(tmp_path / "nope.csv")


def test_attach_clinical(tmp_path: Path) -> None:
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("case_id,idh,codel_1p19q,survival_days,event\nP1,mutant,,300,1\n")
    g = Geometry((4, 3, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    case = Case("P1", {"t2f": np.ones(g.shape, np.float32)}, g)
    table = read_clinical_table(csv_path)
    out = attach_clinical(case, table["P1"])
    assert out is case
    assert case.genotype == {"idh": "mutant"}  # unknown codel not set
    assert case.survival_days == 300.0 and case.event is True
    assert attach_clinical(case, None) is case
    with pytest.raises(ValueError, match=r"genotype idh='maybe'"):
        attach_clinical(case, {"idh": "maybe"})


def test_cohort_end_to_end(tmp_path: Path) -> None:
    """Folders + CSV -> cases with genotype, the way the training pipeline reads real data."""
    root = tmp_path / "cohort"
    for cid in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        touch_image(root / cid / f"{cid}-t2f.nii.gz")
    (tmp_path / "g.csv").write_text("case_id,idh\nBraTS-GLI-00001-000,wildtype\nBraTS-GLI-00002-000,\n")
    table = read_clinical_table(tmp_path / "g.csv")
    cases = [attach_clinical(read_case(f), table.get(f.name)) for f in list_case_folders(root)]
    assert [c.genotype for c in cases] == [{"idh": "wildtype"}, {}]
