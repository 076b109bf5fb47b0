"""Correction store: an append-only folder of corrected cases, each self-contained.

Layout (default :func:`GliomaMTLLib.paths.store_dir`, i.e. ``$GLIOMAMTL_DATA/corrections``)::

    <store>/entries/<entry id>/t1n.nii.gz ...  the case's sequences, copied byte for byte
                               seg.nii.gz      the corrected label map (internal labels, BraTS 2023 values)
                               entry.json      case id, time, genotype, corrected model, changed voxels,
                                               sha256 of every file above; written last
    <store>/.staging/   entries being written (renamed into entries/ when complete)
    <store>/.trash/     an entry being replaced or removed (deleted right after)
    <store>/history.jsonl  one line per add / replace / remove (append-only audit trail)

An entry folder is a case folder in the short layout, so ``read_case`` reads it (label included).
Writes are atomic: the entry is assembled in ``.staging`` and renamed into ``entries/`` in one
step, so a killed write leaves no entry, never half of one. A replace moves the old entry to
``.trash`` first; if the process dies between the two renames, the next opening of the store puts
the old entry back.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from GliomaMTLLib.io.atomic import apply_default_permissions
from GliomaMTLLib.paths import store_dir

ENTRY_FORMAT = "gliomamtl-correction/1"
ENTRY_JSON = "entry.json"
LABEL_FILE = "seg.nii.gz"
HISTORY = "history.jsonl"
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class StoreError(ValueError):
    """A store operation was refused (entry exists, unknown entry, corrupt entry): the message says why."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def entry_id_for(case_id: str) -> str:
    """The folder name of a case's entry: the case id with characters outside ``[A-Za-z0-9._-]`` replaced."""
    cleaned = _ID_CHARS.sub("_", str(case_id)).strip("._")
    if not cleaned:
        raise StoreError(f"case id {case_id!r} gives an empty entry name; pass another case id")
    return cleaned


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class StoreEntry:
    """One stored correction: its folder and parsed ``entry.json``."""

    folder: Path
    meta: dict[str, Any]

    @property
    def entry_id(self) -> str:
        return self.folder.name

    @property
    def case_id(self) -> str:
        return str(self.meta["case_id"])

    @property
    def genotype(self) -> dict[str, str]:
        return dict(self.meta.get("genotype") or {})

    @property
    def fingerprint(self) -> str:
        """Short hash of the entry's file hashes: changes whenever any stored file changes."""
        text = json.dumps(self.meta.get("files", {}), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def file(self, name: str) -> Path:
        return self.folder / name

    def sequence_files(self) -> dict[str, Path]:
        return {key: self.folder / name for key, name in self.meta["sequences"].items()}

    def read_case(self, sequences: Any = None):
        """The stored case (`GliomaMTLLib.io.Case`) with the corrected label and the genotype attached."""
        from GliomaMTLLib.io import read_case

        files = {**self.sequence_files(), "label": self.folder / LABEL_FILE}
        if sequences is not None:
            files = {k: v for k, v in files.items() if k in set(sequences) or k == "label"}
        case = read_case(files, case_id=self.case_id, label_scheme="2023")
        case.genotype = self.genotype
        return case

    def verify(self) -> list[str]:
        """Problems found when re-hashing the entry's files (empty: intact)."""
        problems = []
        for name, expected in self.meta.get("files", {}).items():
            path = self.folder / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif file_sha256(path) != expected:
                problems.append(f"{path}: sha256 differs from {ENTRY_JSON}")
        return problems

    def summary(self) -> dict[str, Any]:
        """The fields ``gliomamtl store list`` shows."""
        model = self.meta.get("model") or {}
        return {
            "entry": self.entry_id,
            "case_id": self.case_id,
            "created": self.meta.get("created"),
            "model": f"{model.get('name', '?')} {model.get('version', '?')}",
            "changed_voxels": self.meta.get("changed_voxels"),
            "tumor_voxels": self.meta.get("tumor_voxels"),
            "genotype": ", ".join(f"{k}={v}" for k, v in self.genotype.items()) or "",
        }


class CorrectionStore:
    """The correction store at ``root`` (default :func:`GliomaMTLLib.paths.store_dir`).

    Opening a store finishes what a killed process left: staging folders of dead writers are
    deleted, and an entry caught in the middle of a replace is put back.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = (Path(root) if root is not None else store_dir()).absolute()
        self.entries_dir = self.root / "entries"
        self.staging_dir = self.root / ".staging"
        self.trash_dir = self.root / ".trash"
        self._recover()

    # ------------------------------------------------------------------ reading

    def __contains__(self, entry_id: str) -> bool:
        return (self.entries_dir / entry_id / ENTRY_JSON).is_file()

    def ids(self) -> list[str]:
        """Entry ids, sorted."""
        if not self.entries_dir.is_dir():
            return []
        return sorted(p.name for p in self.entries_dir.iterdir() if (p / ENTRY_JSON).is_file())

    def get(self, entry_id: str) -> StoreEntry:
        """The entry ``entry_id`` (an entry id or a case id).

        Raises:
            StoreError: no such entry (the message lists what the store holds).
        """
        for candidate in (entry_id, entry_id_for(entry_id)):
            path = self.entries_dir / candidate / ENTRY_JSON
            if path.is_file():
                try:
                    meta = json.loads(path.read_text())
                except json.JSONDecodeError as exc:
                    raise StoreError(f"{path}: not valid JSON ({exc})") from exc
                return StoreEntry(path.parent, meta)
        held = self.ids()
        raise StoreError(f"no entry {entry_id!r} in the store {self.root} (entries: {held[:20] or 'none'})")

    def entries(self) -> list[StoreEntry]:
        return [self.get(i) for i in self.ids()]

    def history(self) -> list[dict[str, Any]]:
        """The audit trail (a torn last line of a killed append is skipped)."""
        path = self.root / HISTORY
        out = []
        if path.is_file():
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out

    # ------------------------------------------------------------------ writing

    def check_can_add(self, case_id: str, replace: bool = False) -> None:
        """Raise `StoreError` if ``case_id`` is stored already and ``replace`` is False."""
        final = self.entries_dir / entry_id_for(case_id)
        if (final / ENTRY_JSON).is_file() and not replace:
            raise StoreError(
                f"case {case_id!r} is already in the store ({final}); pass --replace to replace its correction"
            )

    def add(
        self,
        case_id: str,
        sequence_files: Mapping[str, str | os.PathLike],
        labels: Any,
        geometry: Any,
        *,
        genotype: Mapping[str, str] | None = None,
        model: Mapping[str, Any] | None = None,
        changed_voxels: int | None = None,
        source_files: Mapping[str, str] | None = None,
        replace: bool = False,
    ) -> StoreEntry:
        """Store one corrected case atomically.

        Args:
            case_id: the case's id (the entry id is derived from it, see :func:`entry_id_for`).
            sequence_files: sequence key -> file; copied as they are.
            labels: internal labels (z, y, x) on ``geometry``, the corrected label map.
            geometry: the case grid (`GliomaMTLLib.io.Geometry`).
            genotype: task -> class name the reader knows.
            model: name, version, sha256 of the model whose prediction was corrected.
            changed_voxels: voxels the reader changed relative to that prediction.
            source_files: what the user pointed at (recorded for provenance).
            replace: replace an existing entry of the same case.

        Raises:
            StoreError: the case is stored already and ``replace`` is False.
        """
        import numpy as np

        from GliomaMTLLib.io import write_labels

        self.check_can_add(case_id, replace)
        entry_id = entry_id_for(case_id)
        final = self.entries_dir / entry_id
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{entry_id}.{os.getpid()}.", dir=self.staging_dir))
        try:
            names: dict[str, str] = {}
            for key, src in sequence_files.items():
                src = Path(src)
                suffix = "".join(src.suffixes[-2:]) if src.name.endswith(".nii.gz") else src.suffix
                names[key] = f"{key}{suffix}"
                shutil.copyfile(src, staging / names[key])
            labels = np.asarray(labels)
            write_labels(staging / LABEL_FILE, labels, geometry)
            files = {name: file_sha256(staging / name) for name in [*names.values(), LABEL_FILE]}
            meta = {
                "format": ENTRY_FORMAT,
                "case_id": str(case_id),
                "created": _now(),
                "sequences": names,
                "label": LABEL_FILE,
                "genotype": dict(genotype or {}),
                "model": dict(model or {}),
                "changed_voxels": None if changed_voxels is None else int(changed_voxels),
                "tumor_voxels": int((labels > 0).sum()),
                "grid": {"size": list(geometry.size), "spacing": list(geometry.spacing)},
                "source_files": {k: str(v) for k, v in (source_files or {}).items()},
                "files": files,
            }
            (staging / ENTRY_JSON).write_text(json.dumps(meta, indent=2) + "\n")
            apply_default_permissions(staging)
            replaced = self._swap_in(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._log("replace" if replaced else "add", entry_id, meta["files"])
        return self.get(entry_id)

    def remove(self, entry_id: str) -> StoreEntry:
        """Delete one entry; returns what was removed (for the caller to report).

        Raises:
            StoreError: no such entry.
        """
        entry = self.get(entry_id)
        self.trash_dir.mkdir(parents=True, exist_ok=True)
        trash = Path(tempfile.mkdtemp(prefix=f"{entry.entry_id}.removed.", dir=self.trash_dir))
        os.replace(entry.folder, trash / "entry")
        self._log("remove", entry.entry_id, entry.meta.get("files", {}))
        shutil.rmtree(trash, ignore_errors=True)
        return entry

    # ------------------------------------------------------------------ internals

    def _swap_in(self, staging: Path, final: Path) -> bool:
        """Rename ``staging`` to ``final``; an existing ``final`` goes to the trash first. Returns
        whether an entry was replaced."""
        if not final.exists():
            os.replace(staging, final)
            return False
        self.trash_dir.mkdir(parents=True, exist_ok=True)
        # ".replacing" marks an old entry whose replacement may not have arrived (see _recover)
        trash = Path(tempfile.mkdtemp(prefix=f"{final.name}.replacing.", dir=self.trash_dir))
        os.replace(final, trash / "entry")
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _recover(self) -> None:
        if self.staging_dir.is_dir():
            for path in self.staging_dir.iterdir():
                parts = path.name.rsplit(".", 2)
                pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
                if pid is None or not _pid_alive(pid):
                    shutil.rmtree(path, ignore_errors=True)
        if self.trash_dir.is_dir():
            for path in self.trash_dir.iterdir():
                entry_id, _, rest = path.name.partition(".replacing.")
                old = path / "entry"
                if rest and old.is_dir() and not (self.entries_dir / entry_id).exists():
                    os.replace(old, self.entries_dir / entry_id)  # killed mid-replace: keep the old one
                shutil.rmtree(path, ignore_errors=True)

    def _log(self, action: str, entry_id: str, files: Mapping[str, str]) -> None:
        line = json.dumps({"time": _now(), "action": action, "entry": entry_id, "files": dict(files)})
        with open(self.root / HISTORY, "a") as handle:
            handle.write(line + "\n")
