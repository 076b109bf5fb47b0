"""GliomaMTLLib.inference: run a model bundle on a case (the cascade), post-process, report.

Typical use::

    from GliomaMTLLib.inference import Predictor, write_prediction
    predictor = Predictor("gliomamtl_adult", device="auto")
    prediction = predictor.predict_files("BraTS-GLI-00000-000/")   # folder, files or mapping
    write_prediction(prediction, "out/")                           # seg, report.json, report.png

Every output of a :class:`Prediction` lies on the exact grid of the input sequences.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> module that defines it. Imported on first use (PEP 562), so that importing
# `GliomaMTLLib.inference.options` (the command line's choices) does not import torch.
_EXPORTS: dict[str, str] = {
    "input_warnings": "checks",
    "DeviceError": "device",
    "resolve_device": "device",
    "PostprocessConfig": "postprocess",
    "apply_postprocess": "postprocess",
    "regions_for_labels": "postprocess",
    "volumes_ml": "postprocess",
    "Prediction": "prediction",
    "DEFAULT_MODEL": "options",
    "Predictor": "predictor",
    "make_random_bundle": "fixtures",
    "write_prediction": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from GliomaMTLLib.inference.checks import input_warnings
    from GliomaMTLLib.inference.device import DeviceError, resolve_device
    from GliomaMTLLib.inference.fixtures import make_random_bundle
    from GliomaMTLLib.inference.options import DEFAULT_MODEL
    from GliomaMTLLib.inference.postprocess import PostprocessConfig, apply_postprocess, regions_for_labels, volumes_ml
    from GliomaMTLLib.inference.prediction import Prediction
    from GliomaMTLLib.inference.predictor import Predictor
    from GliomaMTLLib.inference.report import write_prediction
