"""Test fixtures: random-weight model bundles and small geometric phantom cases.

Never for predictions. :func:`make_random_bundle` writes a complete, valid bundle (``model.json`` + safetensors with a
correct sha256) whose networks have random weights. Tests build tiny ones in a temporary folder so
that they do not depend on the shipped weights; ``scripts/bench_predict.py`` builds one with the
shipped architecture (:data:`SHIPPED_LIKE`) to time the pipeline before real weights exist.
:func:`phantom_case` builds a tiny case (an ellipsoid "brain" with CSF, grey and white matter
and a tumor blob) in milliseconds, with textbook contrasts per sequence, on any grid.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from GliomaMTLLib.bundle import ModelBundle, save_bundle
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.labels import GENOTYPE_TASKS, LABEL_NAMES, SEQUENCES
from GliomaMTLLib.nets import NetConfig

#: Architecture and windows of the intended shipped adult bundle (``training/configs/gliomamtl_adult.yaml``),
#: used by ``scripts/bench_predict.py`` when no bundle is shipped yet.
SHIPPED_LIKE: dict[str, Any] = {
    "localizer_features": (8, 16, 32, 64),
    "input_size": (48, 48, 48),
    "localizer_spacing": (4.0, 4.0, 4.0),
    "main_features": (16, 32, 64, 128),
    "crop_size": (96, 96, 96),
    "main_spacing": (1.5, 1.5, 1.5),
    "head_style": "seggated",
    "main_network": {"gate_features": (8, 16, 32, 64), "head_hidden": 64, "head_pool": "avgmax", "dropout": 0.2},
    "postprocess": {"et_min_ml": 0.5, "min_component_ml": 0.1},
}


def random_bundle_meta(
    *,
    name: str = "random_test_model",
    sequences: Sequence[str] = SEQUENCES,
    labels: Mapping[int, str] | None = None,
    tasks: Sequence[str] = ("idh", "codel_1p19q"),
    main_features: Sequence[int] = (4, 8),
    crop_size: Sequence[int] = (16, 16, 16),
    main_spacing: Sequence[float] | None = None,
    localizer: bool = True,
    localizer_features: Sequence[int] = (4, 8),
    input_size: Sequence[int] = (16, 16, 16),
    localizer_spacing: Sequence[float] | None = (4.0, 4.0, 4.0),
    localizer_options: Mapping[str, Any] | None = None,
    head_style: str = "bottleneck",
    main_network: Mapping[str, Any] | None = None,
    postprocess: Mapping[str, float] | None = None,
    calibration: Mapping[str, float] | None = None,
    required_sequences: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``model.json`` content of a random bundle (see :func:`make_random_bundle`); with
    ``required_sequences`` the other ``sequences`` are declared optional."""
    labels = dict(LABEL_NAMES) if labels is None else {int(k): v for k, v in labels.items()}
    n_classes = max(labels) + 1
    main_net = NetConfig(
        in_channels=len(sequences),
        num_seg_classes=n_classes,
        features=tuple(main_features),
        tasks={t: GENOTYPE_TASKS[t] for t in tasks},
        head_style=head_style,
        **{"head_hidden": 8, **dict(main_network or {})},
    )
    stages: dict[str, Any] = {
        "main": {
            "network": main_net.to_dict(),
            "preprocess": {"spacing": list(main_spacing) if main_spacing else None, "crop_margin_mm": 0.0},
            "crop_size": list(crop_size),
        }
    }
    if localizer:
        loc_net = NetConfig(in_channels=len(sequences), num_seg_classes=n_classes, features=tuple(localizer_features))
        stages = {
            "localizer": {
                "network": loc_net.to_dict(),
                "preprocess": {"spacing": list(localizer_spacing) if localizer_spacing else None},
                "input_size": list(input_size),
                **dict(localizer_options or {}),
            },
            **stages,
        }
    return {
        "name": name,
        "version": "0.0.0-random",
        "description": "RANDOM WEIGHTS - for tests and benchmarks only; predictions are meaningless",
        "sequences": list(sequences),
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "tasks": {t: list(GENOTYPE_TASKS[t]) for t in tasks},
        "stages": stages,
        "postprocess": dict(postprocess or {}),
        "calibration": dict(calibration or {}),
        "training": {"data": "none (random initialization)"},
        "metrics": {},
        **({"required_sequences": list(required_sequences),
            "optional_sequences": [q for q in sequences if q not in required_sequences]}
           if required_sequences is not None else {}),
    }


def make_random_bundle(
    folder: str | os.PathLike, *, seed: int = 0, overwrite: bool = False, **meta_kwargs: Any
) -> ModelBundle:
    """Write a bundle with random weights (seeded) to ``folder`` and return it loaded.

    Keyword arguments go to :func:`random_bundle_meta` (sequences, labels, tasks, sizes, spacings).
    """
    from GliomaMTLLib.nets import build_network  # MONAI: only when a bundle is written

    meta = random_bundle_meta(**meta_kwargs)
    torch.manual_seed(seed)
    state = {stage: build_network(spec["network"]).state_dict() for stage, spec in meta["stages"].items()}
    return save_bundle(folder, meta, state, card="Random weights for tests and benchmarks. Not a model.\n",
                       overwrite=overwrite)


#: Textbook contrast of each compartment (arbitrary units) in t1n, t1c, t2w, t2f: CSF dark on T1
#: and FLAIR but bright on T2, white matter bright on T1, enhancing rim bright on T1c only.
PHANTOM_CONTRAST: dict[str, tuple[float, float, float, float]] = {
    "csf": (0.25, 0.25, 1.9, 0.15),
    "gm": (0.7, 0.7, 0.75, 0.75),
    "wm": (1.0, 1.0, 0.5, 0.6),
    "edema": (0.55, 0.55, 1.2, 1.4),
    "ncr": (0.35, 0.35, 1.5, 1.0),
    "et": (0.6, 2.2, 1.0, 1.1),
}


def phantom_case(
    geometry: Geometry,
    *,
    tumor_center: Sequence[float] | None = None,
    tumor_radius: float = 5.0,
    sequences: Sequence[str] = SEQUENCES,
    seed: int = 0,
    case_id: str = "phantom",
    noise: float = 0.03,
) -> Case:
    """A small synthetic case on ``geometry`` (any spacing / direction), with its true labels.

    The brain is an ellipsoid filling 80 % of the array (in voxel units) with a CSF rim, grey
    matter and white matter; the tumor is a sphere of ``tumor_radius`` voxels at ``tumor_center``
    (z, y, x voxel indices; default: the centre offset by a quarter of the size) made of an NCR
    core, an ET rim and a shell of edema (labels 1, 3, 2). Intensities follow
    :data:`PHANTOM_CONTRAST` plus Gaussian noise, scaled by 1000; background is exactly 0.
    """
    rng = np.random.default_rng(seed)
    shape = np.asarray(geometry.shape)
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    c = (shape - 1) / 2.0
    r = np.sqrt(sum(((g - ci) / (0.4 * n)) ** 2 for g, ci, n in zip((zz, yy, xx), c, shape)))
    center = np.asarray(tumor_center if tumor_center is not None else c + shape / 8.0, dtype=np.float32)
    d = np.sqrt(sum((g - ci) ** 2 for g, ci in zip((zz, yy, xx), center)))
    brain = r <= 1.0
    compartments = {
        "csf": brain & (r > 0.93),
        "gm": brain & (r > 0.72) & (r <= 0.93),
        "wm": brain & (r <= 0.72),
    }
    label = np.zeros(tuple(shape), dtype=np.uint8)
    label[brain & (d <= tumor_radius * 1.6)] = 2
    label[brain & (d <= tumor_radius)] = 3
    label[brain & (d <= tumor_radius * 0.6)] = 1
    compartments.update(edema=label == 2, ncr=label == 1, et=label == 3)
    images = {}
    for i, key in enumerate(SEQUENCES):
        if key not in sequences:
            continue
        image = np.zeros(tuple(shape), dtype=np.float32)
        for name in ("csf", "gm", "wm", "edema", "ncr", "et"):
            image[compartments[name]] = PHANTOM_CONTRAST[name][i]
        image[brain] += rng.normal(0.0, noise, int(brain.sum())).astype(np.float32)
        images[key] = np.where(brain, np.maximum(image, 0.01) * 1000.0, 0.0).astype(np.float32)
    return Case(case_id=case_id, images=images, geometry=geometry, label=label)
