"""Finding a case's sequence and label files by name.

A file is recognized by the *end* of its name (before the image extension), after splitting it at
``_``, ``-``, ``.`` and spaces. These layouts are understood:

- BraTS 2020/2021: ``BraTS20_Training_001_flair.nii(.gz)``, ``_t1``, ``_t1ce``, ``_t2``, ``_seg``;
- BraTS 2023 and later, any prefix (GLI, PED, MEN, MET, SSA, ...):
  ``BraTS-GLI-00000-000-t2f.nii.gz``, ``-t1c``, ``-t1n``, ``-t2w``, ``-seg``;
- short names: ``t1n.nii.gz``, ``flair.nrrd``, ``seg.nii.gz``, ``label.nii.gz``, and any alias of
  :data:`GliomaMTLLib.labels.SEQUENCE_ALIASES` (``t1``, ``t1ce``, ``t1gd``, ``t2``, ``flair``, ...),
  also written in two parts (``t1_ce``, ``T2-FLAIR``).

Label maps are recognized by :data:`LABEL_NAMES` (``seg``, ``label``, ...). Hidden files (names
starting with ``.``, e.g. partial files of an interrupted write) are ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final, Iterable

from GliomaMTLLib.io.validation import DuplicateSequenceError, MissingFileError, UnknownSequenceError
from GliomaMTLLib.labels import SEQUENCE_ALIASES, SEQUENCES

#: Image file extensions that are read (SimpleITK), longest first.
IMAGE_EXTENSIONS: Final[tuple[str, ...]] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Name endings (lower case, separators removed) that mark a label map.
LABEL_NAMES: Final[frozenset[str]] = frozenset(
    {"seg", "segm", "label", "labels", "labelmap", "segmentation", "groundtruth", "gt"}
)
#: Key used for the label map next to the sequence keys.
LABEL_KEY: Final = "label"

_SPLIT = re.compile(r"[_\-.\s]+")
#: What to do when a file's name does not say which sequence it holds (every option exists in the CLI).
NAMING_HINT: Final = (
    "name the files t1n/t1c/t2w/t2f (or t1, t1ce, t2, flair), optionally after a case id "
    "('<id>-t1n.nii.gz', '<id>_flair.nii.gz'), or pass the files explicitly, each with its sequence "
    "(gliomamtl predict --t1n FILE --t1c FILE --t2w FILE --t2f FILE)"
)


def split_image_name(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(stem, extension)`` of an image file name, or None if the extension is not an image one."""
    name = Path(path).name
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext):]
    return None


def identify_name(name: str) -> tuple[str, str] | None:
    """Identify a sequence or label name ending (no extension) -> ``(key, prefix)`` or None.

    ``key`` is a sequence key (``t1n`` ...) or ``"label"``; ``prefix`` is the rest of the name
    before the matched ending, without trailing separators (``BraTS-GLI-00000-000``, or ``""``).
    """
    tokens = [t for t in _SPLIT.split(name) if t]
    if not tokens:
        return None
    # Two-token endings first so that "case1_T2-FLAIR" has the prefix "case1", not "case1_T2".
    for k in (2, 1):
        if len(tokens) < k:
            continue
        ending = "".join(tokens[-k:]).lower()
        key = SEQUENCE_ALIASES.get(ending) or (LABEL_KEY if ending in LABEL_NAMES else None)
        if key is not None:
            prefix = _strip_ending(name, tokens[-k:])
            return key, prefix
    return None


def _strip_ending(name: str, ending_tokens: list[str]) -> str:
    """Remove the ending tokens (and the separators around them) from the end of ``name``."""
    pattern = r"[_\-.\s]*".join(re.escape(t) for t in ending_tokens) + r"[_\-.\s]*$"
    prefix = re.sub(pattern, "", name)
    return prefix.rstrip("_-. ")


def identify_file(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(key, prefix)`` for an image file whose name identifies a sequence or label map, else None."""
    if Path(path).name.startswith("."):
        return None
    split = split_image_name(path)
    if split is None:
        return None
    return identify_name(split[0])


def sequence_key(name: str) -> str:
    """Map a sequence name or alias, or a label name, to its key (``t1n`` ... or ``"label"``).

    Raises:
        UnknownSequenceError: naming the unknown name and the accepted ones.
    """
    key = name.strip().lower().replace("_", "").replace(" ", "")
    if key in SEQUENCE_ALIASES:
        return SEQUENCE_ALIASES[key]
    if key.replace("-", "") in SEQUENCE_ALIASES:
        return SEQUENCE_ALIASES[key.replace("-", "")]
    if key.replace("-", "") in LABEL_NAMES:
        return LABEL_KEY
    raise UnknownSequenceError(
        f"unknown sequence name {name!r}; expected one of {sorted(SEQUENCE_ALIASES)} "
        f"or a label map name {sorted(LABEL_NAMES)}"
    )


def _assign(found: dict[str, Path], key: str, path: Path) -> None:
    if key in found:
        what = "the label map" if key == LABEL_KEY else f"sequence {key}"
        raise DuplicateSequenceError(
            f"two files map to {what}: {found[key]} and {path}; keep only one in the folder, or pass the "
            f"files explicitly, each with its sequence (gliomamtl predict --t1n FILE --t1c FILE --t2w FILE --t2f FILE)",
            [found[key], path],
        )
    found[key] = path


def identify_files(paths: Iterable[str | os.PathLike]) -> tuple[dict[str, Path], list[str]]:
    """Assign image files to keys by their names.

    Returns:
        (key -> path with keys in ``SEQUENCES`` order then ``"label"``, the name prefixes found).

    Raises:
        UnknownSequenceError: a file name identifies no sequence (names the file).
        DuplicateSequenceError: two files identify the same key (names both).
    """
    found: dict[str, Path] = {}
    prefixes: list[str] = []
    for p in paths:
        path = Path(p)
        ident = identify_file(path)
        if ident is None:
            raise UnknownSequenceError(
                f"cannot tell which sequence {path} is from its name; {NAMING_HINT}",
                path,
            )
        _assign(found, ident[0], path)
        prefixes.append(ident[1])
    return _ordered(found), prefixes


def find_sequence_files(folder: str | os.PathLike, labels: bool = True) -> tuple[dict[str, Path], list[str]]:
    """Recognized sequence and label files directly inside ``folder``.

    Args:
        labels: also look for the label map; False ignores label files (two of them are then no error).

    Returns:
        (key -> path, in ``SEQUENCES`` order then ``"label"``; name prefixes of those files).
        Unrecognized files are ignored; the mapping is empty if nothing is recognized.

    Raises:
        MissingFileError: the folder does not exist.
        DuplicateSequenceError: two files map to the same sequence (names both).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"case folder {folder} does not exist or is not a folder", folder)
    found: dict[str, Path] = {}
    prefixes: list[str] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        ident = identify_file(path)
        if ident is None or (ident[0] == LABEL_KEY and not labels):
            continue
        _assign(found, ident[0], path)
        prefixes.append(ident[1])
    return _ordered(found), prefixes


def unrecognized_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` whose names identify no sequence and no label map."""
    return [
        p for p in sorted(Path(folder).iterdir())
        if p.is_file() and not p.name.startswith(".") and split_image_name(p) is not None and identify_file(p) is None
    ]


def _ordered(found: dict[str, Path]) -> dict[str, Path]:
    return {k: found[k] for k in (*SEQUENCES, LABEL_KEY) if k in found}


def common_prefix(prefixes: list[str]) -> str | None:
    """The shared name prefix (case id) if every file has the same non-empty one, else None."""
    if prefixes and all(p == prefixes[0] for p in prefixes) and prefixes[0]:
        return prefixes[0]
    return None


def unrecognized_note(folder: str | os.PathLike | None) -> str:
    """``"; could not tell which sequence these files are: ...: <what to do>"`` for the image files of
    ``folder`` whose names identify nothing, or ``""`` (for messages about missing sequences)."""
    if folder is None or not Path(folder).is_dir():
        return ""
    unknown = unrecognized_image_files(folder)
    if not unknown:
        return ""
    names = ", ".join(p.name for p in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
    return f"; could not tell which sequence these files are: {names}: {NAMING_HINT}"
