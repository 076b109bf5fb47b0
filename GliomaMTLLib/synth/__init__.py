"""Synthetic glioma phantoms: MNI152 anatomy, tumours with genotype-linked appearance, four MR
contrasts with wide domain randomisation, written as BraTS 2023 cohorts.

Main entry points:
    generate_case(seed, cohort="adult", small=False, case_id=None) -> Case
    generate_cohort(out_dir, n, cohort="adult", seed=0, small=False, workers=1, progress=None) -> Path
    synthesize(...) -> SynthResult   (the case plus the maps and parameters that made it)
    save_preview(cases, png) / preview_folder(folder, png)

Everything is seeded: the same seed gives identical arrays (for one ``GENERATOR_VERSION``). Requires nilearn (its packaged MNI152
templates; no download).
"""

from GliomaMTLLib.synth.cohort import (LABELS_CSV_COLUMNS, case_id_for, case_seed, generate_cohort,
                                       write_case_files)
from GliomaMTLLib.synth.generator import FULL_GRID, GENERATOR_VERSION, SMALL_GRID, SynthResult, generate_case, synthesize
from GliomaMTLLib.synth.preview import preview_folder, save_preview

__all__ = [
    "FULL_GRID",
    "GENERATOR_VERSION",
    "LABELS_CSV_COLUMNS",
    "SMALL_GRID",
    "SynthResult",
    "case_id_for",
    "case_seed",
    "generate_case",
    "generate_cohort",
    "preview_folder",
    "save_preview",
    "synthesize",
    "write_case_files",
]
