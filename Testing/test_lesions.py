"""Separate tumor cores (GliomaMTLLib.inference.lesions) and the out-of-distribution warning
they drive in the radiological-feature path."""

from __future__ import annotations

import numpy as np
import pytest

from GliomaMTLLib.genotype.fit import fit_lesion_limit
from GliomaMTLLib.inference.lesions import core_lesion_count


def _probs(shape=(40, 40, 40)) -> np.ndarray:
    p = np.zeros((4, *shape), np.float32)
    p[0] = 1.0
    return p


def _put(p: np.ndarray, label: int, sl) -> None:
    p[(slice(None), *sl)] = 0.0
    p[(label, *sl)] = 1.0


def test_counts_separate_cores_of_enough_volume() -> None:
    p = _probs()
    _put(p, 2, np.s_[2:38, 2:38, 2:20])  # edema around both: not core
    _put(p, 1, np.s_[5:10, 5:10, 5:10])  # NCR, 125 voxels
    _put(p, 3, np.s_[10:12, 5:10, 5:10])  # ET touching it (26-connected): the same core
    _put(p, 3, np.s_[25:30, 25:30, 5:10])  # a second core, ET only
    _put(p, 1, np.s_[20, 20, 20])  # a one-voxel island
    assert core_lesion_count(p, (1, 3), voxel_ml=0.001, min_ml=0.1) == 2
    assert core_lesion_count(p, (1, 3), voxel_ml=0.001, min_ml=0.0005) == 3
    assert core_lesion_count(p, (1,), voxel_ml=0.001, min_ml=0.1) == 1
    assert core_lesion_count(_probs(), (1, 3), voxel_ml=0.001) == 0


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"core labels \[4\] must lie in 1..3"):
        core_lesion_count(_probs(), (4,), 0.001)
    with pytest.raises(ValueError, match="voxel volume must be positive, got 0"):
        core_lesion_count(_probs(), (1,), 0)


def test_lesion_limit_keeps_false_alarms_at_most_five_percent() -> None:
    fit = fit_lesion_limit([1] * 90 + [2] * 8 + [3] * 2)
    assert fit["max_core_lesions"] == 2 and fit["development_false_alarm_rate"] == pytest.approx(0.02)
    assert fit_lesion_limit([1] * 100)["max_core_lesions"] == 1
    assert fit_lesion_limit([0, 1, 1, 1])["max_core_lesions"] == 1
    with pytest.raises(ValueError, match="no tumor-core counts"):
        fit_lesion_limit([])


def test_more_cores_than_training_withholds_the_genotype() -> None:
    from GliomaMTLLib.genotype.features import FEATURE_NAMES
    from GliomaMTLLib.genotype.model import KIND, TaskRegression
    from GliomaMTLLib.genotype.path import RadiologicalPath, ood_warning
    from GliomaMTLLib.inference.task_logits import TaskLogits

    f = len(FEATURE_NAMES)
    spec = {"kind": KIND, "features": list(FEATURE_NAMES), "mean": [0.0] * f, "scale": [1.0] * f,
            "tasks": {"idh": TaskRegression(["wildtype", "mutant"], np.zeros((1, f)), np.zeros(1)).to_dict()},
            "lesions": {"max_core_lesions": 2}}
    tasks = {"idh": ("wildtype", "mutant")}
    logits = TaskLogits(lambda: None, tasks, paths=[RadiologicalPath(spec, tasks)])
    assert ood_warning(logits, 2) is None and ood_warning(logits, None) is None
    warning = ood_warning(logits, 5)
    assert warning.startswith("input unlike the training data (5 separate tumor cores; 95% of the training phantoms "
                              "have at most 2")
    for bad in (0, 1.5, True, None):
        with pytest.raises(ValueError, match="lesions.max_core_lesions must be an integer >= 1"):
            RadiologicalPath({**spec, "lesions": {"max_core_lesions": bad}}, tasks)
