"""GliomaMTLLib.losses: segmentation, weak-label, distance-map and genotype losses, task weighting.

`build_loss(recipe)` returns the whole multi-task criterion; see `GliomaMTLLib.losses.criterion`
for the recipe keys and the batch contract, and `GliomaMTLLib.losses.weighting` for the four
weighting strategies of the seed papers (fixed 003, linear 004, uncertainty 000, dynamic 001).
"""

from GliomaMTLLib.losses.criterion import MultiTaskCriterion, build_loss
from GliomaMTLLib.losses.distance import DistanceMapLoss, distance_map_target
from GliomaMTLLib.losses.genotype import MaskedCrossEntropy
from GliomaMTLLib.losses.segmentation import (
    SEG_LOSS_TYPES,
    CategoricalDiceFocalLoss,
    CrossEntropySegLoss,
    RegionBinaryLoss,
    make_seg_loss,
    region_log_probabilities,
)
from GliomaMTLLib.losses.weighting import (
    WEIGHTING_TYPES,
    DynamicWeighting,
    FixedWeighting,
    LinearWeighting,
    UncertaintyWeighting,
    build_weighting,
)

__all__ = [
    "SEG_LOSS_TYPES",
    "WEIGHTING_TYPES",
    "CategoricalDiceFocalLoss",
    "CrossEntropySegLoss",
    "DistanceMapLoss",
    "DynamicWeighting",
    "FixedWeighting",
    "LinearWeighting",
    "MaskedCrossEntropy",
    "MultiTaskCriterion",
    "RegionBinaryLoss",
    "UncertaintyWeighting",
    "build_loss",
    "build_weighting",
    "distance_map_target",
    "make_seg_loss",
    "region_log_probabilities",
]
