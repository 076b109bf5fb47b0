"""GliomaMTLLib.inference: run a model bundle on a case (the cascade), post-process, report.

Typical use::

    from GliomaMTLLib.inference import Predictor, write_prediction
    predictor = Predictor("gliomamtl_adult", device="auto")
    prediction = predictor.predict_files("BraTS-GLI-00000-000/")   # folder, files or mapping
    write_prediction(prediction, "out/")                           # seg, report.json, report.png

Every output of a :class:`Prediction` lies on the exact grid of the input sequences.
"""

from GliomaMTLLib.inference.checks import input_warnings
from GliomaMTLLib.inference.device import DeviceError, resolve_device
from GliomaMTLLib.inference.postprocess import PostprocessConfig, apply_postprocess, regions_for_labels, volumes_ml
from GliomaMTLLib.inference.prediction import Prediction
from GliomaMTLLib.inference.predictor import DEFAULT_MODEL, Predictor
from GliomaMTLLib.inference.fixtures import make_random_bundle
from GliomaMTLLib.inference.report import write_prediction

__all__ = [
    "DEFAULT_MODEL",
    "DeviceError",
    "PostprocessConfig",
    "Prediction",
    "Predictor",
    "apply_postprocess",
    "input_warnings",
    "make_random_bundle",
    "regions_for_labels",
    "resolve_device",
    "volumes_ml",
    "write_prediction",
]
