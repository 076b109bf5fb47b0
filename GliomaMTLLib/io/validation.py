"""Input validation for MR volumes: the errors a user sees when a case cannot be read, and the checks.

Every error names the file (or files) and the problem in plain words, so that the Slicer panel
and the CLI can show the message as it is. All errors derive from :class:`CaseInputError`, a
``ValueError``; :class:`MissingFileError` is also a ``FileNotFoundError``.

Grid compatibility: two grids that are not the same (``Geometry.same_grid``) are resampled onto
the reference grid only when their physical fields of view overlap substantially, i.e. when the
intersection of their axis-aligned physical bounding boxes (from ``Geometry.corners``) covers at
least :data:`MIN_OVERLAP` (50 %) of the *smaller* of the two boxes. Below that the sequences are
taken not to be co-registered, and reading refuses with :class:`GridMismatchError`. Bounding
boxes of oblique grids are axis-aligned in LPS space, so for strongly rotated grids the fraction
is an upper bound on the true overlap of the two fields of view.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from GliomaMTLLib.io.geometry import Geometry

#: Smallest accepted fraction of the smaller field of view that two grids must share.
MIN_OVERLAP: float = 0.5


class CaseInputError(ValueError):
    """A case's input files cannot be used; the message names the file(s) and the problem.

    Attributes:
        paths: the files (or folder) concerned, possibly empty.
    """

    def __init__(self, message: str, paths: Sequence[str | os.PathLike] | str | os.PathLike = ()) -> None:
        super().__init__(message)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths: list[Path] = [Path(p) for p in paths]

    def __str__(self) -> str:  # OSError subclasses would otherwise format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class MissingFileError(CaseInputError, FileNotFoundError):
    """A file or folder does not exist."""


class UnreadableFileError(CaseInputError):
    """SimpleITK cannot read the file (wrong format, truncated, not an image)."""


class InvalidVolumeError(CaseInputError):
    """The file is an image but not a usable volume (not 3D, NaN/inf, constant)."""


class LabelValueError(InvalidVolumeError):
    """A label map holds values outside its label scheme."""


class DuplicateSequenceError(CaseInputError):
    """Two files map to the same sequence (or to the label map)."""


class UnknownSequenceError(CaseInputError):
    """A name does not identify an MR sequence or a label map."""


class MissingSequenceError(CaseInputError):
    """A required sequence is absent."""


class GridMismatchError(CaseInputError):
    """Two sequences lie on grids that do not overlap enough to be resampled safely."""


class ClinicalTableError(CaseInputError):
    """A clinical CSV is missing a column or holds a value that cannot be understood."""


def check_exists(path: str | os.PathLike, what: str = "image file") -> Path:
    """Return ``path`` as a Path if it is an existing file.

    Raises:
        MissingFileError: if it does not exist or is a folder.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{what} {path} does not exist", path)
    if path.is_dir():
        raise MissingFileError(f"{what} {path} is a folder, expected a file", path)
    return path


def read_sitk_image(path: str | os.PathLike, notes: list[str] | None = None) -> sitk.Image:
    """Read one scalar 3D volume with SimpleITK, with errors that name the file.

    A 4D image whose 4th dimension has size 1 is squeezed to 3D (a note is appended to ``notes``).

    Raises:
        MissingFileError: the file does not exist.
        UnreadableFileError: SimpleITK cannot read it, or it holds less image data than its header
            promises (:mod:`GliomaMTLLib.io.completeness`: truncated or damaged).
        InvalidVolumeError: it is not a 3D scalar volume.
    """
    from GliomaMTLLib.io.completeness import check_complete  # imports this module

    path = check_exists(path)
    check_complete(path)  # ITK reads a NIfTI file cut short without a word (zeros for the missing voxels)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:  # SimpleITK reports every reading failure as RuntimeError
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        detail = detail.replace("sitk::ERROR: ", "")
        raise UnreadableFileError(
            f"cannot read image file {path}: not a readable NIfTI/NRRD image or the file is damaged ({detail})",
            path,
        ) from exc
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise InvalidVolumeError(
            f"image file {path} is not a 3D scalar volume: it has {components} components per voxel "
            f"(a vector or RGB image); save each sequence as its own scalar volume",
            path,
        )
    dim = image.GetDimension()
    size = tuple(image.GetSize())
    if dim == 4 and size[3] == 1:
        image = sitk.Extract(image, [int(s) for s in size[:3]] + [0], [0, 0, 0, 0])
        if notes is not None:
            notes.append(f"{path}: 4D image with a single volume (size {size}) squeezed to 3D")
    elif dim != 3:
        hint = (
            f"a time series of {size[3]} volumes; extract the one volume you want"
            if dim == 4
            else "a single slice or other non-3D image"
        )
        raise InvalidVolumeError(
            f"image file {path} is not a 3D volume: it is {dim}D with size {size} ({hint})", path
        )
    return image


def check_finite(array: np.ndarray, path: str | os.PathLike, counts: tuple[int, int] | None = None) -> None:
    """Raise InvalidVolumeError naming ``path`` if ``array`` holds NaN or infinite values.

    ``counts`` (NaN, inf) overrides counting in ``array`` (see :func:`count_nonfinite_nifti`).
    """
    if counts is None:
        if not np.issubdtype(array.dtype, np.floating):
            return
        counts = (int(np.isnan(array).sum()), int(np.isinf(array).sum()))
    n_nan, n_inf = counts
    if n_nan or n_inf:
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN")
        if n_inf:
            parts.append(f"{n_inf} infinite")
        raise InvalidVolumeError(
            f"image file {path} contains {' and '.join(parts)} voxel value(s) (NaN or inf); "
            f"fix or re-export the volume",
            path,
        )


def count_nonfinite_nifti(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(NaN count, inf count)`` in a floating-point NIfTI file as stored on disk, or None.

    ITK 5 (SimpleITK 2.x) silently replaces NaN and +-inf voxels of NIfTI files with 0 when
    reading (fixed in ITK 6, InsightSoftwareConsortium/ITK#6683), so a check on the array that
    SimpleITK returns cannot see them. This reads the stored values with nibabel instead. Returns
    None when the file is not NIfTI, is not floating point, or nibabel is not installed (nibabel
    comes with nilearn; without it the NaN check of NIfTI files relies on SimpleITK alone).
    """
    name = Path(path).name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return None
    try:
        import nibabel  # optional: installed with nilearn (synth/train/test extras)
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    try:
        image = nibabel.load(str(path))
        if not np.issubdtype(image.get_data_dtype(), np.floating):
            return None
        data = np.asanyarray(image.dataobj)
    except Exception:  # nibabel cannot parse what SimpleITK could: nothing more to say
        return None
    return int(np.isnan(data).sum()), int(np.isinf(data).sum())


def check_not_constant(array: np.ndarray, path: str | os.PathLike) -> None:
    """Raise InvalidVolumeError naming ``path`` if the volume is all zero or constant."""
    if array.size == 0:
        raise InvalidVolumeError(f"image file {path} is empty (no voxels)", path)
    lo, hi = float(np.min(array)), float(np.max(array))
    if lo == hi:
        if lo == 0.0:
            raise InvalidVolumeError(f"image file {path} is all zero (an empty volume, no image content)", path)
        raise InvalidVolumeError(
            f"image file {path} is constant (every voxel is {lo:g}), it holds no image content", path
        )


def bounding_box(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical (LPS, mm) bounding box ``(lo, hi)`` of a grid's field of view."""
    corners = geometry.corners()
    return corners.min(axis=0), corners.max(axis=0)


def overlap_fraction(a: Geometry, b: Geometry) -> float:
    """Volume of the intersection of both bounding boxes / volume of the smaller box, in [0, 1]."""
    lo_a, hi_a = bounding_box(a)
    lo_b, hi_b = bounding_box(b)
    extent = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0.0, None)
    inter = float(np.prod(extent))
    smaller = min(float(np.prod(hi_a - lo_a)), float(np.prod(hi_b - lo_b)))
    if smaller <= 0.0:
        return 0.0
    return min(inter / smaller, 1.0)


def describe_grid(geometry: Geometry) -> str:
    """Short human-readable description of a grid (size, spacing, origin)."""
    spacing = "x".join(f"{s:g}" for s in geometry.spacing)
    origin = ", ".join(f"{o:.1f}" for o in geometry.origin)
    size = "x".join(str(s) for s in geometry.size)
    return f"{size} voxels of {spacing} mm at origin ({origin})"


def check_grid_compatible(
    geometry: Geometry,
    reference: Geometry,
    path: str | os.PathLike,
    reference_path: str | os.PathLike,
    min_overlap: float = MIN_OVERLAP,
) -> float:
    """Return the overlap fraction of two grids, or raise if it is below ``min_overlap``.

    Raises:
        GridMismatchError: naming both files, their grids and the overlap.
    """
    fraction = overlap_fraction(geometry, reference)
    if fraction < min_overlap:
        raise GridMismatchError(
            f"{path} and {reference_path} are not on a common grid and their fields of view "
            f"{'do not overlap' if fraction == 0.0 else f'overlap only {fraction:.0%}'} "
            f"(at least {min_overlap:.0%} of the smaller one is needed to resample safely); "
            f"are they from the same patient and co-registered? "
            f"{Path(path).name}: {describe_grid(geometry)}; "
            f"{Path(reference_path).name}: {describe_grid(reference)}",
            [path, reference_path],
        )
    return fraction
