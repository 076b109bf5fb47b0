"""`Prediction`: everything the pipeline returns for one case, on the case's input grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from GliomaMTLLib import __version__
from GliomaMTLLib.io.geometry import Geometry

REPORT_FORMAT = "gliomamtl-report/1"


class BoxedVolumes(Mapping[str, np.ndarray]):
    """Name -> volume on a grid of ``shape``, stored only inside a box (``fill`` elsewhere).

    Reading an entry builds the full array (one at a time: a consumer that writes each region
    probability to a file never holds them all); a 512x512x400 input then costs the tumor box,
    not 420 MB per region. Behaves as a read-only ``dict`` of full arrays otherwise.
    """

    def __init__(self, shape: tuple[int, int, int], slices: tuple[slice, ...], values: Mapping[str, np.ndarray],
                 fill: float = 0.0, dtype: Any = np.float32) -> None:
        self.shape, self.slices, self.fill, self.dtype = tuple(shape), tuple(slices), fill, dtype
        self._values = dict(values)

    def __getitem__(self, name: str) -> np.ndarray:
        full = np.full(self.shape, self.fill, dtype=self.dtype)
        full[self.slices] = self._values[name]
        return full

    def box_values(self, name: str) -> np.ndarray:
        """The stored part (inside :attr:`slices`) of one volume, not copied."""
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


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
            resampled; not post-processed. A read-only mapping (:class:`BoxedVolumes`): each
            access builds that region's full array.
        genotype: task -> class name -> calibrated probability (the genotype path's own calibration,
            or softmax(logits / T) for a CNN head).
        volumes_ml: region and label name -> volume in ml (voxel count x voxel volume).
        timings: stage -> seconds (``read``, ``preprocess``, ``localize``, ``main``, ``resample``,
            ``postprocess``, and ``write`` when written by :func:`write_prediction`).
        warnings: plain-language notes for the user (no tumor found, inputs unlike the training
            data, GPU memory fallbacks, post-processing changes).
        model: ``name``, ``version``, ``sha256`` and ``folder`` of the bundle, ``test_time_flips``
            (bool) and ``decoding`` (:meth:`GliomaMTLLib.inference.decoding.Decoding.to_dict`).
        device: where the networks ran (``cpu``, ``cuda:0``).
        tumor: ``found`` (a tumor is in the final label map), ``center_mm`` (its centre of mass,
            LPS mm, or None) and ``windows`` (main-stage network windows run).
        sources: sequence key -> input file, when read from files.
    """

    case_id: str
    geometry: Geometry
    labels: np.ndarray
    label_names: dict[int, str]
    probabilities: Mapping[str, np.ndarray]
    genotype: dict[str, dict[str, float]]
    volumes_ml: dict[str, float]
    timings: dict[str, float]
    warnings: list[str]
    model: dict[str, Any]
    device: str = "cpu"
    tumor: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)
    #: task -> call as displayed everywhere (:mod:`GliomaMTLLib.inference.genotype_call`): the model card's
    #: status (``available``, ``reason``), ``probabilities`` and ``call``; empty = every task available.
    genotype_calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    def calls(self) -> dict[str, dict[str, Any]]:
        """:attr:`genotype_calls`, or calls made from :attr:`genotype` (every task available) when unset."""
        from GliomaMTLLib.inference.genotype_call import genotype_calls

        return self.genotype_calls or genotype_calls(self.genotype)

    @property
    def genotype_prediction(self) -> dict[str, str]:
        """Most probable class per task."""
        return {task: max(probs, key=probs.get) for task, probs in self.genotype.items()}  # type: ignore[arg-type]

    def report(self, outputs: dict[str, Path] | None = None, label_convention: str = "2023") -> dict[str, Any]:
        """The JSON-ready report (``report.json``)."""
        from GliomaMTLLib.inference.genotype_call import report_entry
        from GliomaMTLLib.io.label_schemes import label_key

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
            "labels": label_key(self.label_names, label_convention),  # values as written in the file
            "label_convention": label_convention,
            "genotype": {task: report_entry(entry) for task, entry in self.calls().items()},
            "volumes_ml": {k: round(v, 4) for k, v in self.volumes_ml.items()},
            "tumor": self.tumor,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }
