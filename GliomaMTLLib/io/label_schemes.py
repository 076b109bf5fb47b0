"""BraTS label schemes and their conversion to and from the internal labels.

Internal labels (``GliomaMTLLib.labels``): 0 background, 1 NCR (necrotic / non-enhancing core),
2 ED (edema), 3 ET (enhancing tumor).

File schemes:

======  ==========================================================  ====================
scheme  file values                                                 -> internal
======  ==========================================================  ====================
2013    1 necrosis, 2 edema, 3 non-enhancing tumor, 4 enhancing     1->1, 2->2, 3->1, 4->3
2020    1 NCR/NET, 2 ED, 4 ET (BraTS 2017-2021)                     1->1, 2->2, 4->3
2023    1 NCR, 2 SNFH/ED, 3 ET (BraTS 2023+, internal convention)   as is
======  ==========================================================  ====================
"""

from __future__ import annotations

import os
from typing import Final

import numpy as np

from GliomaMTLLib.io.validation import LabelValueError
from GliomaMTLLib.labels import ET

#: File value -> internal value, per scheme (0 background is in every scheme).
LABEL_SCHEMES: Final[dict[str, dict[int, int]]] = {
    "2013": {0: 0, 1: 1, 2: 2, 3: 1, 4: 3},
    "2020": {0: 0, 1: 1, 2: 2, 4: 3},
    "2023": {0: 0, 1: 1, 2: 2, 3: 3},
}
#: Conventions a label map can be written in.
WRITE_CONVENTIONS: Final[tuple[str, ...]] = ("2023", "2020")


def detect_label_scheme(values: set[int] | list[int] | np.ndarray) -> str:
    """Guess the scheme of a label map from the values it contains.

    Rule: values contain both 3 and 4 -> ``"2013"``; contain 4 (not 3) -> ``"2020"``; otherwise
    -> ``"2023"``. The guess is ambiguous only when neither 3 nor 4 occurs, and then every scheme
    maps the remaining values {0, 1, 2} identically, so the choice does not matter. (A 2013 map
    that happens to contain 3 but no 4 is read as 2023, i.e. its non-enhancing tumor becomes ET:
    pass ``label_scheme="2013"`` explicitly for such data.)
    """
    if isinstance(values, (set, frozenset, list, tuple)):
        present = {int(v) for v in values}
    else:
        present = {int(v) for v in np.unique(np.asarray(values))}
    if 3 in present and 4 in present:
        return "2013"
    if 4 in present:
        return "2020"
    return "2023"


def convert_labels(
    array: np.ndarray, scheme: str = "auto", source: str | os.PathLike | None = None
) -> tuple[np.ndarray, str]:
    """Convert a label map read from a file to internal labels.

    Args:
        array: label values as read (any numeric dtype; floats must be whole numbers).
        scheme: ``"2013"``, ``"2020"``, ``"2023"`` or ``"auto"`` (see :func:`detect_label_scheme`).
        source: the file the labels came from, for error messages.

    Returns:
        (internal labels as uint8 of the same shape, the scheme used).

    Raises:
        ValueError: unknown scheme name.
        LabelValueError: values outside the scheme, or non-integer values; names the file.
    """
    where = f"label file {source}" if source is not None else "label map"
    scheme = str(scheme)
    if scheme != "auto" and scheme not in LABEL_SCHEMES:
        raise ValueError(f"unknown label scheme {scheme!r}; expected 'auto' or one of {sorted(LABEL_SCHEMES)}")
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise LabelValueError(f"{where} contains NaN or infinite values", source or ())
        if not np.all(array == np.round(array)):
            bad = np.unique(array[array != np.round(array)])[:5]
            raise LabelValueError(
                f"{where} contains non-integer values {[float(b) for b in bad]}; "
                f"a label map must hold whole numbers (was it resampled with linear interpolation?)",
                source or (),
            )
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        raise LabelValueError(f"{where} has unsupported voxel type {array.dtype}", source or ())
    values = np.unique(array).astype(np.int64)
    used = detect_label_scheme(values) if scheme == "auto" else scheme
    mapping = LABEL_SCHEMES[used]
    bad = [int(v) for v in values if int(v) not in mapping]
    if bad:
        raise LabelValueError(
            f"{where} contains values {bad} outside the BraTS {used} label scheme "
            f"(allowed {sorted(mapping)}{', detected automatically' if scheme == 'auto' else ''})",
            source or (),
        )
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for file_value, internal in mapping.items():
        lut[file_value] = internal
    return lut[array.astype(np.int64)], used


def check_internal_labels(labels: np.ndarray, what: str = "label map") -> np.ndarray:
    """Return ``labels`` as uint8 after checking it holds only internal values 0..3.

    Raises:
        ValueError: naming the offending values.
    """
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError(f"{what} must hold whole numbers 0..3, found non-integer or non-finite values")
    outside = (labels < 0) | (labels > 3)  # a comparison pass, not a sort: ~10x cheaper than np.unique
    if outside.any():
        bad = [v.item() for v in np.unique(labels[outside])]
        raise ValueError(f"{what} holds values {bad}; internal labels are 0 (background), 1 NCR, 2 ED, 3 ET")
    return labels.astype(np.uint8)


def to_convention(labels: np.ndarray, convention: str = "2023") -> np.ndarray:
    """Internal labels -> uint8 label values of a file convention (``"2023"`` as is, ``"2020"`` ET=4).

    Raises:
        ValueError: unknown convention or non-internal label values.
    """
    convention = str(convention)
    if convention not in WRITE_CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {WRITE_CONVENTIONS}")
    out = check_internal_labels(labels)
    if convention == "2020":
        out = out.copy()
        out[out == ET] = 4
    return out


#: Plain meaning of each internal label of the BraTS label set.
_MEANINGS: Final[dict[int, str]] = {
    1: "necrotic / non-enhancing tumor core (NCR)",
    2: "edema / surrounding FLAIR hyperintensity (ED)",
    3: "enhancing tumor (ET)",
}


def label_key(label_names: dict[int, str], convention: str = "2023") -> dict[str, str]:
    """File value -> meaning of the label map written with ``convention``: the key of the file as written.

    For the BraTS label set {1 NCR, 2 ED, 3 ET}, enhancing tumor is keyed 4 under ``"2020"``. Any other
    label set (a model declaring its own, e.g. a whole-tumor model ``{1: "tumor"}``) is keyed by its own
    values, and a single foreground label is spelled out as the whole tumor, so that nobody reads it
    as BraTS label 1 (necrotic core).

    Raises:
        ValueError: unknown convention.
    """
    if str(convention) not in WRITE_CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {WRITE_CONVENTIONS}")
    values = sorted(int(v) for v in label_names)
    if values == [1, 2, 3]:
        return {str(4 if (v == ET and convention == "2020") else v): _MEANINGS[v] for v in values}
    if len(values) == 1:
        name = label_names[values[0]]
        return {str(values[0]): f"whole tumor ({name}: every tumor compartment together; this model does not "
                                f"separate necrotic core, edema and enhancing tumor)"}
    return {str(v): label_names[v] for v in values}
