"""Segment names, colours and standard terminology for the engine's label values.

Slicer stores a segment's meaning as a terminology entry string
``context~category~type~typeModifier~anatomicContext~region~regionModifier`` where each coded
item is ``scheme^value^meaning``. The codes below are SNOMED CT entries of the DICOM master list
(the ones Slicer's standard terminology offers for tumor compartments): necrosis, edema and a
primary neoplasm, located in the brain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from GliomaMTLLib.labels import ED, ET, LABEL_COLORS, LABEL_NAMES, NCR

CATEGORY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
#: Coded items: (scheme, value, meaning).
ALTERED_STRUCTURE = ("SCT", "49755003", "Morphologically Altered Structure")
BRAIN = ("SCT", "12738006", "Brain")
TYPE_CODES: dict[str, tuple[str, str, str]] = {
    "necrosis": ("SCT", "6574001", "Necrosis"),
    "edema": ("SCT", "79654002", "Edema"),
    "neoplasm": ("SCT", "86049000", "Neoplasm, Primary"),
}
#: Internal label value -> (segment id, type code key).
STANDARD_SEGMENTS: dict[int, tuple[str, str]] = {
    NCR: ("NCR", "necrosis"),
    ED: ("ED", "edema"),
    ET: ("ET", "neoplasm"),
}
_FALLBACK_COLOR = (0.95, 0.45, 0.1)


@dataclass(frozen=True)
class SegmentSpec:
    """How one label value appears as a Slicer segment."""

    label: int
    segment_id: str
    name: str
    color: tuple[float, float, float]
    terminology: str

    def terminology_dict(self) -> dict[str, object]:
        """The terminology in the dict form of ``slicerio`` (``category``, ``type``, ...)."""
        parts = self.terminology.split("~")
        return {
            "contextName": parts[0],
            "category": parts[1].split("^"),
            "type": parts[2].split("^"),
            "anatomicContextName": parts[4],
            "anatomicRegion": parts[5].split("^"),
        }


def _coded(item: tuple[str, str, str] | None) -> str:
    return "^".join(item) if item else "^^"


def terminology_entry(type_key: str) -> str:
    """Slicer terminology entry string for a tumor compartment located in the brain.

    Raises:
        KeyError: unknown ``type_key`` (names the accepted keys).
    """
    if type_key not in TYPE_CODES:
        raise KeyError(f"unknown segment type {type_key!r}; expected one of {sorted(TYPE_CODES)}")
    return "~".join([
        CATEGORY_CONTEXT, _coded(ALTERED_STRUCTURE), _coded(TYPE_CODES[type_key]), _coded(None),
        ANATOMIC_CONTEXT, _coded(BRAIN), _coded(None),
    ])


def segment_specs(label_names: Mapping[int | str, str] | None = None) -> list[SegmentSpec]:
    """Segments of a model's label set, in label order.

    Args:
        label_names: label value -> name as ``model.json`` / ``report.json`` give it (keys may be
            strings). Default: the adult set 1 NCR, 2 ED, 3 ET.

    A label set other than the standard one (the FLAIR-only pediatric model's single ``tumor``
    label) keeps its own names and is coded as a primary neoplasm: the whole tumor is never
    presented as "necrotic core".
    """
    names = {int(k): str(v) for k, v in (label_names or LABEL_NAMES).items()}
    standard = all(LABEL_NAMES.get(v) == n for v, n in names.items())
    specs = []
    for value in sorted(names):
        if value <= 0:
            continue
        if standard and value in STANDARD_SEGMENTS:
            seg_id, type_key = STANDARD_SEGMENTS[value]
            color = LABEL_COLORS[value]
        else:
            seg_id = "".join(ch if ch.isalnum() else "_" for ch in names[value]) or f"label_{value}"
            type_key, color = "neoplasm", _FALLBACK_COLOR
        specs.append(SegmentSpec(value, seg_id, names[value], tuple(float(c) for c in color),  # type: ignore[arg-type]
                                 terminology_entry(type_key)))
    return specs
