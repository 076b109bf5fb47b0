"""Output folders: proven writable before any computation, cleaned of killed runs' leftovers, and never
left holding a mix of two runs' (or two cases') files.

The files of one case in a folder (:func:`case_files`) are ``<case_id>_seg.nii.gz``,
``<case_id>_seg.seg.nrrd``, ``<case_id>_prob_<region>.nii.gz``, ``report.png`` and ``report.json``; ``report.json`` is written last
and marks the case as finished. The rules (:func:`plan_case_outputs`):

- a folder holding the finished outputs of the *same* case: refused unless ``overwrite``; then that
  case's old files are replaced, and old files the new run does not write (e.g. probability maps of
  an earlier ``--probabilities`` run) are removed before the new ``report.json`` appears;
- a folder holding the finished outputs of *another* case (its ``report.json``): refused unless
  ``overwrite``, because ``report.json``/``report.png`` would mix the two cases; with ``overwrite``
  the other case's files are removed;
- unfinished outputs (no ``report.json``: an interrupted run) are replaced without asking.

Other files in the folder are never touched. Temporary files of a killed run
(``.<name>.<random>.partial.<ext>``, see :func:`GliomaMTLLib.io.atomic.atomic_path`) are removed by
:func:`clean_partial_files`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

#: Free space required in an output folder before a prediction starts (a full-size case with
#: probability maps writes about 40 MB).
MIN_FREE_BYTES = 64 * 1024 * 1024
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
_PARTIAL = re.compile(r"^\..+\.partial(\..+)?$")


class OutputFolderError(ValueError):
    """An output folder cannot be used; the message names the folder and the reason.

    Attributes:
        path: the folder (or the file in the way).
    """

    def __init__(self, message: str, path: str | os.PathLike) -> None:
        super().__init__(message)
        self.path = Path(path)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def prepare_output_folder(folder: str | os.PathLike, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create ``folder`` if needed and prove that a file can be written there, with enough free space.

    Returns:
        The folder.

    Raises:
        OutputFolderError: the path (or a parent) is a file, the folder cannot be created or written
            (read-only, no permission), or the disk has less than ``min_free_bytes`` free.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"output folder {folder} is a file, not a folder; choose another --out", folder)
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputFolderError(
                    f"cannot create output folder {folder}: {parent} is a file, not a folder; choose another --out",
                    parent,
                )
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create output folder {folder}: {_reason(exc)}", folder) from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".gliomamtl-write-test.", suffix=".partial", dir=folder)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputFolderError(
            f"cannot write into output folder {folder}: {_reason(exc)} (read-only or no permission?); choose a "
            "folder you can write to",
            folder,
        ) from exc
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise OutputFolderError(
            f"not enough free space for the outputs in {folder}: {free / 2**20:.0f} MB free, at least "
            f"{min_free_bytes / 2**20:.0f} MB needed; free some space or choose another --out",
            folder,
        )
    return folder


def clean_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder`` (not in sub-folders); returns them."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if path.is_file() and _PARTIAL.match(path.name):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:  # another process finished it meanwhile
                pass
    return removed


def case_files(folder: str | os.PathLike, case_id: str) -> list[Path]:
    """The files of case ``case_id`` present in ``folder`` (label map, probability maps, reports)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = {f"{case_id}_seg.nii.gz", f"{case_id}_seg.seg.nrrd", REPORT_PNG, REPORT_JSON}
    prob = re.compile(re.escape(case_id) + r"_prob_[A-Za-z0-9]+\.nii\.gz$")
    return sorted(p for p in folder.iterdir() if p.is_file() and (p.name in names or prob.match(p.name)))


def finished_case(folder: str | os.PathLike) -> str | None:
    """The case id of the finished outputs in ``folder`` (its ``report.json``), or None."""
    path = Path(folder) / REPORT_JSON
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("case_id") or "")
    except (OSError, ValueError):
        return ""  # unreadable report: treated as another run's finished outputs


@dataclass
class OutputPlan:
    """What writing one case into a folder will replace.

    Attributes:
        folder: the output folder.
        case_id: the case about to be written.
        stale: files to remove once the new files are written and before the new ``report.json``.
        notes: one sentence per thing the user should know (replaced outputs, cleaned leftovers).
    """

    folder: Path
    case_id: str
    stale: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_case_outputs(folder: str | os.PathLike, case_id: str, overwrite: bool = False) -> OutputPlan:
    """Decide what writing ``case_id`` into ``folder`` replaces (see the module docstring).

    Raises:
        OutputFolderError: finished outputs of this or another case are there and ``overwrite`` is False.
    """
    folder = Path(folder)
    plan = OutputPlan(folder, case_id)
    done = finished_case(folder)
    if done is not None and done != case_id:
        if not overwrite:
            raise OutputFolderError(
                f"output folder {folder} already holds the finished outputs of case {done or '(unreadable report)'} "
                f"({REPORT_JSON}); writing case {case_id} there would mix two cases' {REPORT_JSON} and {REPORT_PNG}: "
                "choose an empty folder for each case (predict --cohort does this for many cases), or pass "
                f"--overwrite to replace case {done}'s outputs",
                folder,
            )
        plan.stale += case_files(folder, done) if done else [folder / REPORT_JSON]
        plan.notes.append(f"replaced the outputs of case {done or '(unreadable report)'} in {folder} (--overwrite)")
    elif done == case_id:
        if not overwrite:
            raise OutputFolderError(
                f"case {case_id} is already done in {folder} ({REPORT_JSON} exists); pass --overwrite to replace its "
                "outputs, or choose another --out",
                folder,
            )
        plan.notes.append(f"replaced the earlier outputs of case {case_id} in {folder} (--overwrite)")
    own = case_files(folder, case_id)
    if own and done is None:
        plan.notes.append(f"replaced the unfinished outputs of an interrupted run of case {case_id} in {folder}")
    plan.stale += [p for p in own if p not in plan.stale]
    return plan


def remove_stale(plan: OutputPlan, written: list[Path] | set[Path]) -> list[Path]:
    """Remove the plan's stale files that the new run did not write; returns them."""
    keep = {Path(p).resolve() for p in written}
    removed = []
    for path in plan.stale:
        if path.resolve() not in keep and path.exists():
            path.unlink()
            removed.append(path)
    return removed
