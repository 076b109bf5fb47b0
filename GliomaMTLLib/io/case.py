"""`Case`: one patient's co-registered MR sequences on one grid, with optional labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.labels import GENOTYPE_TASKS, SEQUENCES


def check_age(value: Any, where: str = "age") -> float:
    """``value`` as an age in years.

    Raises:
        ValueError: not a number between 0 and 120 (the message names ``where`` and the value).
    """
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: patient age must be a number of years, got {value!r}") from None
    if not 0.0 <= age <= 120.0:  # also rejects NaN
        raise ValueError(f"{where}: patient age must lie between 0 and 120 years, got {value!r}")
    return age


@dataclass
class Case:
    """Sequences of one patient, all on ``geometry`` (the reference sequence's grid).

    Attributes:
        case_id: subject identifier (BraTS id, folder name, ...).
        images: sequence key (``t1n``, ``t1c``, ``t2w``, ``t2f``) -> float32 array (z, y, x).
        geometry: grid of every array in this case.
        label: internal labels (0 bg, 1 NCR, 2 ED, 3 ET) as uint8 (z, y, x), or None.
        genotype: task -> class name (e.g. ``{"idh": "mutant"}``); absent task = unknown.
        survival_days, event: overall survival and whether death was observed, if known.
        age_years: the patient's age at the scan, if known (a genotype input of models that have
            one; GliomaMTLLib.genotype.model).
        sources: sequence key (and ``"label"``) -> file it was read from.
        warnings: things the reader did that the user should know (a sequence resampled onto
            the reference grid, a 4D image squeezed), one sentence each.
    """

    case_id: str
    images: dict[str, np.ndarray]
    geometry: Geometry
    label: np.ndarray | None = None
    genotype: dict[str, str] = field(default_factory=dict)
    survival_days: float | None = None
    event: bool | None = None
    sources: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    age_years: float | None = None

    def __post_init__(self) -> None:
        if self.age_years is not None:
            self.age_years = check_age(self.age_years, f"case {self.case_id}")
        for key, array in self.images.items():
            if key not in SEQUENCES:
                raise ValueError(f"case {self.case_id}: unknown sequence key {key!r}; expected {SEQUENCES}")
            if array.shape != self.geometry.shape:
                raise ValueError(
                    f"case {self.case_id}: sequence {key} has shape {array.shape}, grid is {self.geometry.shape}"
                )
        if self.label is not None and self.label.shape != self.geometry.shape:
            raise ValueError(
                f"case {self.case_id}: label shape {self.label.shape} does not match grid {self.geometry.shape}"
            )
        for task, value in self.genotype.items():
            if task not in GENOTYPE_TASKS or value not in GENOTYPE_TASKS[task]:
                raise ValueError(
                    f"case {self.case_id}: genotype {task}={value!r} is not one of "
                    f"{GENOTYPE_TASKS.get(task, 'the known tasks ' + str(sorted(GENOTYPE_TASKS)))}"
                )

    @property
    def sequences(self) -> tuple[str, ...]:
        """Present sequence keys, in canonical channel order."""
        return tuple(s for s in SEQUENCES if s in self.images)

    def stack(self, sequences: tuple[str, ...] | list[str] | None = None) -> np.ndarray:
        """Channels-first float32 array (C, z, y, x) of the requested sequences, in that order.

        Raises:
            KeyError: naming the missing sequence(s).
        """
        wanted = tuple(sequences) if sequences is not None else self.sequences
        missing = [s for s in wanted if s not in self.images]
        if missing:
            raise KeyError(
                f"case {self.case_id} lacks required sequence(s) {missing}; it has {list(self.sequences)}"
            )
        return np.stack([self.images[s].astype(np.float32, copy=False) for s in wanted])
