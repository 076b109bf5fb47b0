"""Record a reader's correction of a prediction in the correction store (``gliomamtl correct``).

Checks, each a one-line error naming the file or value:

- the corrected label map lies on exactly the case grid (no silent resampling of a correction);
- its values are a BraTS scheme's (2023, or 2020 with ET = 4) and every tumor label is one the
  model predicts (a whole-tumor model knows only label 1);
- each genotype value is a class (or a synonym of one) of a task the project knows;
- the case is not stored already, unless ``replace``.

The number of voxels the reader changed is counted against the prediction the reader corrected:
given as a label file (``prediction``), or else made now with the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from GliomaMTLLib.finetune.store import CorrectionStore, StoreEntry


def parse_genotype(values: Mapping[str, str | None], case: str = "the case") -> dict[str, str]:
    """Task -> class name from what the user typed (``mutant``, ``IDH-mut``, ``1``...); None skipped.

    Raises:
        ValueError: naming the task, the value and the accepted classes.
    """
    from GliomaMTLLib.io import normalize_genotype
    from GliomaMTLLib.labels import GENOTYPE_TASKS

    out: dict[str, str] = {}
    for task, value in values.items():
        if value is None:
            continue
        if task not in GENOTYPE_TASKS:
            raise ValueError(f"unknown genotype task {task!r} for {case}; known tasks: {sorted(GENOTYPE_TASKS)}")
        try:
            name = normalize_genotype(task, value)
        except ValueError as exc:
            raise ValueError(f"{case}: --{task.split('_')[0]} {value!r}: {exc}") from None
        if name is not None:
            out[task] = name
    return out


def read_correction(path: str | os.PathLike, geometry: Any, label_names: Mapping[int, str],
                    reference: str | os.PathLike | None = None) -> np.ndarray:
    """The corrected label map as internal labels on ``geometry``.

    Raises:
        ValueError: the file is on another grid, or holds values the model does not predict.
    """
    from GliomaMTLLib.io import read_label_map
    from GliomaMTLLib.io.geometry import Geometry
    from GliomaMTLLib.io.validation import describe_grid, read_sitk_image

    path = Path(path)
    image = read_sitk_image(path)
    own = Geometry.from_image(image)
    if not own.same_grid(geometry):
        raise ValueError(
            f"corrected label map {path} is on another grid than the case "
            f"({describe_grid(own)} vs {describe_grid(geometry)}{f' of {reference}' if reference else ''}); "
            "save the correction on the case's grid"
        )
    labels, _ = read_label_map(path)
    present = {int(v) for v in np.unique(labels)} - {0}
    unknown = sorted(present - set(label_names))
    if unknown:
        raise ValueError(
            f"corrected label map {path} holds label value(s) {unknown} the model does not predict "
            f"(its labels: {', '.join(f'{k} {v}' for k, v in sorted(label_names.items()))})"
        )
    return labels


def add_correction(
    case_source: Any,
    labels_path: str | os.PathLike,
    *,
    store: CorrectionStore | str | os.PathLike | None = None,
    model: Any = None,
    genotype: Mapping[str, str | None] | None = None,
    prediction: str | os.PathLike | np.ndarray | None = None,
    case_id: str | None = None,
    replace: bool = False,
) -> StoreEntry:
    """Check a correction and store it with its case (see the module docstring).

    Args:
        case_source: a case folder or sequence files (as for ``gliomamtl predict``).
        labels_path: the corrected label map (NIfTI / NRRD, BraTS 2023 or 2020 values).
        store: the store (default :func:`GliomaMTLLib.paths.store_dir`).
        model: the model whose prediction was corrected (name, version id, folder or bundle).
        genotype: task -> value the reader knows (``{"idh": "mutant"}``).
        prediction: the label map the reader started from (file or internal-label array on the
            case grid); None: predict it now with ``model``.
        case_id: overrides the case id read from the file names.
        replace: replace an entry of the same case.

    Raises:
        ValueError (incl. `StoreError`, `CaseInputError`): naming the file or value at fault.
    """
    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.inference.predictor import DEFAULT_MODEL
    from GliomaMTLLib.io.readers import read_case, resolve_case_files
    from GliomaMTLLib.labels import SEQUENCES

    store = store if isinstance(store, CorrectionStore) else CorrectionStore(store)
    bundle = model if hasattr(model, "meta") else load_bundle(model or DEFAULT_MODEL)
    files, default_id, folder = resolve_case_files(case_source)
    sequence_files = {k: v for k, v in files.items() if k in SEQUENCES}
    case_id = case_id or default_id
    genotype_names = parse_genotype(genotype or {}, f"case {case_id}")
    store.check_can_add(case_id, replace)  # fail before any work
    case = read_case(sequence_files, case_id=case_id, required=bundle.sequences)
    reference = sequence_files[case.sequences[0]]
    labels = read_correction(labels_path, case.geometry, bundle.labels, reference)
    if prediction is None:
        from GliomaMTLLib.inference import Predictor

        before = Predictor(bundle, device="cpu").predict(case).labels
    elif isinstance(prediction, np.ndarray):
        before = prediction
    else:
        before = read_correction(prediction, case.geometry, {1: "", 2: "", 3: ""}, reference)
    if before.shape != labels.shape:
        raise ValueError(f"prediction of shape {before.shape} does not match the case grid {labels.shape}")
    changed = int(np.count_nonzero(before != labels))
    info = {"name": bundle.name, "version": bundle.version, "sha256": bundle.meta["weights"].get("sha256"),
            "folder": str(bundle.folder)}
    sources = {**{k: str(v) for k, v in sequence_files.items()}, "labels": str(labels_path)}
    return store.add(case_id, sequence_files, labels, case.geometry, genotype=genotype_names, model=info,
                     changed_voxels=changed, source_files=sources, replace=replace)
