"""GliomaMTLLib.io: read, validate and write co-registered MR cases on their exact grid.

- :func:`read_case` reads a folder (BraTS 2020/2021, BraTS 2023, short names), a mapping
  ``{sequence: path}`` or a list of files into a :class:`Case` (float32 images, internal labels).
- :func:`write_labels`, :func:`write_volume`, :func:`write_case` write atomically on a given
  :class:`Geometry`.
- :func:`list_case_folders`, :func:`read_clinical_table`, :func:`attach_clinical` for cohorts.
- Every input problem raises a :class:`CaseInputError` (a ``ValueError``) naming the file(s).
"""

from GliomaMTLLib.io.atomic import atomic_path, write_text_atomic
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.cohort import attach_clinical, list_case_folders, normalize_genotype, read_clinical_table
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.label_schemes import (
    LABEL_SCHEMES,
    WRITE_CONVENTIONS,
    convert_labels,
    detect_label_scheme,
    to_convention,
)
from GliomaMTLLib.io.layout import (
    IMAGE_EXTENSIONS,
    LABEL_KEY,
    find_sequence_files,
    identify_file,
    sequence_key,
)
from GliomaMTLLib.io.readers import read_case, read_label_map, read_volume
from GliomaMTLLib.io.validation import (
    MIN_OVERLAP,
    CaseInputError,
    ClinicalTableError,
    DuplicateSequenceError,
    GridMismatchError,
    InvalidVolumeError,
    LabelValueError,
    MissingFileError,
    MissingSequenceError,
    UnknownSequenceError,
    UnreadableFileError,
    overlap_fraction,
)
from GliomaMTLLib.io.writers import CASE_LAYOUTS, write_case, write_image, write_labels, write_volume

__all__ = [
    "CASE_LAYOUTS",
    "IMAGE_EXTENSIONS",
    "LABEL_KEY",
    "LABEL_SCHEMES",
    "MIN_OVERLAP",
    "WRITE_CONVENTIONS",
    "Case",
    "CaseInputError",
    "ClinicalTableError",
    "DuplicateSequenceError",
    "Geometry",
    "GridMismatchError",
    "InvalidVolumeError",
    "LabelValueError",
    "MissingFileError",
    "MissingSequenceError",
    "UnknownSequenceError",
    "UnreadableFileError",
    "atomic_path",
    "attach_clinical",
    "convert_labels",
    "detect_label_scheme",
    "find_sequence_files",
    "identify_file",
    "list_case_folders",
    "normalize_genotype",
    "overlap_fraction",
    "read_case",
    "read_clinical_table",
    "read_label_map",
    "read_volume",
    "sequence_key",
    "to_convention",
    "write_case",
    "write_image",
    "write_labels",
    "write_text_atomic",
    "write_volume",
]
