"""Writing label maps, probability / heatmap volumes and whole cases on an exact grid.

Every writer goes through :func:`GliomaMTLLib.io.atomic.atomic_path`: the file is written under a
hidden temporary name in the target folder and renamed at the end, so an interrupted or failed
write never leaves a partial file under the final name and never damages an existing one.
Formats are chosen by extension: ``.nii.gz`` (compressed), ``.nii``, ``.nrrd`` (gzip-encoded),
``.mha``. Formats with a detached data file (``.nhdr``, ``.mhd``) are refused, because the header
would name the temporary data file.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Final

import numpy as np
import SimpleITK as sitk

from GliomaMTLLib.io.atomic import atomic_path
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.label_schemes import to_convention
from GliomaMTLLib.io.layout import LABEL_KEY

#: Extensions the writers accept.
WRITE_EXTENSIONS: Final[tuple[str, ...]] = (".nii.gz", ".nii", ".nrrd", ".mha")

#: File name endings per case layout: key -> (separator, ending). ``{id}`` is the case prefix.
CASE_LAYOUTS: Final[dict[str, dict[str, str]]] = {
    # BraTS 2023: <id>-t1n.nii.gz, <id>-t1c, <id>-t2w, <id>-t2f, <id>-seg
    "brats2023": {"t1n": "{id}-t1n", "t1c": "{id}-t1c", "t2w": "{id}-t2w", "t2f": "{id}-t2f", LABEL_KEY: "{id}-seg"},
    # BraTS 2020/2021: <id>_t1.nii.gz, <id>_t1ce, <id>_t2, <id>_flair, <id>_seg
    "brats2020": {"t1n": "{id}_t1", "t1c": "{id}_t1ce", "t2w": "{id}_t2", "t2f": "{id}_flair", LABEL_KEY: "{id}_seg"},
    # short names without the case id: t1n.nii.gz ... seg.nii.gz
    "short": {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f", LABEL_KEY: "seg"},
}


def _check_extension(path: Path) -> None:
    lower = path.name.lower()
    if not any(lower.endswith(ext) for ext in WRITE_EXTENSIONS):
        raise ValueError(f"cannot write {path}: use one of the extensions {WRITE_EXTENSIONS}")


def write_image(path: str | os.PathLike, image: sitk.Image, compression_level: int = -1) -> Path:
    """Write a SimpleITK image atomically (compressed where the format allows); returns the path.

    ``compression_level`` is the gzip level (-1: the library default; 1 is fastest).

    Raises:
        ValueError: unsupported extension.
        OSError: the file could not be written (names ``path`` and the reason; ``ENOSPC`` when the disk
            is full); nothing is left under ``path`` and an old file stays intact.
    """
    path = Path(path)
    _check_extension(path)
    compress = not path.name.lower().endswith(".nii")  # .nii.gz, .nrrd (gzip encoding), .mha
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress, int(compression_level))
        except RuntimeError as exc:  # ITK reports every write failure (disk full included) as RuntimeError
            raise _write_error(path, exc) from exc
    return path


def free_bytes(folder: Path) -> int:
    """Free space (bytes) on the disk holding ``folder``."""
    return shutil.disk_usage(folder).free


def _write_error(path: Path, exc: RuntimeError) -> OSError:
    """An ITK write failure as an OSError naming ``path``: ENOSPC when the disk is (nearly) full."""
    detail = str(exc).strip().splitlines()[-1].replace("sitk::ERROR: ", "") if str(exc).strip() else "unknown error"
    try:
        full = free_bytes(path.parent) < 16 * 2**20
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (writing the image failed: {detail})", str(path))
    return OSError(errno.EIO, f"writing the image failed: {detail}", str(path))


def _check_shape(array: np.ndarray, geometry: Geometry, what: str, path: Path) -> None:
    if array.shape != geometry.shape:
        raise ValueError(
            f"cannot write {what} {path}: array shape {array.shape} (z, y, x) does not match the grid "
            f"shape {geometry.shape} (size x, y, z = {geometry.size})"
        )


def write_labels(
    path: str | os.PathLike, labels: np.ndarray, geometry: Geometry, convention: str = "2023"
) -> Path:
    """Write internal labels (0..3) as a uint8 label map on exactly ``geometry``.

    Args:
        path: output file (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``).
        labels: internal labels (z, y, x).
        geometry: grid to write on (size, spacing, origin, direction).
        convention: ``"2023"`` (1 NCR, 2 ED, 3 ET) or ``"2020"`` (ET written as 4).

    Returns:
        The path written.

    Raises:
        ValueError: shape mismatch, values other than 0..3, unknown convention or extension.
    """
    path = Path(path)
    labels = np.asarray(labels)
    _check_shape(labels, geometry, "label map", path)
    values = to_convention(labels, convention)
    return write_image(path, geometry.to_image(values))


def write_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    geometry: Geometry,
    dtype: np.dtype | type = np.float32,
    compression_level: int = -1,
) -> Path:
    """Write one scalar volume (probability map, heatmap, image) on exactly ``geometry``.

    Args:
        path: output file (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``).
        array: values (z, y, x).
        geometry: grid to write on.
        dtype: stored voxel type (default float32).

    Returns:
        The path written.

    Raises:
        ValueError: shape mismatch, NaN/inf values, unknown extension.
    """
    path = Path(path)
    array = np.asarray(array)
    _check_shape(array, geometry, "volume", path)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError(f"cannot write volume {path}: the array contains NaN or infinite values")
    return write_image(path, geometry.to_image(array.astype(dtype, copy=False)), compression_level)


def write_case(
    case: Case,
    folder: str | os.PathLike,
    layout: str = "brats2023",
    prefix: str | None = None,
    label_convention: str = "2023",
    image_dtype: np.dtype | type = np.float32,
    compression_level: int = -1,
) -> dict[str, Path]:
    """Write a case's sequences (float32) and label map into ``folder``, readable by ``read_case``.

    Args:
        case: the case to write (images and label on ``case.geometry``).
        folder: output folder (created if needed).
        layout: ``"brats2023"`` (``<id>-t1n.nii.gz`` ... ``<id>-seg.nii.gz``), ``"brats2020"``
            (``<id>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``) or ``"short"``
            (``t1n.nii.gz`` ... ``seg.nii.gz``).
        prefix: file name prefix; default ``case.case_id``.
        label_convention: ``"2023"`` or ``"2020"`` (ET = 4).
        image_dtype: stored voxel type of the sequences (e.g. ``np.int16`` for integer-valued
            scanner-like images; values are cast as they are).
        compression_level: gzip level (-1 library default, 1 fastest).

    Returns:
        key (sequence key or ``"label"``) -> path written.

    Raises:
        ValueError: unknown layout, or an empty prefix for a BraTS layout.
    """
    if layout not in CASE_LAYOUTS:
        raise ValueError(f"unknown case layout {layout!r}; expected one of {sorted(CASE_LAYOUTS)}")
    names = CASE_LAYOUTS[layout]
    prefix = case.case_id if prefix is None else prefix
    if layout != "short" and not str(prefix).strip():
        raise ValueError(f"layout {layout!r} needs a non-empty file prefix (case id)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for key in case.sequences:
        path = folder / (names[key].format(id=prefix) + ".nii.gz")
        written[key] = write_volume(path, case.images[key], case.geometry, image_dtype, compression_level)
    if case.label is not None:
        path = folder / (names[LABEL_KEY].format(id=prefix) + ".nii.gz")
        written[LABEL_KEY] = write_labels(path, case.label, case.geometry, label_convention)
    return written
