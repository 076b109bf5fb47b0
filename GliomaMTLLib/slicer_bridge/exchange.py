"""The files a panel job exchanges with the engine, under one temporary job folder.

::

    <job>/input/<case>-t1n.nrrd ...     sequences written from Slicer (BraTS 2023 names, so the
                                        engine identifies each file by its name)
    <job>/output/<case>_seg.nii.gz      predict: labels on the exact grid of the input
    <job>/output/<case>_seg.seg.nrrd    predict --seg-nrrd: the same labels as a Slicer segmentation
    <job>/output/report.json            predict: written last
    <job>/explain/explain.json          explain: summary; heatmaps <case>_ig_<task>_<sequence>.nii.gz
    <job>/correction/<case>_corrected.nrrd  label map exported from the edited segmentation

NRRD keeps Slicer's IJK-to-RAS exactly (as LPS in the header); the engine writes its outputs on
the grid of the input it read, so nothing is resampled on the way out or back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INPUT_EXTENSION = ".nrrd"


@dataclass(frozen=True)
class JobFiles:
    """File names of one case's jobs under ``root``."""

    root: Path
    case_id: str

    def __post_init__(self) -> None:
        if not self.case_id or any(c in self.case_id for c in "/\\: "):
            raise ValueError(f"case id {self.case_id!r} cannot be used in a file name")
        object.__setattr__(self, "root", Path(self.root))

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    def input_file(self, sequence: str) -> Path:
        """Where the panel writes one sequence (``t1n`` ...) for the engine to read."""
        return self.input_dir / f"{self.case_id}-{sequence}{INPUT_EXTENSION}"

    def written_sequences(self) -> list[str]:
        """Sequences whose input file is in place, in the engine's order (``t1n, t1c, t2w, t2f``)."""
        from GliomaMTLLib.labels import SEQUENCES

        return [s for s in SEQUENCES if self.input_file(s).is_file()]

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def seg_file(self) -> Path:
        return self.output_dir / f"{self.case_id}_seg.nii.gz"

    @property
    def seg_nrrd_file(self) -> Path:
        return self.output_dir / f"{self.case_id}_seg.seg.nrrd"

    @property
    def report_file(self) -> Path:
        return self.output_dir / "report.json"

    @property
    def explain_dir(self) -> Path:
        return self.root / "explain"

    @property
    def explain_json(self) -> Path:
        return self.explain_dir / "explain.json"

    def heatmap_file(self, task: str, sequence: str) -> Path:
        """Heatmap of ``task`` for one sequence (or ``combined``) as ``gliomamtl explain`` names it."""
        return self.explain_dir / f"{self.case_id}_ig_{task}_{sequence}.nii.gz"

    @property
    def correction_file(self) -> Path:
        return self.root / "correction" / f"{self.case_id}_corrected.nrrd"
