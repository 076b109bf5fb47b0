"""Which MR sequence a Slicer node holds, from its name.

Node names come from file names (Slicer drops the extension): BraTS 2020/2021
``BraTS20_Training_001_flair``, BraTS 2023 ``BraTS-GLI-00000-000-t2f``, short names ``t1n``, and
the usual aliases (``t1``, ``t1ce``/``t1gd``, ``t2``, ``flair``, ``T2-FLAIR``). Slicer adds ``_1``,
``_2`` ... to repeated names; that suffix is ignored. The name's *last* sequence word wins, and two
words are tried before one, so ``T1 GD`` is T1c (not T1) and ``T2 FLAIR`` is FLAIR (not T2).
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from GliomaMTLLib.labels import SEQUENCE_ALIASES, SEQUENCES

_SPLIT = re.compile(r"[_\-.\s()\[\]]+")
#: Words that mark a label map or a result rather than an MR sequence.
NOT_A_SEQUENCE = frozenset({"seg", "segmentation", "label", "labels", "labelmap", "mask", "ig", "heatmap", "prob"})


def sequence_of_name(name: str) -> str | None:
    """The sequence key (``t1n``, ``t1c``, ``t2w``, ``t2f``) a node name identifies, or None.

    Examples: ``BraTS-GLI-00000-000-t1c`` -> ``t1c``; ``BraTS20_Training_001_flair`` -> ``t2f``;
    ``T1 GD`` -> ``t1c``; ``case7_T2-FLAIR_1`` -> ``t2f``; ``..._seg`` -> None.
    """
    tokens = [t.lower() for t in _SPLIT.split(name) if t]
    while tokens and tokens[-1].isdigit() and len(tokens) > 1 and not tokens[-2].isdigit():
        tokens.pop()  # Slicer's "_1" suffix for repeated names; keep BraTS case numbers
    if any(t in NOT_A_SEQUENCE for t in tokens):
        return None
    for end in range(len(tokens), 0, -1):
        for width in (2, 1):  # "t2 flair", "t1 gd" before "flair", "t1"
            if end - width < 0:
                continue
            word = "".join(tokens[end - width:end])
            if word in SEQUENCE_ALIASES:
                return SEQUENCE_ALIASES[word]
    return None


def assign_sequences(
    node_names: Iterable[str], current: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """Pick a node name for every sequence that has none yet.

    Args:
        node_names: names of the scalar volume nodes in the scene, in scene order.
        current: sequence -> the name already chosen (kept; a None or missing entry is free).

    Returns:
        sequence -> node name, for the free sequences only, first matching node in scene order,
        never a name already used for another sequence.
    """
    current = dict(current or {})
    used = {n for n in current.values() if n}
    chosen: dict[str, str] = {}
    for name in node_names:
        if name in used:
            continue
        key = sequence_of_name(name)
        if key and not current.get(key) and key not in chosen:
            chosen[key] = name
            used.add(name)
    return {k: chosen[k] for k in SEQUENCES if k in chosen}


def safe_case_id(name: str, default: str = "case") -> str:
    """A file-name-safe case id from a node or study name (letters, digits, ``-``; no sequence word).

    The id must not itself end in a sequence or label word, or the engine would read the file
    ``<id>-t1n.nrrd`` ambiguously; such a word is dropped.
    """
    tokens = [t for t in _SPLIT.split(name) if t]
    while tokens and (tokens[-1].lower() in SEQUENCE_ALIASES or tokens[-1].lower() in NOT_A_SEQUENCE):
        tokens.pop()
    cleaned = "-".join(re.sub(r"[^A-Za-z0-9]", "", t) for t in tokens)
    cleaned = re.sub(r"-+", "-", cleaned).strip("-")
    return cleaned[:64] or default


def reference_sequence(sequences: Iterable[str]) -> str:
    """The sequence whose grid the engine's outputs lie on: the first present one in the order
    ``t1n, t1c, t2w, t2f``, as :func:`GliomaMTLLib.io.readers.read_case` chooses it.

    Raises:
        ValueError: no known sequence given.
    """
    present = set(sequences)
    for key in SEQUENCES:
        if key in present:
            return key
    raise ValueError(f"no MR sequence among {sorted(present)}; expected some of {list(SEQUENCES)}")
