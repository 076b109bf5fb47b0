"""`explain`: integrated-gradient heatmaps of a prediction, on the exact input grid.

The explained output is computed by the bundle's one "main window -> task logits" function
(:class:`GliomaMTLLib.inference.task_logits.TaskLogits`, PyTorch), on the very window the
:class:`~GliomaMTLLib.inference.Predictor` used for the genotype (the same preprocessing, the same
box). Targets:

- a genotype task (``idh``, ``codel_1p19q``, ``braf``): the calibrated probability
  ``softmax(logits / T)`` of the class the model predicts (or of ``target_class``); attributions
  are in probability units and add up to ``p(image) - p(baseline)`` up to ``delta``;
- a region (``WT``, ``TC``, ``ET``): the region's soft volume in the window (sum of P(region)
  over its voxels, in main-grid voxels).

Baseline and convergence: see :mod:`GliomaMTLLib.explain.attribution` (default: the window blurred
inside the brain).

Heatmaps: the attribution of each main-grid voxel and sequence, brought back to the input grid with
the preprocessing's inverse record (:func:`GliomaMTLLib.preprocess.to_input_grid`, linear), and
scaled by the ratio of the voxel volumes, so that a heatmap's sum over the input grid is (up to
interpolation) the sequence's total attribution; exact indexing when the preprocessing did not
resample. The numbers of the report (sums, shares) are computed on the main grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from scipy import ndimage

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
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.preprocess import (
    CropBox, SpatialRecord, crop, preprocess, preprocess_label, to_input_grid, window_record,
)

ProgressCallback = Callable[[float, str], None]
#: Region targets (explained through the segmentation); any other target is a genotype task.
REGION_TARGETS = ("WT", "TC", "ET")
#: Distance (mm) from the predicted tumor that still counts as "near" it in the report.
NEAR_TUMOR_MM = 5.0


@dataclass
class Explanation:
    """Integrated-gradient explanation of one output of one case.

    Attributes:
        case_id, task: the case and the explained task (genotype task or region).
        kind: ``"genotype"`` or ``"region"``.
        target: the explained class (genotype) or region name.
        probability: the class probability that ``predict`` reports (genotype; None for a region).
        attribution: integrated gradients on the main window (output, baseline output, delta, steps).
        maps: sequence -> heatmap on the input grid (float32, z y x).
        combined: sum of ``maps`` (the total attribution of each input voxel).
        sequence_share: sequence -> share of the absolute attribution.
        tumor_share: ``{"inside": ..., "near": ...}`` -> ``{"positive", "absolute"}`` shares of the
            attribution inside the predicted tumor and within :data:`NEAR_TUMOR_MM` of it (main grid).
        labels: the predicted label map on the input grid (for the figure).
    """

    case_id: str
    task: str
    kind: str
    target: str
    probability: float | None
    attribution: Attribution
    sequences: tuple[str, ...]
    maps: dict[str, np.ndarray]
    combined: np.ndarray
    sequence_share: dict[str, float]
    tumor_share: dict[str, dict[str, float]]
    geometry: Geometry
    labels: np.ndarray
    window: dict[str, Any]
    model: dict[str, str]
    output_name: str
    baseline: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def report(self, files: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The content of ``explain.json``."""
        a = self.attribution
        return {
            "case_id": self.case_id,
            "task": self.task,
            "kind": self.kind,
            "class_explained": self.target,
            "probability": None if self.probability is None else round(self.probability, 6),
            "explained_output": self.output_name,
            "output": a.output,
            "baseline_output": a.baseline_output,
            "baseline": self.baseline,
            "method": "integrated gradients (captum IntegratedGradients, Gauss-Legendre)",
            "steps": a.steps,
            "delta": a.delta,
            "relative_delta": a.relative_delta,
            "attribution_sum": float(a.values.astype(np.float64).sum()),
            "sequence_share": {s: round(v, 6) for s, v in self.sequence_share.items()},
            "tumor_share": self.tumor_share,
            "near_tumor_mm": NEAR_TUMOR_MM,
            "window": self.window,
            "model": self.model,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": self.warnings,
            "files": {k: str(v) for k, v in (files or {}).items()},
        }



def window_to_input_grid(values: np.ndarray, record: SpatialRecord, box: CropBox) -> np.ndarray:
    """Per-voxel quantities (C, z, y, x) on the window ``box`` of the preprocessed grid -> (C, *input
    shape), scaled by (input voxel volume / preprocessed voxel volume) so that sums are kept."""
    shape = (values.shape[0],) + record.input_geometry.shape
    sub = window_record(record, box)
    if sub is None:
        return np.zeros(shape, dtype=np.float32)
    sub_record, local = sub
    scale = np.prod(record.input_geometry.spacing) / np.prod(record.resampled_geometry.spacing)
    out = to_input_grid(np.ascontiguousarray(values[(slice(None), *local)]), sub_record, "scalar", 0.0)
    return (out * np.float32(scale)).astype(np.float32, copy=False)


def _shares(attr: np.ndarray, sequences: tuple[str, ...], tumor: np.ndarray, spacing_zyx: np.ndarray
            ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    absolute = np.abs(attr).sum(axis=tuple(range(1, attr.ndim)), dtype=np.float64)
    total = absolute.sum()
    per_seq = {s: float(v / total) if total > 0 else 0.0 for s, v in zip(sequences, absolute)}
    combined = attr.sum(axis=0, dtype=np.float64)
    positive, magnitude = np.clip(combined, 0, None), np.abs(combined)
    if tumor.any():
        near = ndimage.distance_transform_edt(~tumor, sampling=spacing_zyx) <= NEAR_TUMOR_MM
    else:
        near = tumor
    out = {}
    for name, mask in (("inside", tumor), ("near", near)):
        out[name] = {
            kind: float(values[mask].sum() / values.sum()) if values.sum() > 0 else 0.0
            for kind, values in (("positive", positive), ("absolute", magnitude))
        }
    return per_seq, out


def _resolve_target(predictor: Any, task: str | None, target_class: str | None) -> tuple[str, str]:
    """(task, kind) for a requested task; the model's first genotype task (else WT) by default."""
    regions = list(predictor.regions)
    if task is None:
        task = next(iter(predictor.tasks), regions[0] if regions else "WT")
    if task in predictor.tasks:
        return task, "genotype"
    if task in regions:
        if target_class is not None:
            raise ValueError(f"target_class applies to genotype tasks, not to region {task}")
        return task, "region"
    raise ValueError(
        f"model {predictor.bundle.name} has no task {task!r}: its genotype tasks are {list(predictor.tasks) or 'none'}, "
        f"its regions {regions}"
    )


def _window_box(predictor: Any, labels_pre: np.ndarray) -> CropBox:
    """The window the Predictor used for the genotype; for a model without genotype tasks, a window
    of the main stage's size centred on the predicted tumor (else on the brain), placed as
    :func:`~GliomaMTLLib.preprocess.crop_around` places it."""
    if predictor.tasks and predictor.genotype_window is not None:
        return predictor.genotype_window
    mask = labels_pre > 0
    center = np.asarray(ndimage.center_of_mass(mask)) if mask.any() else (np.asarray(mask.shape) - 1) / 2.0
    size = tuple(int(n) for n in predictor.main.window)
    return CropBox(tuple(int(np.floor(c + 0.5)) - n // 2 for c, n in zip(center, size)), size)  # type: ignore[arg-type]


def explain(
    source: Any,
    task: str | None = None,
    *,
    model: Any = None,
    predictor: Any = None,
    steps: int = DEFAULT_STEPS,
    internal_batch_size: int = DEFAULT_BATCH,
    target_class: str | None = None,
    baseline: str = "blur",
    blur_mm: float = DEFAULT_BLUR_MM,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> Explanation:
    """Explain a model's prediction on a case with integrated gradients.

    Args:
        source: a :class:`~GliomaMTLLib.io.case.Case`, a case folder or a list of sequence files.
        task: a genotype task of the model (``idh``, ``codel_1p19q``, ``braf``) or a region (``WT``,
            ``TC``, ``ET``); default the model's first genotype task (WT for a model without one).
        model: bundle name, folder or :class:`~GliomaMTLLib.bundle.ModelBundle` (default: the
            Predictor's default model); ignored when ``predictor`` is given.
        predictor: a :class:`~GliomaMTLLib.inference.Predictor` to reuse (any engine: the
            prediction may run in ONNX Runtime, the gradients always run in PyTorch).
        steps: points of the path integral (see :mod:`GliomaMTLLib.explain.attribution`).
        internal_batch_size: points per forward/backward pass (memory vs speed).
        target_class: genotype class to explain instead of the predicted one.
        baseline: ``"blur"`` (default: the window blurred inside the brain, Gaussian ``blur_mm``) or
            ``"zero"``; see :mod:`GliomaMTLLib.explain.attribution` for why not zero.
        blur_mm: sigma of the blurred baseline in mm.
        progress: ``(fraction, message)`` callback.

    Raises:
        ValueError: unknown task, class or baseline, or a model whose main stage resizes the brain.
    """
    from GliomaMTLLib.inference import Predictor

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
    if baseline == "blur" and not blur_mm > 0:
        raise ValueError(f"blur_mm must be > 0, got {blur_mm}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if predictor is None:
        predictor = Predictor(model, device=device) if model is not None else Predictor(device=device)
    task, kind = _resolve_target(predictor, task, target_class)
    if predictor.main.resize_to:
        raise ValueError(f"model {predictor.bundle.name}: explanations need a main stage that reads a window of the "
                         "preprocessed grid, but this one resizes the whole brain ('resize_to')")
    case = source if isinstance(source, Case) else predictor.read(source)
    report(0.02, "predicting")
    predictor.genotype_window = None
    own_progress = predictor.progress
    if progress is not None and own_progress is None:  # the prediction's stages as the first 20 %
        predictor.progress = lambda f, m: report(0.02 + 0.18 * f, f"predict: {m}")
    try:
        prediction = predictor.predict(case)
    finally:
        predictor.progress = own_progress
    absent = [s for s in predictor.sequences if s not in case.images]  # optional ones, zeros as in predict
    pre = preprocess(case, predictor.sequences, predictor.main.preprocess, fill_missing=absent)  # predict's grid
    labels_pre = preprocess_label(prediction.labels, pre.record)
    box = _window_box(predictor, labels_pre)
    timings["predict"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    task_logits = predictor.task_logits
    task_logits.set_context(pre=pre, window=box, age=getattr(case, "age_years", None))  # as predict set it
    net = task_logits.network
    x = torch.from_numpy(crop(pre.image, box)[None]).to(predictor.device)
    reference = torch.zeros_like(x)
    if baseline == "blur":
        sigma = blur_mm / np.asarray(pre.geometry.spacing[::-1], dtype=float)  # z, y, x voxels
        margin = [int(np.ceil(4 * s)) for s in sigma]  # the blur sees beyond the window's faces
        grown = CropBox(tuple(a - m for a, m in zip(box.start, margin)),  # type: ignore[arg-type]
                        tuple(n + 2 * m for n, m in zip(box.size, margin)))  # type: ignore[arg-type]
        blurred = blurred_baseline(crop(pre.image, grown), crop(pre.brain_mask, grown).astype(bool), sigma)
        inner = tuple(slice(m, m + n) for m, n in zip(margin, box.size))
        reference = torch.from_numpy(np.ascontiguousarray(blurred[(slice(None), *inner)])[None]).to(x)
    probability = None
    warnings: list[str] = []
    if kind == "genotype":
        classes = list(predictor.tasks[task])
        shipped = prediction.genotype.get(task)
        if shipped is None:  # predict withheld it (see its warnings): explain the model's output all the same
            with torch.no_grad():
                p = task_logits.probabilities(task_logits(x))[task][0].cpu().numpy()
            shipped = {c: float(v) for c, v in zip(classes, p)}
            warnings.append(f"predict reports no {task} probability for this case; explained the model's output anyway")
        target = max(shipped, key=shipped.get) if target_class is None else target_class
        if target not in classes:
            raise ValueError(f"task {task} has no class {target!r}; classes: {classes}")
        index = classes.index(target)
        probability = float(shipped[target])
        output_name = (f"calibrated probability of {task} = {target} (softmax of the genotype path's calibrated logits)"
                       if task in task_logits.path_calibrated
                       else f"calibrated probability of {task} = {target} (softmax(logits / T), T = {task_logits.temperatures[task]:.4g})")

        def fn(batch: torch.Tensor) -> torch.Tensor:
            return task_logits.probabilities(task_logits(batch))[task][:, index]
    else:
        target = task
        output_name = f"soft volume of {task} in the window (sum of P({task}) over its voxels)"

        def fn(batch: torch.Tensor) -> torch.Tensor:
            return task_logits.region_scores(batch, [task])[task]

    report(0.2, "integrated gradients")
    with input_gradients_only(net):
        attribution = integrated_gradients(
            fn, x, reference, steps=steps, internal_batch_size=internal_batch_size,
            progress=lambda f, m: report(0.2 + 0.7 * f, m),
        )
    timings["integrated_gradients"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    warnings = [w for w in prediction.warnings if "no tumor" in w or "unlike the training" in w] + warnings
    if probability is not None and abs(attribution.output - probability) > 1e-3:
        warnings.append(f"the explained window gives p({target}) = {attribution.output:.4f}, the prediction "
                        f"{probability:.4f}: the explanation may not match the reported probability")
    incomplete = attribution.completeness_warning()
    if incomplete:
        warnings.append(incomplete)
    report(0.92, "mapping to the input grid")
    tumor = crop(labels_pre, box) > 0
    spacing_zyx = np.asarray(pre.geometry.spacing[::-1], dtype=float)
    sequence_share, tumor_share = _shares(attribution.values, pre.sequences, tumor, spacing_zyx)
    on_input = window_to_input_grid(attribution.values, pre.record, box)
    maps = {s: on_input[i] for i, s in enumerate(pre.sequences) if s not in absent}  # absent: no attribution
    if absent:
        warnings.append(f"sequence(s) {absent} missing from the case: filled with zeros as in predict, no heatmap")
    combined = on_input.sum(axis=0, dtype=np.float32)
    timings["map_to_input"] = time.perf_counter() - t2
    window = {
        "start_zyx": list(box.start),
        "size_zyx": list(box.size),
        "spacing_mm_xyz": list(pre.geometry.spacing),
        "grid": "main stage preprocessed grid (canonical orientation)",
    }
    return Explanation(
        case_id=prediction.case_id, task=task, kind=kind, target=target, probability=probability,
        attribution=attribution, sequences=tuple(pre.sequences), maps=maps, combined=combined,
        sequence_share=sequence_share, tumor_share=tumor_share, geometry=case.geometry,
        labels=prediction.labels, window=window, model=dict(predictor.model_info), output_name=output_name,
        baseline=describe_baseline(baseline, blur_mm), timings=timings, warnings=warnings,
    )
