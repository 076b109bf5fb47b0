"""GliomaMTLLib.metrics: BraTS region Dice/HD95/sensitivity/specificity, genotype AUC/accuracy/
sensitivity/specificity with calibration, survival C-index and Cox models, Markdown tables.

The survival functions need ``lifelines`` (extras ``train``/``test``), imported when called.
"""

from GliomaMTLLib.metrics.calibration import (apply_temperature, chance_ece, expected_calibration_error, fit_temperature,
                                             fit_temperature_bias, nll)
from GliomaMTLLib.metrics.classification import (
    bootstrap_auc_ci,
    classification_metrics,
    plot_roc,
    roc_auc,
    roc_curve_points,
)
from GliomaMTLLib.metrics.report import markdown_table
from GliomaMTLLib.metrics.segmentation import (
    BRATS_EVALUATION_WORST_HD95,
    LEGACY_WORST_HD95,
    binary_metrics,
    cohort_region_table,
    lesion_metrics,
    region_metrics,
)
from GliomaMTLLib.metrics.survival import CoxModel, cindex_by_group, concordance, fit_cox

__all__ = [
    "BRATS_EVALUATION_WORST_HD95",
    "LEGACY_WORST_HD95",
    "CoxModel",
    "apply_temperature",
    "chance_ece",
    "binary_metrics",
    "bootstrap_auc_ci",
    "cindex_by_group",
    "classification_metrics",
    "cohort_region_table",
    "concordance",
    "expected_calibration_error",
    "fit_cox",
    "fit_temperature",
    "fit_temperature_bias",
    "lesion_metrics",
    "markdown_table",
    "nll",
    "plot_roc",
    "region_metrics",
    "roc_auc",
    "roc_curve_points",
]
