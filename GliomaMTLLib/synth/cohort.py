"""Generate a phantom cohort and write it in the BraTS 2023 layout with a ``labels.csv``.

Layout (``BraTS-GLI`` for adult, ``BraTS-PED`` for pediatric cohorts)::

    out_dir/
      BraTS-GLI-00000-000/
        BraTS-GLI-00000-000-t1n.nii.gz  -t1c  -t2w  -t2f  -seg (uint8: 1 NCR, 2 ED, 3 ET)
      ...
      labels.csv   case_id, cohort, idh, codel_1p19q, braf, survival_days, event (unknown = empty)

Case ``i`` uses a seed derived from ``(seed, i)``, so a cohort is identical whatever the number of
workers and any case can be regenerated alone (``case_seed``).
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from GliomaMTLLib.io.atomic import write_text_atomic
from GliomaMTLLib.io.writers import write_case
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.progress import ProgressCallback

LABELS_CSV_COLUMNS: tuple[str, ...] = ("case_id", "cohort", "idh", "codel_1p19q", "braf", "survival_days", "event")
_PREFIX = {"adult": "BraTS-GLI", "pediatric": "BraTS-PED"}


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a cohort generated with ``seed`` (independent streams)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def case_id_for(cohort: str, index: int) -> str:
    """BraTS 2023 style identifier of case ``index``, e.g. ``BraTS-GLI-00003-000``."""
    if cohort not in _PREFIX:
        raise ValueError(f"unknown cohort {cohort!r}; expected one of {tuple(_PREFIX)}")
    return f"{_PREFIX[cohort]}-{index:05d}-000"


def write_case_files(case: Case, folder: str | Path, int16: bool = False, compression_level: int = 1) -> Path:
    """Write ``case`` as BraTS 2023 files into ``folder`` (created); each file atomically.

    Args:
        case: the case (images on ``case.geometry``; labels 0-3).
        folder: case folder, usually ``<out>/<case_id>``.
        int16: store images as int16 (they must be integer-valued) instead of float32.
        compression_level: gzip level (1 = fast; the files are ~10% larger than at level 6).

    Returns:
        The folder.
    """
    write_case(case, folder, layout="brats2023", image_dtype=np.int16 if int16 else np.float32,
               compression_level=compression_level)
    return Path(folder)


def labels_row(case: Case, cohort: str) -> dict[str, str]:
    """One ``labels.csv`` row of a case (unknown values as empty strings)."""
    return {
        "case_id": case.case_id,
        "cohort": cohort,
        "idh": case.genotype.get("idh", ""),
        "codel_1p19q": case.genotype.get("codel_1p19q", ""),
        "braf": case.genotype.get("braf", ""),
        "survival_days": "" if case.survival_days is None else str(int(round(case.survival_days))),
        "event": "" if case.event is None else str(int(bool(case.event))),
    }


def _make_case(out_dir: str, index: int, cohort: str, seed: int,
               small: bool) -> tuple[int, dict[str, str], float, float]:
    """Generate and write case ``index``; returns (index, labels row, generate s, write s)."""
    from GliomaMTLLib.synth.generator import synthesize

    t0 = time.perf_counter()
    result = synthesize(case_seed(seed, index), cohort=cohort, small=small, case_id=case_id_for(cohort, index))
    t1 = time.perf_counter()
    write_case_files(result.case, Path(out_dir) / result.case.case_id, int16=result.store_int16)
    t2 = time.perf_counter()
    return index, labels_row(result.case, cohort), t1 - t0, t2 - t1


def _init_worker(threads: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, threads))


def write_labels_csv(rows: list[dict[str, str]], path: str | Path) -> Path:
    """Write ``labels.csv`` atomically with `LABELS_CSV_COLUMNS`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(LABELS_CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def generate_cohort(out_dir: str | Path, n: int, cohort: str = "adult", seed: int = 0, small: bool = False,
                    workers: int = 1, progress: ProgressCallback | None = None) -> Path:
    """Generate ``n`` phantom cases and write them (BraTS 2023 layout) plus ``labels.csv``.

    Args:
        out_dir: output folder (created; existing case files of the same ids are replaced).
        n: number of cases.
        cohort: ``"adult"`` or ``"pediatric"``.
        seed: cohort seed; case ``i`` uses ``case_seed(seed, i)``.
        small: 64x64x52 grid at 3 mm (tests) instead of 240x240x155 at 1 mm.
        workers: processes generating cases in parallel (results do not depend on it).
        progress: called as ``progress(fraction, message)`` after each case.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: for an unknown cohort or ``n < 1`` / ``workers < 1``.
    """
    from GliomaMTLLib.synth.anatomy import load_anatomy

    if cohort not in _PREFIX:
        raise ValueError(f"unknown cohort {cohort!r}; expected one of {tuple(_PREFIX)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load_anatomy(2 if small else 1)  # builds the on-disk cache once, before any worker needs it
    rows: dict[int, dict[str, str]] = {}
    done = 0

    def report(index: int, row: dict[str, str], t_gen: float, t_write: float) -> None:
        nonlocal done
        rows[index] = row
        done += 1
        if progress is not None:
            genotype = ", ".join(f"{k}={row[k]}" for k in ("idh", "codel_1p19q", "braf") if row[k])
            progress(done / n, f"[{done}/{n}] {row['case_id']} ({genotype}) "
                               f"generated {t_gen:.1f} s, written {t_write:.1f} s")

    if workers == 1 or n == 1:
        for i in range(n):
            report(*_make_case(str(out), i, cohort, seed, small))
    else:
        workers = min(workers, n)
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")  # no fork: SimpleITK/BLAS thread pools are not fork-safe
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(_make_case, str(out), i, cohort, seed, small) for i in range(n)]
            for fut in as_completed(futures):
                report(*fut.result())
    write_labels_csv([rows[i] for i in range(n)], out / "labels.csv")
    return out
