"""Label values, tumor regions, sequence names and genotype tasks: the contracts of ARCHITECTURE.md."""

from __future__ import annotations

from typing import Final

# Internal label values.
BACKGROUND: Final = 0
NCR: Final = 1  # necrotic / non-enhancing tumor core
ED: Final = 2  # peritumoral edema (SNFH)
ET: Final = 3  # enhancing tumor

LABEL_NAMES: Final[dict[int, str]] = {NCR: "necrotic core", ED: "edema", ET: "enhancing tumor"}
# Colors (RGB 0..1) close to the BraTS / Slicer convention used in published figures.
LABEL_COLORS: Final[dict[int, tuple[float, float, float]]] = {
    NCR: (0.86, 0.16, 0.16),
    ED: (0.16, 0.78, 0.16),
    ET: (0.96, 0.86, 0.12),
}

# BraTS evaluation regions, as sets of internal labels.
REGIONS: Final[dict[str, tuple[int, ...]]] = {"WT": (NCR, ED, ET), "TC": (NCR, ET), "ET": (ET,)}

# MR sequences: BraTS 2023 names, in the channel order every network uses.
SEQUENCES: Final[tuple[str, ...]] = ("t1n", "t1c", "t2w", "t2f")
SEQUENCE_TITLES: Final[dict[str, str]] = {
    "t1n": "T1",
    "t1c": "T1 post-contrast",
    "t2w": "T2",
    "t2f": "FLAIR",
}
# Accepted aliases (lower case) -> canonical name.
SEQUENCE_ALIASES: Final[dict[str, str]] = {
    "t1n": "t1n", "t1": "t1n", "t1w": "t1n", "t1native": "t1n",
    "t1c": "t1c", "t1ce": "t1c", "t1gd": "t1c", "t1post": "t1c", "t1wce": "t1c",
    "t2w": "t2w", "t2": "t2w",
    "t2f": "t2f", "flair": "t2f", "t2flair": "t2f", "t2-flair": "t2f",
}

# Genotype tasks and their class names (index = class id).
GENOTYPE_TASKS: Final[dict[str, tuple[str, ...]]] = {
    "idh": ("wildtype", "mutant"),
    "codel_1p19q": ("intact", "codeleted"),
    "braf": ("fusion", "v600e", "other"),
}


def canonical_sequence(name: str) -> str:
    """Map a sequence name or alias (any case) to its BraTS 2023 key.

    Raises:
        ValueError: naming the unknown sequence and the accepted names.
    """
    key = name.strip().lower().replace("_", "")
    if key in SEQUENCE_ALIASES:
        return SEQUENCE_ALIASES[key]
    raise ValueError(
        f"unknown MR sequence {name!r}; expected one of {sorted(SEQUENCE_ALIASES)}"
    )
