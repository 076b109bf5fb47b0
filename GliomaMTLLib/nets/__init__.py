"""GliomaMTLLib.nets: the multi-task network family (segmentation, distance map, genotype heads).

One family serves both stages of the inference cascade:

* `localizer_config` -- seg path only, few channels, whole brain at 2-4 mm;
* `crop_config` -- the multi-task network on a fixed crop (96^3-128^3) around the tumor.

See `GliomaMTLLib.nets.multitask` for the architecture, the softmax-over-labels decision and the
input size constraint, and `GliomaMTLLib.nets.config` for the serialised form (``model.json``).
Forward times: ``python -m GliomaMTLLib.nets.benchmark`` (a table, never a timed test).
"""

from GliomaMTLLib.nets.config import (
    HEAD_POOLS,
    HEAD_STYLES,
    NetConfig,
    crop_config,
    default_regions,
    localizer_config,
)
from GliomaMTLLib.nets.cpu import configure_cpu_inference, tune_malloc_for_large_tensors
from GliomaMTLLib.nets.multitask import (
    MultiTaskNet,
    build_network,
    count_parameters,
    global_pool,
    parameter_megabytes,
)
from GliomaMTLLib.nets.regions import label_map, region_probabilities, seg_probabilities

__all__ = [
    "HEAD_POOLS",
    "HEAD_STYLES",
    "MultiTaskNet",
    "NetConfig",
    "build_network",
    "configure_cpu_inference",
    "count_parameters",
    "crop_config",
    "default_regions",
    "global_pool",
    "label_map",
    "localizer_config",
    "parameter_megabytes",
    "region_probabilities",
    "seg_probabilities",
    "tune_malloc_for_large_tensors",
]
