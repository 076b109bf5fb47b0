"""Separate tumor cores: a sign the genotype path was never trained for.

A glioma has one tumor core (necrosis and enhancing rim), rarely two or three (multifocal);
several separate ring-enhancing cores are the classic sign of metastases, which the training
phantoms do not contain. The Predictor counts the cores of the main stage's segmentation, on the
main preprocessed grid (the grid the genotype path is fitted on), and the radiological-feature
path withholds the genotype when the count exceeds what its development phantoms showed
(``model.json`` ``genotype_paths[i]["lesions"]``, fitted by ``GliomaMTLLib.train.genotype_fit``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

#: Smallest core counted (ml): smaller islands are segmentation noise, not lesions.
MIN_CORE_ML = 0.2


def core_lesion_count(probs: np.ndarray, core_labels: Sequence[int], voxel_ml: float,
                      min_ml: float = MIN_CORE_ML) -> int:
    """Number of separate tumor cores of at least ``min_ml`` in softmax ``probs`` (L, z, y, x).

    A voxel is core when its most probable label is one of ``core_labels`` (e.g. NCR and ET);
    cores are 26-connected components.

    Raises:
        ValueError: ``core_labels`` outside ``1 .. L-1`` or a non-positive ``voxel_ml``.
    """
    n_labels = probs.shape[0]
    if not core_labels or any(not 1 <= int(v) < n_labels for v in core_labels):
        raise ValueError(f"core labels {list(core_labels)} must lie in 1..{n_labels - 1}")
    if not voxel_ml > 0:
        raise ValueError(f"voxel volume must be positive, got {voxel_ml} ml")
    core = np.isin(np.argmax(probs, axis=0), [int(v) for v in core_labels])
    if not core.any():
        return 0
    components, n = ndimage.label(core, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(components.ravel())[1:]
    return int(np.count_nonzero(sizes * voxel_ml >= min_ml))
