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

# The torch/MONAI modules load on first use (PEP 562): `NetConfig` and `default_regions` are
# needed where no network is built (command line, an ONNX-cached prediction), and importing MONAI
# costs seconds. Name -> defining module.
_LAZY = {
    "configure_cpu_inference": "cpu", "tune_malloc_for_large_tensors": "cpu",
    "MultiTaskNet": "multitask", "build_network": "multitask", "count_parameters": "multitask",
    "global_pool": "multitask", "parameter_megabytes": "multitask",
    "label_map": "regions", "region_probabilities": "regions", "seg_probabilities": "regions",
}


def __getattr__(name: str):  # noqa: ANN202
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


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
