"""`Prediction`: everything the pipeline returns for one case, on the case's input grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from GliomaMTLLib import __version__
from GliomaMTLLib.io.geometry import Geometry

REPORT_FORMAT = "gliomamtl-report/1"


@dataclass
class Prediction:
    """Result of :meth:`GliomaMTLLib.inference.Predictor.predict` for one case.

    Attributes:
        case_id: the case's identifier.
        geometry: the input grid (``case.geometry``); every array below lies on it exactly.
        labels: uint8 (z, y, x) internal labels (values of ``label_names``, 0 = background), after
            post-processing.
        label_names: label value -> name (``model.json`` ``"labels"``).
        probabilities: region (``WT``, ``TC``, ``ET``, only those of the label set) -> float32
            (z, y, x) in [0, 1]: sums of the network's softmax label probabilities, linearly
            resampled; not post-processed.
        genotype: task -> class name -> calibrated probability (softmax(logits / T)).
        volumes_ml: region and label name -> volume in ml (voxel count x voxel volume).
        timings: stage -> seconds (``read``, ``preprocess``, ``localize``, ``main``, ``resample``,
            ``postprocess``, and ``write`` when written by :func:`write_prediction`).
        warnings: plain-language notes for the user (no tumor found, inputs unlike the training
            data, GPU memory fallbacks, post-processing changes).
        model: ``name``, ``version``, ``sha256`` and ``folder`` of the bundle.
        device: where the networks ran (``cpu``, ``cuda:0``).
        tumor: ``found`` (a tumor is in the final label map), ``center_mm`` (its centre of mass,
            LPS mm, or None) and ``windows`` (main-stage network windows run).
        sources: sequence key -> input file, when read from files.
    """

    case_id: str
    geometry: Geometry
    labels: np.ndarray
    label_names: dict[int, str]
    probabilities: dict[str, np.ndarray]
    genotype: dict[str, dict[str, float]]
    volumes_ml: dict[str, float]
    timings: dict[str, float]
    warnings: list[str]
    model: dict[str, str]
    device: str = "cpu"
    tumor: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)

    @property
    def genotype_prediction(self) -> dict[str, str]:
        """Most probable class per task."""
        return {task: max(probs, key=probs.get) for task, probs in self.genotype.items()}  # type: ignore[arg-type]

    def report(self, outputs: dict[str, Path] | None = None, label_convention: str = "2023") -> dict[str, Any]:
        """The JSON-ready report (``report.json``)."""
        return {
            "format": REPORT_FORMAT,
            "gliomamtl_version": __version__,
            "case_id": self.case_id,
            "model": dict(self.model),
            "device": self.device,
            "input_files": {k: str(v) for k, v in self.sources.items()},
            "output_files": {k: str(v) for k, v in (outputs or {}).items()},
            "grid": {
                "size_xyz": list(self.geometry.size),
                "spacing_mm": list(self.geometry.spacing),
                "origin_mm": list(self.geometry.origin),
                "direction": list(self.geometry.direction),
            },
            "labels": {str(v): n for v, n in sorted(self.label_names.items())},
            "label_convention": label_convention,
            "genotype": {
                task: {"probabilities": dict(probs), "predicted": max(probs, key=probs.get)}  # type: ignore[arg-type]
                for task, probs in self.genotype.items()
            },
            "volumes_ml": {k: round(v, 4) for k, v in self.volumes_ml.items()},
            "tumor": self.tumor,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }
