"""Cohorts: case folders under a root, and the clinical / genotype table that goes with them.

The clinical table is a CSV (comma, semicolon or tab separated; UTF-8 with or without BOM) with
one row per case. Column names are matched case-insensitively, ignoring spaces, ``-`` and ``_``:

=================  ==========================================================================
field              accepted column names
=================  ==========================================================================
case id            case_id, BraTS21ID, BraTS20ID, BraTS_2020_subject_ID, subject, subject_id, ID
idh                idh, idh_status, idh1, idh1/2, idh_mutation
codel_1p19q        codel_1p19q, 1p19q, 1p/19q, 1p19q_codel, 1p19q_status, codeletion
braf               braf, braf_status
survival_days      survival_days, survival, os_days, overall_survival_days
event              event, death, dead, os_event, vital_status
cohort             cohort, dataset
=================  ==========================================================================

Values are normalized to the class names of :data:`GliomaMTLLib.labels.GENOTYPE_TASKS`
(``idh``: wildtype/mutant from ``wildtype``, ``wt``, ``IDH-wildtype``, ``0``, ``mutant``, ``mut``,
``IDH1-mutant``, ``1`` ...; ``codel_1p19q``: intact/codeleted from ``intact``, ``non-codeleted``,
``0``, ``codeleted``, ``co-deleted``, ``1`` ...; ``braf``: fusion/v600e/other, also the class
index ``0/1/2``). Empty cells and ``NA``, ``N/A``, ``NaN``, ``unknown``, ``NOS``, ``-``, ``?`` are
unknown (``None``). BraTS 2020's ``ALIVE (361 days later)`` survival entry reads as 361 days,
censored (event False). Any other value is a :class:`ClinicalTableError` naming the CSV, the line
and the value.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any, Final

from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.layout import LABEL_KEY, identify_file
from GliomaMTLLib.io.validation import ClinicalTableError, MissingFileError
from GliomaMTLLib.labels import GENOTYPE_TASKS


def list_case_folders(root: str | os.PathLike) -> list[Path]:
    """Sub-folders of ``root`` (direct children) holding at least one recognizable sequence file, sorted.

    Hidden folders are skipped; a folder holding only a label map does not count.

    Raises:
        MissingFileError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"cohort folder {root} does not exist or is not a folder", root)
    found = []
    for sub in sorted(root.iterdir()):
        if not sub.is_dir() or sub.name.startswith("."):
            continue
        for f in sub.iterdir():
            ident = identify_file(f) if f.is_file() else None
            if ident is not None and ident[0] != LABEL_KEY:
                found.append(sub)
                break
    return found


def _norm_header(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


_ID_COLUMNS: Final = ("caseid", "brats21id", "brats20id", "brats2020subjectid", "brats2021subjectid",
                      "subject", "subjectid", "id")
_FIELD_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "idh": ("idh", "idhstatus", "idh1", "idh1/2", "idh12", "idhmutation"),
    "codel_1p19q": ("codel1p19q", "1p19q", "1p/19q", "1p19qcodel", "1p19qstatus", "1p/19qstatus", "codeletion"),
    "braf": ("braf", "brafstatus"),
    "survival_days": ("survivaldays", "survival", "osdays", "overallsurvivaldays", "survival(days)"),
    "event": ("event", "death", "dead", "osevent", "vitalstatus"),
    "cohort": ("cohort", "dataset"),
}
_UNKNOWN: Final = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "nos", "-", "?", "nd", "notavailable"})

_GENOTYPE_VALUES: Final[dict[str, dict[str, str]]] = {
    "idh": {
        **dict.fromkeys(("wildtype", "wt", "wild", "negative", "neg", "nonmutant", "notmutated"), "wildtype"),
        **dict.fromkeys(("mutant", "mut", "mutated", "mutation", "positive", "pos", "mt"), "mutant"),
    },
    "codel_1p19q": {
        **dict.fromkeys(("intact", "noncodeleted", "notcodeleted", "noncodel", "nocodeletion", "negative",
                         "neg", "no", "retained", "nondeleted"), "intact"),
        **dict.fromkeys(("codeleted", "codeletion", "codel", "deleted", "positive", "pos", "yes"), "codeleted"),
    },
    "braf": {
        **dict.fromkeys(("fusion", "kiaa1549fusion", "kiaa1549", "fused"), "fusion"),
        **dict.fromkeys(("v600e", "v600emutation", "v600emutant", "v600emutated"), "v600e"),
        **dict.fromkeys(("other", "wildtype", "wt", "neither", "none", "negative"), "other"),
    },
}
_GENOTYPE_STRIP: Final[dict[str, tuple[str, ...]]] = {
    "idh": ("idh1/2", "idh1", "idh2", "idh"),
    "codel_1p19q": ("1p/19q", "1p19q"),
    "braf": ("kiaa1549braf", "braf"),
}
_EVENT_VALUES: Final[dict[str, bool]] = {
    **dict.fromkeys(("1", "1.0", "true", "yes", "y", "dead", "deceased", "died", "death", "event"), True),
    **dict.fromkeys(("0", "0.0", "false", "no", "n", "alive", "living", "censored"), False),
}
_ALIVE = re.compile(r"^\s*alive\s*\(?\s*(\d+(?:\.\d+)?)\s*days?\b.*$", re.IGNORECASE)


def normalize_genotype(task: str, value: str) -> str | None:
    """Normalize one genotype cell to a class name of ``GENOTYPE_TASKS[task]``; None when unknown.

    Raises:
        ValueError: the value cannot be understood (the message lists the accepted forms).
    """
    raw = str(value).strip()
    if raw.lower() in _UNKNOWN:
        return None
    classes = GENOTYPE_TASKS[task]
    number = raw[:-2] if raw.endswith(".0") else raw
    if number.isdigit():
        index = int(number)
        if index < len(classes):
            return classes[index]
        raise ValueError(f"class index {index} out of range for {task} classes {list(classes)}")
    key = raw.lower()
    for word in _GENOTYPE_STRIP[task]:
        key = key.replace(word, "")
    key = re.sub(r"[\s_\-/()]+", "", key)
    if key in _GENOTYPE_VALUES[task]:
        return _GENOTYPE_VALUES[task][key]
    synonyms = sorted(set(_GENOTYPE_VALUES[task]) - set(classes))[:6]
    raise ValueError(
        f"unknown {task} value {raw!r}; expected one of {list(classes)}, a synonym such as {synonyms}, "
        f"a class index 0..{len(classes) - 1}, or empty/NA for unknown"
    )


def _parse_survival(raw: str) -> tuple[float | None, bool | None]:
    text = raw.strip()
    if text.lower() in _UNKNOWN:
        return None, None
    alive = _ALIVE.match(text)
    if alive:
        return float(alive.group(1)), False
    try:
        days = float(text)
    except ValueError:
        raise ValueError(f"survival_days value {raw!r} is not a number of days") from None
    if days < 0 or days != days:
        raise ValueError(f"survival_days value {raw!r} must be a non-negative number of days")
    return days, None


def _parse_event(raw: str) -> bool | None:
    text = raw.strip().lower()
    if text in _UNKNOWN:
        return None
    if text in _EVENT_VALUES:
        return _EVENT_VALUES[text]
    raise ValueError(f"event value {raw!r} is not 0/1 (1 = death observed, 0 = censored)")


def read_clinical_table(csv_path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a clinical / genotype CSV into ``case id -> record``.

    Each record has the keys ``idh``, ``codel_1p19q``, ``braf`` (class name or None),
    ``survival_days`` (float or None), ``event`` (bool or None), ``cohort`` (str or None) and
    ``extra`` (the other columns, as raw strings). A column absent from the table gives None
    everywhere. Column names and accepted values: see the module docstring.

    Raises:
        MissingFileError: the CSV does not exist.
        ClinicalTableError: no case id column, an empty or duplicated case id, or a value that
            cannot be understood; names the CSV, the line and the value.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise MissingFileError(f"clinical table {csv_path} does not exist", csv_path)
    text = csv_path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise ClinicalTableError(f"clinical table {csv_path} is empty", csv_path)
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    header = next(reader)
    normed = [_norm_header(h) for h in header]

    id_col = next((normed.index(c) for c in _ID_COLUMNS if c in normed), None)
    if id_col is None:
        raise ClinicalTableError(
            f"clinical table {csv_path} has no case id column; expected one of case_id, BraTS21ID, "
            f"BraTS20ID, BraTS_2020_subject_ID, subject, ID (found columns {header})",
            csv_path,
        )
    field_cols: dict[str, int] = {}
    for field, names in _FIELD_COLUMNS.items():
        idx = next((normed.index(n) for n in names if n in normed), None)
        if idx is not None:
            field_cols[field] = idx
    used = {id_col, *field_cols.values()}

    table: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        row = row + [""] * (len(header) - len(row))
        case_id = row[id_col].strip()
        where = f"clinical table {csv_path}, line {line}"
        if not case_id:
            raise ClinicalTableError(f"{where}: empty case id in column {header[id_col]!r}", csv_path)
        if case_id in table:
            raise ClinicalTableError(
                f"{where}: case {case_id!r} appears twice (also on line {lines[case_id]})", csv_path
            )
        record: dict[str, Any] = {task: None for task in GENOTYPE_TASKS}
        record.update(survival_days=None, event=None, cohort=None)
        try:
            for task in GENOTYPE_TASKS:
                if task in field_cols:
                    record[task] = normalize_genotype(task, row[field_cols[task]])
            if "survival_days" in field_cols:
                record["survival_days"], alive_event = _parse_survival(row[field_cols["survival_days"]])
                record["event"] = alive_event
            if "event" in field_cols:
                event = _parse_event(row[field_cols["event"]])
                if event is not None:
                    record["event"] = event
            if "cohort" in field_cols:
                cohort = row[field_cols["cohort"]].strip()
                record["cohort"] = None if cohort.lower() in _UNKNOWN else cohort
        except ValueError as exc:
            raise ClinicalTableError(f"{where} (case {case_id}): {exc}", csv_path) from None
        record["extra"] = {header[i]: row[i] for i in range(len(header)) if i not in used}
        table[case_id] = record
        lines[case_id] = line
    return table


def attach_clinical(case: Case, record: dict[str, Any] | None) -> Case:
    """Fill ``case.genotype``, ``survival_days`` and ``event`` from a ``read_clinical_table`` record.

    Unknown (None) fields leave the case unchanged. Modifies ``case`` in place and returns it.

    Raises:
        ValueError: a genotype value that is not a class name of ``GENOTYPE_TASKS``.
    """
    if not record:
        return case
    for task, classes in GENOTYPE_TASKS.items():
        value = record.get(task)
        if value is None:
            continue
        if value not in classes:
            raise ValueError(f"case {case.case_id}: genotype {task}={value!r} is not one of {classes}")
        case.genotype[task] = value
    if record.get("survival_days") is not None:
        case.survival_days = float(record["survival_days"])
    if record.get("event") is not None:
        case.event = bool(record["event"])
    return case
