"""GliomaMTLLib.explain: integrated-gradient explanations of a prediction (captum).

Typical use::

    from GliomaMTLLib.explain import explain, write_explanation
    e = explain("case_folder", "idh")                 # or "WT", "TC", "ET"
    write_explanation(e, "out/explain", images=...)   # heatmaps on the input grid, explain.png, explain.json

Everything goes through the bundle's "main window -> task logits" function
(:mod:`GliomaMTLLib.inference.task_logits`), the same one that gives the shipped genotype
probability. The baseline and the convergence delta are described in
:mod:`GliomaMTLLib.explain.attribution`.
"""

from GliomaMTLLib.explain.attribution import (
    BASELINES,
    DEFAULT_BATCH,
    DEFAULT_BLUR_MM,
    DEFAULT_STEPS,
    Attribution,
    blurred_baseline,
    describe_baseline,
    input_gradients_only,
    integrated_gradients,
)
from GliomaMTLLib.explain.explanation import (
    NEAR_TUMOR_MM,
    REGION_TARGETS,
    Explanation,
    explain,
    window_to_input_grid,
)
from GliomaMTLLib.explain.output import EXPLAIN_JSON, EXPLAIN_PNG, heatmap_filename, write_explanation

__all__ = [
    "Attribution",
    "BASELINES",
    "DEFAULT_BATCH",
    "DEFAULT_BLUR_MM",
    "DEFAULT_STEPS",
    "EXPLAIN_JSON",
    "EXPLAIN_PNG",
    "Explanation",
    "blurred_baseline",
    "describe_baseline",
    "NEAR_TUMOR_MM",
    "REGION_TARGETS",
    "explain",
    "heatmap_filename",
    "input_gradients_only",
    "integrated_gradients",
    "window_to_input_grid",
    "write_explanation",
]
