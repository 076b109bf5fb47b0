"""Reading one case (up to four co-registered MR sequences and an optional label map).

The reference sequence's grid becomes the case grid, kept exactly as read
(:meth:`Geometry.from_image`). Other sequences on the same grid are taken as they are; those on a
different grid whose field of view overlaps the reference one substantially (see
:mod:`GliomaMTLLib.io.validation`, :data:`MIN_OVERLAP`) are resampled onto the reference grid
(images: linear; label maps: nearest neighbour; outside the source field of view: 0) and a
warning is recorded in ``Case.warnings``; grids that do not overlap enough are refused.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import SimpleITK as sitk

from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.label_schemes import convert_labels
from GliomaMTLLib.io.layout import (
    LABEL_KEY,
    NAMING_HINT,
    unrecognized_image_files,
    common_prefix,
    find_sequence_files,
    identify_file,
    identify_files,
    sequence_key,
    split_image_name,
)
from GliomaMTLLib.io.registration import check_registration
from GliomaMTLLib.io.validation import (
    MIN_OVERLAP,
    CaseInputError,
    DuplicateSequenceError,
    MissingFileError,
    MissingSequenceError,
    UnknownSequenceError,
    check_finite,
    check_grid_compatible,
    check_not_constant,
    count_nonfinite_nifti,
    read_sitk_image,
)
from GliomaMTLLib.labels import SEQUENCES

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
CaseSource = Union[PathLike, Mapping[str, PathLike], Sequence[PathLike]]
# Sequences of one case read at once: reading is mostly gzip inflation, which runs outside the GIL.
READ_THREADS = 4


def _resample_onto(
    image: sitk.Image, reference: Geometry, interpolator: int, pixel_type: int, outside: float = 0.0
) -> sitk.Image:
    """Resample ``image`` onto the ``reference`` grid (identity transform, ``outside`` beyond its field of view)."""
    ref = sitk.Image([int(s) for s in reference.size], pixel_type)
    reference.apply_to(ref)
    return sitk.Resample(image, ref, sitk.Transform(), interpolator, outside, pixel_type)


def _onto_reference(
    image: sitk.Image,
    geometry: Geometry,
    reference: Geometry,
    path: PathLike,
    reference_path: PathLike | None,
    min_overlap: float,
    notes: list[str] | None,
    *,
    label: bool,
    field_of_view: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Check that ``image`` (on ``geometry``) may be resampled onto ``reference``, do it, note it.

    Images use linear interpolation (float32), label maps nearest neighbour (uint8); voxels outside
    the source field of view become 0. For images, ``field_of_view`` (if given) receives the boolean
    mask of the reference voxels the source covers.
    """
    fraction = check_grid_compatible(geometry, reference, path, reference_path or "the reference grid", min_overlap)
    if label:
        resampled = _resample_onto(image, reference, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
        what, how = f"label map {path}", "nearest neighbour (voxels outside its field of view set to background)"
    else:
        resampled = _resample_onto(image, reference, sitk.sitkLinear, sitk.sitkFloat32, outside=float("nan"))
        what, how = f"{path}", "linear interpolation (voxels outside its field of view set to 0)"
    if notes is not None:
        notes.append(
            f"{what} is on a different grid than {reference_path or 'the reference'} "
            f"(field-of-view overlap {fraction:.0%}); resampled onto the reference grid with {how}"
        )
    array = sitk.GetArrayFromImage(resampled)
    if not label:
        outside = np.isnan(array)
        array[outside] = 0.0
        if field_of_view is not None:
            field_of_view.append(~outside)
    return array


def read_volume(
    path: PathLike,
    reference: Geometry | None = None,
    reference_path: PathLike | None = None,
    *,
    notes: list[str] | None = None,
    min_overlap: float = MIN_OVERLAP,
    field_of_view: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, Geometry]:
    """Read one MR volume as float32 (z, y, x), validated, optionally on a reference grid.

    Args:
        path: NIfTI / NRRD (or other SimpleITK) file.
        reference: grid to return the array on; None keeps the file's own grid.
        reference_path: file the reference grid came from (error messages).
        notes: list that receives warnings (squeezed 4D, resampling).
        min_overlap: see :func:`GliomaMTLLib.io.validation.check_grid_compatible`.
        field_of_view: list that receives, when the volume is resampled, the boolean mask of the
            reference voxels its field of view covers.

    Returns:
        (float32 array on the returned grid, that grid).

    Raises:
        CaseInputError subclasses: missing, unreadable, not 3D, NaN/inf, constant, grid mismatch.
    """
    array, image, geometry = _load_volume(path, notes)
    return _place_volume(array, image, geometry, path, reference, reference_path, notes=notes,
                         min_overlap=min_overlap, field_of_view=field_of_view)


def _load_volume(path: PathLike, notes: list[str] | None) -> tuple[np.ndarray, sitk.Image, Geometry]:
    """One MR volume as read and validated, on its own grid: (float32 array, image, its grid)."""
    image = read_sitk_image(path, notes)
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        check_finite(array, path, count_nonfinite_nifti(path))  # ITK 5 zeroes NaN in NIfTI files
    with np.errstate(over="ignore", invalid="ignore"):
        array = array.astype(np.float32)
    check_finite(array, path)  # float64 values beyond the float32 range become inf
    check_not_constant(array, path)
    return array, image, Geometry.from_image(image)


def _place_volume(
    array: np.ndarray,
    image: sitk.Image,
    geometry: Geometry,
    path: PathLike,
    reference: Geometry | None,
    reference_path: PathLike | None,
    *,
    notes: list[str] | None,
    min_overlap: float,
    field_of_view: list[np.ndarray] | None,
) -> tuple[np.ndarray, Geometry]:
    """A loaded volume on ``reference`` (resampled when its grid differs), or on its own grid."""
    if reference is None or geometry.same_grid(reference):
        return array, (geometry if reference is None else reference)
    resampled = _onto_reference(
        sitk.Cast(image, sitk.sitkFloat32), geometry, reference, path, reference_path, min_overlap, notes,
        label=False, field_of_view=field_of_view,
    )
    return resampled.astype(np.float32, copy=False), reference


def read_label_map(
    path: PathLike,
    reference: Geometry | None = None,
    reference_path: PathLike | None = None,
    *,
    label_scheme: str = "auto",
    notes: list[str] | None = None,
    min_overlap: float = MIN_OVERLAP,
) -> tuple[np.ndarray, str]:
    """Read a label map, convert it to internal labels (uint8), optionally onto a reference grid.

    See :func:`GliomaMTLLib.io.label_schemes.convert_labels` for ``label_scheme`` (``"auto"``:
    values {0,1,2,4} -> 2020, {0,1,2,3} -> 2023, both 3 and 4 -> 2013). Values are converted on the
    file's own grid, then resampled with nearest neighbour if the grid differs.

    Returns:
        (internal labels uint8 (z, y, x), scheme used).

    Raises:
        CaseInputError subclasses: missing, unreadable, not 3D, values outside the scheme,
        grid mismatch.
    """
    image = read_sitk_image(path, notes)
    raw = sitk.GetArrayFromImage(image)
    if np.issubdtype(raw.dtype, np.floating):
        check_finite(raw, path, count_nonfinite_nifti(path))  # ITK 5 zeroes NaN in NIfTI files
    labels, used = convert_labels(raw, label_scheme, source=path)
    geometry = Geometry.from_image(image)
    if reference is None or geometry.same_grid(reference):
        return labels, used
    resampled = _onto_reference(
        geometry.to_image(labels), geometry, reference, path, reference_path, min_overlap, notes, label=True
    )
    return resampled.astype(np.uint8, copy=False), used


def resolve_case_files(source: CaseSource, labels: bool = True) -> tuple[dict[str, Path], str, Path | None]:
    """Turn a ``read_case`` source into ``(key -> file, default case id, folder or None)``.

    Keys are sequence keys in ``SEQUENCES`` order, then ``"label"``. With ``labels=False`` label maps
    in a folder are ignored (extra files that prediction never reads are no reason to refuse a case).

    Raises:
        MissingFileError, UnknownSequenceError (also: a folder whose image files all have names that
        identify no sequence), DuplicateSequenceError, CaseInputError.
    """
    if isinstance(source, Mapping):
        files: dict[str, Path] = {}
        for name, p in source.items():
            try:
                key = sequence_key(str(name))
            except UnknownSequenceError as exc:
                raise UnknownSequenceError(f"{exc} (for file {p})", [p]) from None
            if key in files:
                raise DuplicateSequenceError(
                    f"two files map to {'the label map' if key == LABEL_KEY else 'sequence ' + key}: "
                    f"{files[key]} and {p} (mapping keys include aliases of the same sequence)",
                    [files[key], p],
                )
            files[key] = Path(p)
        files = {k: files[k] for k in (*SEQUENCES, LABEL_KEY) if k in files}
        prefixes = [ident for ident in (_prefix_of(p) for p in files.values()) if ident is not None]
        return files, _default_id(prefixes, list(files.values())), None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files, prefixes = find_sequence_files(path, labels=labels)
            if not any(k in SEQUENCES for k in files):
                unknown = unrecognized_image_files(path)
                if unknown:
                    names = ", ".join(p.name for p in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
                    raise UnknownSequenceError(
                        f"found {len(unknown)} image file(s) in folder {path} but could not tell which sequence "
                        f"each is ({names}): {NAMING_HINT}",
                        unknown,
                    )
            return files, common_prefix(prefixes) or path.name, path
        if path.is_file() or split_image_name(path) is not None:
            source = [path]
        else:
            raise MissingFileError(f"case folder or file {path} does not exist", path)
    if isinstance(source, Iterable):
        paths = [Path(p) for p in source]
        if not paths:
            raise CaseInputError("no image files given")
        files, prefixes = identify_files(paths)
        return files, _default_id(prefixes, paths), None
    raise TypeError(f"unsupported case source {type(source).__name__}: give a folder, a mapping or a list of files")


def _prefix_of(path: Path) -> str | None:
    ident = identify_file(path)
    return ident[1] if ident is not None else None


def _default_id(prefixes: list[str], paths: list[Path]) -> str:
    prefix = common_prefix(prefixes) if len(prefixes) == len(paths) else None
    if prefix:
        return prefix
    parents = {p.resolve().parent for p in paths}
    if len(parents) == 1:
        return next(iter(parents)).name or "case"
    split = split_image_name(paths[0])
    return split[0] if split else paths[0].name


def _load_noted(path: PathLike) -> tuple[tuple[np.ndarray, sitk.Image, Geometry], list[str]]:
    notes: list[str] = []
    return _load_volume(path, notes), notes


def _file_key(path: PathLike) -> tuple[str, int, int] | None:
    """Identity of a file's current content for the prefetch: (resolved path, size, mtime); None if absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


# Files whose reading :func:`prefetch_case` started: file key -> future of (_load_volume result, notes).
_PREFETCHED: dict[tuple[str, int, int], Future] = {}
_PREFETCH_LOCK = threading.Lock()


def prefetch_case(source: CaseSource) -> None:
    """Start reading a case's MR sequence files in background threads; the next :func:`read_case`
    of the same, unchanged files takes the result (errors included, raised there as a plain read
    would raise them).

    The command line calls this before loading the model, so that the files are read while PyTorch
    is imported. A source that cannot be resolved is left alone: :func:`read_case` reports it.
    """
    try:
        files, _, _ = resolve_case_files(source, labels=False)
    except Exception:  # read_case raises the same problem with its full message
        return
    pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="gliomamtl-read")
    with _PREFETCH_LOCK:
        for key, path in files.items():
            file_key = _file_key(path) if key in SEQUENCES else None
            if file_key is not None:
                _PREFETCHED[file_key] = pool.submit(_load_noted, path)
    pool.shutdown(wait=False)


def _take_prefetched(path: PathLike) -> Future | None:
    file_key = _file_key(path)
    with _PREFETCH_LOCK:
        return _PREFETCHED.pop(file_key, None) if file_key is not None else None


def _load_all(
    files: Mapping[str, Path], notes: Mapping[str, list[str]]
) -> dict[str, tuple[np.ndarray, sitk.Image, Geometry]]:
    """:func:`_load_volume` of every file, concurrently (decompression and the NaN scan release the GIL),
    or its prefetched result.

    Errors are raised as a serial read would: that of the first failing file in ``files`` order.
    """
    with ThreadPoolExecutor(max_workers=min(len(files), READ_THREADS) or 1) as pool:
        futures = {key: _take_prefetched(path) or pool.submit(_load_noted, path) for key, path in files.items()}
        loaded = {}
        for key, future in futures.items():
            loaded[key], file_notes = future.result()
            notes[key].extend(file_notes)
        return loaded


def read_case(
    source: CaseSource,
    *,
    case_id: str | None = None,
    required: Iterable[str] | None = None,
    reference: str | None = None,
    label_scheme: str = "auto",
    min_overlap: float = MIN_OVERLAP,
    check_registered: bool = True,
) -> Case:
    """Read a case's MR sequences (and label map, if present) onto one grid.

    Args:
        source: one of
            - a folder holding the files (BraTS 2020/2021, BraTS 2023 or short names; see
              :mod:`GliomaMTLLib.io.layout`), unrecognized files being ignored;
            - a mapping ``{sequence name or alias (or "seg"/"label"): path}``;
            - a list of 1-4 sequence files (plus optionally a label file), or a single file,
              whose names identify the sequence.
        case_id: identifier; default: the name prefix shared by all files (e.g.
            ``BraTS-GLI-00000-000``), else the folder name (the files' common parent folder).
        required: sequences (names or aliases, or one name; ``"label"`` requires a label map)
            that must be present. None: whatever is there, at least one sequence.
        reference: sequence whose grid becomes the case grid; default: the first present in
            ``SEQUENCES`` order (t1n, t1c, t2w, t2f).
        label_scheme: ``"auto"``, ``"2013"``, ``"2020"`` or ``"2023"``
            (see :func:`GliomaMTLLib.io.label_schemes.convert_labels`).
        min_overlap: minimum field-of-view overlap for resampling a sequence onto the reference.
        check_registered: refuse sequences grossly misregistered to the reference one and warn
            about mildly misregistered ones (:mod:`GliomaMTLLib.io.registration`).

    Returns:
        A :class:`Case` with float32 images, internal uint8 labels (or None), ``sources`` and
        ``warnings`` (resampling, squeezed 4D images).

    Raises:
        CaseInputError subclasses (all ``ValueError``) naming the file(s) and the problem:
        MissingFileError, UnreadableFileError, InvalidVolumeError, LabelValueError,
        DuplicateSequenceError, UnknownSequenceError, MissingSequenceError, GridMismatchError,
        MisregistrationError.
    """
    files, default_id, folder = resolve_case_files(source)
    where = f"folder {folder}" if folder is not None else "the given files"
    present = [k for k in SEQUENCES if k in files]

    if required is not None:
        wanted = [sequence_key(r) for r in ([required] if isinstance(required, str) else required)]
        missing = [w for w in dict.fromkeys(wanted) if w not in files]
        if missing:
            names = ["label map" if m == LABEL_KEY else m for m in missing]
            found = [Path(p).name for p in files.values()]
            raise MissingSequenceError(
                f"required sequence(s) {names} not found in {where} (found: {found or 'no image files'})",
                [folder] if folder is not None else list(files.values()),
            )
    if not present:
        if folder is not None:
            listing = sorted(p.name for p in folder.iterdir())[:12]
            raise MissingSequenceError(
                f"no MR sequence file found in folder {folder} (files there: {listing or 'none'}); "
                f"expected names like '<id>-t1n.nii.gz', '<id>_flair.nii.gz' or 't2w.nrrd'",
                folder,
            )
        raise MissingSequenceError(
            f"no MR sequence among the given files {[str(p) for p in files.values()]} (only a label map?)",
            list(files.values()),
        )

    ref_key = sequence_key(reference) if reference is not None else present[0]
    if ref_key not in present:
        raise MissingSequenceError(
            f"reference sequence {reference!r} is not present in {where} (present: {present})",
            [folder] if folder is not None else list(files.values()),
        )

    ref_path = files[ref_key]
    read_notes: dict[str, list[str]] = {key: [] for key in present}
    loaded = _load_all({key: files[key] for key in present}, read_notes)
    images = {}
    fields_of_view: dict[str, np.ndarray] = {}
    notes: list[str] = read_notes[ref_key]
    images[ref_key], geometry = loaded[ref_key][0], loaded[ref_key][2]
    for key in present:
        if key == ref_key:
            continue
        fov: list[np.ndarray] = []
        notes += read_notes[key]
        images[key], _ = _place_volume(
            *loaded.pop(key), files[key], geometry, ref_path, notes=notes, min_overlap=min_overlap, field_of_view=fov
        )
        if fov:
            fields_of_view[key] = fov[0]
    del loaded
    images = {k: images[k] for k in present}
    if check_registered and len(images) > 1:
        notes += check_registration(images, ref_key, files, fields_of_view)
    del fields_of_view

    label = None
    if LABEL_KEY in files:
        label, _ = read_label_map(
            files[LABEL_KEY], geometry, ref_path, label_scheme=label_scheme, notes=notes, min_overlap=min_overlap
        )

    for note in notes:
        logger.warning(note)
    return Case(
        case_id=case_id if case_id is not None else default_id,
        images=images,
        geometry=geometry,
        label=label,
        sources=dict(files),
        warnings=notes,
    )
