"""GliomaMTLLib.preprocess: canonical reorientation, resampling, brain crop, z-score, and the exact inverse.

Typical use::

    pre = preprocess(case, model.sequences, PreprocessConfig(spacing=(1.0, 1.0, 1.0)))
    probs = network(pre.image)                                   # (C, z, y, x) on pre.geometry
    labels = labels_from_probabilities_on_input_grid(probs, pre.record)   # on case.geometry

The cascade's fixed-size crops around the tumor use :func:`crop_around` / :func:`uncrop`, and
:func:`crop_geometry` for the grid of such a crop.
"""

from GliomaMTLLib.preprocess.crop import CropBox, bounding_box, crop, crop_around, crop_geometry, uncrop
from GliomaMTLLib.preprocess.normalize import NORMALIZATIONS, zscore
from GliomaMTLLib.preprocess.pipeline import (
    PreprocessConfig,
    Preprocessed,
    SpatialRecord,
    labels_from_probabilities_on_input_grid,
    preprocess,
    preprocess_label,
    to_input_box,
    to_input_grid,
    window_record,
)
from GliomaMTLLib.preprocess.spatial import (
    Reorientation,
    orientation_matrix,
    physical_to_continuous_index,
    reorient_geometry,
    reorientation_for,
    resample,
    resampled_geometry,
)

__all__ = [
    "CropBox",
    "NORMALIZATIONS",
    "PreprocessConfig",
    "Preprocessed",
    "Reorientation",
    "SpatialRecord",
    "bounding_box",
    "crop",
    "crop_around",
    "crop_geometry",
    "labels_from_probabilities_on_input_grid",
    "orientation_matrix",
    "physical_to_continuous_index",
    "preprocess",
    "preprocess_label",
    "reorient_geometry",
    "reorientation_for",
    "resample",
    "resampled_geometry",
    "to_input_box",
    "to_input_grid",
    "window_record",
    "uncrop",
    "zscore",
]
