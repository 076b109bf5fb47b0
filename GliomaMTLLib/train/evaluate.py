"""Evaluation: the papers' tables for a trained run or a model bundle.

Two entry points:

- :func:`evaluate_run` runs a run's trained networks over held-out prepared cases at the
  recipe's own resolution (the numbers a paper reports for its network), cascade included: the
  localizer's whole tumor centres the main stage's crop, exactly as at inference.
- :func:`evaluate_bundle` runs a model bundle over raw cases (a BraTS-style folder or a synthetic
  spec) through `GliomaMTLLib.inference.Predictor`, so the numbers are what a user gets (input
  grid, post-processing, calibration).

Both write into ``--out``: ``report.md`` (all tables), ``segmentation.csv`` (per region),
``segmentation_cases.csv`` (per case and region), ``classification.csv`` (per genotype task),
``survival.csv`` (C-index), ``metrics.json`` (everything), ``roc.png`` (one panel per task).

Segmentation: Dice, HD95 (mm), sensitivity, specificity per region (WT, TC, ET; WT alone for a
whole-tumor model), `GliomaMTLLib.metrics.region_metrics`. Genotype: AUC (bootstrap 95 % CI),
accuracy, sensitivity, specificity, `classification_metrics`. Survival (paper 002): a Cox model on
the genotype branch's last-layer embeddings, fitted on the training split, C-index on the
evaluated split.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from GliomaMTLLib.io.atomic import write_text_atomic
from GliomaMTLLib.train.data import PreparedCase, load_dataset, prepare

REGION_METRICS = ("dice", "hd95", "sensitivity", "specificity")


# --------------------------------------------------------------------------------------------
# Running one stage on a prepared case
# --------------------------------------------------------------------------------------------


def eval_mode(stage_conf: Mapping[str, Any]) -> str:
    """How a stage runs on a whole case: its ``evaluate.mode``, else from its last training input mode."""
    mode = stage_conf["evaluate"]["mode"]
    if mode:
        return str(mode)
    train_mode = stage_conf["phases"][-1]["input"]["mode"]
    return {"patch": "sliding", "tumor_crop": "crop", "whole": "whole", "resize": "whole"}[train_mode]


def _crop_around(array: np.ndarray, center: Sequence[float], size: Sequence[int]):
    from GliomaMTLLib.preprocess import crop_around

    return crop_around(array, tuple(float(c) for c in center), tuple(int(s) for s in size))


def _uncrop_probs(probs: np.ndarray, box, shape: Sequence[int]) -> np.ndarray:
    """Put crop probabilities back on the full grid; outside the crop: background with probability 1."""
    from GliomaMTLLib.preprocess import uncrop

    full = uncrop(probs, box, shape, fill=0.0)
    covered = uncrop(np.ones(probs.shape[1:], dtype=np.float32), box, shape, fill=0.0)
    full[0] += 1.0 - covered
    return full


@dataclass
class StageOutput:
    probs: np.ndarray  # (L, z, y, x) label probabilities on the stage grid
    genotype_logits: dict[str, np.ndarray] = field(default_factory=dict)  # task -> (K,)
    embedding: dict[str, np.ndarray] = field(default_factory=dict)


class StageRunner:
    """One trained stage network and how to run it on a (preprocessed) volume."""

    def __init__(self, net: torch.nn.Module, stage_conf: Mapping[str, Any], device: torch.device | str = "cpu") -> None:
        self.net = net.to(device).eval()
        self.conf = stage_conf
        self.device = torch.device(device)
        self.mode = eval_mode(stage_conf)
        self.size = tuple(int(s) for s in stage_conf["phases"][-1]["input"]["size"])
        self.has_tasks = bool(getattr(net.config, "tasks", None))

    @torch.no_grad()
    def _forward(self, x: np.ndarray, with_genotype: bool, tabular: np.ndarray | None = None) -> dict[str, Any]:
        t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=self.device)[None]
        tab = torch.as_tensor(tabular, dtype=torch.float32, device=self.device)[None] if tabular is not None else None
        return self.net(t, tabular=tab, with_genotype=with_genotype and self.has_tasks,
                        return_embedding=with_genotype and self.has_tasks)

    @staticmethod
    def _genotype(out: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        logits = {k: v[0].float().cpu().numpy() for k, v in out.get("genotype", {}).items()}
        emb = {k: v[0].float().cpu().numpy() for k, v in out.get("embedding", {}).items()}
        return logits, emb

    @torch.no_grad()
    def _sliding(self, image: np.ndarray) -> np.ndarray:
        """Label probabilities over the whole volume from overlapping windows (MONAI)."""
        from monai.inferers import sliding_window_inference

        x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=self.device)[None]
        seg = sliding_window_inference(
            x, roi_size=self.size, sw_batch_size=1, overlap=float(self.conf["evaluate"]["overlap"]),
            mode="gaussian", predictor=lambda p: self.net(p, with_genotype=False)["seg"],
        )
        return torch.softmax(seg.float(), dim=1)[0].cpu().numpy()

    def run(self, image: np.ndarray, center: Sequence[float] | None = None,
            tabular: np.ndarray | None = None, genotype: bool = True) -> StageOutput:
        """Segmentation probabilities over the whole volume and genotype logits of one case.

        Args:
            image: (C, z, y, x) preprocessed input on the stage grid.
            center: crop centre (z, y, x) for ``crop`` mode and for the genotype crop; None:
                the tumor predicted by this stage (sliding / whole) or the volume centre.
        """
        shape = image.shape[1:]
        logits: dict[str, np.ndarray] = {}
        emb: dict[str, np.ndarray] = {}
        if self.mode == "sliding":
            probs = self._sliding(image)
        else:
            if self.mode == "crop" and center is None:
                # no localizer and no reference: find the tumor with a sliding window first
                center = predicted_center(self._sliding(image))
            c = center if (self.mode == "crop" and center is not None) else tuple((np.asarray(shape) - 1) / 2)
            crop, box = _crop_around(image, c, self.size)
            # the genotype heads read this same forward pass when it is the tumor crop (or when asked to
            # read the whole volume); otherwise a second pass on the tumor-centred crop below
            want_geno = genotype and (self.mode == "crop" or self.conf["evaluate"]["genotype_input"] == "whole")
            out = self._forward(crop, want_geno, tabular)
            if want_geno:
                logits, emb = self._genotype(out)
            probs = _uncrop_probs(torch.softmax(out["seg"].float(), dim=1)[0].cpu().numpy(), box, shape)
        if genotype and self.has_tasks and not logits:
            tumor_center = center if center is not None else predicted_center(probs)
            c = tumor_center if tumor_center is not None else tuple((np.asarray(shape) - 1) / 2)
            crop, _ = _crop_around(image, c, self.size)
            logits, emb = self._genotype(self._forward(crop, True, tabular))
        return StageOutput(probs=probs.astype(np.float32), genotype_logits=logits, embedding=emb)


def predicted_center(probs: np.ndarray) -> tuple[float, float, float] | None:
    """Centre (z, y, x) of the largest predicted whole-tumor component, or None if there is none."""
    from scipy import ndimage

    tumor = probs.argmax(axis=0) > 0
    if not tumor.any():
        return None
    components, n = ndimage.label(tumor)
    if n > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        tumor = components == int(np.argmax(sizes))
    return tuple(float(c) for c in np.argwhere(tumor).mean(axis=0))


def map_center(center_zyx: Sequence[float], source, target) -> tuple[float, float, float]:
    """A voxel position on grid ``source`` -> the same physical point on grid ``target`` (z, y, x)."""
    from GliomaMTLLib.preprocess import physical_to_continuous_index

    point = source.index_to_physical(np.asarray(center_zyx, dtype=float)[::-1])
    return tuple(float(v) for v in physical_to_continuous_index(target, point)[0][::-1])


# --------------------------------------------------------------------------------------------
# A run's networks on its prepared cases
# --------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case_id: str
    labels: np.ndarray | None  # predicted labels on the main stage grid (after post-processing)
    reference: np.ndarray | None
    spacing: tuple[float, float, float]
    genotype_logits: dict[str, np.ndarray]
    genotype_true: dict[str, int]
    embedding: dict[str, np.ndarray]
    survival_days: float | None
    event: bool | None
    localizer_labels: np.ndarray | None = None
    localizer_reference: np.ndarray | None = None
    localizer_spacing: tuple[float, float, float] | None = None
    seconds: float = 0.0


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, Any], dict[str, StageRunner]]:
    """The resolved recipe of a run and a runner per trained stage."""
    from GliomaMTLLib.nets import build_network
    from GliomaMTLLib.train.checkpoint import load_stage_weights
    from GliomaMTLLib.train.config import load_recipe

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run (no recipe.yaml)")
    recipe = load_recipe(run_dir / "recipe.yaml")
    runners = {}
    for stage, conf in recipe["stages"].items():
        net = build_network(conf["network"])
        net.load_state_dict(load_stage_weights(run_dir, stage))
        runners[stage] = StageRunner(net, conf, device)
    return recipe, runners


def _postprocess(labels: np.ndarray, recipe: Mapping[str, Any], spacing: Sequence[float]) -> np.ndarray:
    from GliomaMTLLib.inference.postprocess import PostprocessConfig, apply_postprocess

    config = PostprocessConfig.from_dict(recipe["postprocess"])
    label_values = [int(v) for v in recipe["labels"]]
    labels, _ = apply_postprocess(labels, label_values, float(np.prod(spacing)) / 1000.0, config)
    return labels


def predict_prepared(recipe: Mapping[str, Any], runners: Mapping[str, StageRunner], folders: Mapping[str, Path],
                     split: str, max_cases: int | None = None, genotype: bool = True,
                     progress: Callable[[float, str], None] | None = None) -> list[CaseResult]:
    """Run the (cascade of) trained networks over the prepared cases of one split.

    The main stage is the last stage of the recipe; a ``localizer`` stage before it centres the
    main stage's crop when its ``evaluate.crop_center`` is ``localizer``.
    """
    stages = list(recipe["stages"])
    main = stages[-1]
    main_conf = recipe["stages"][main]
    binary = int(main_conf["network"].get("num_seg_classes", 4)) == 2
    cases = load_dataset(recipe, folders[main], splits=(split,), with_reference=True, mmap=True)
    if max_cases:
        cases = cases[: int(max_cases)]
    loc_cases: dict[str, PreparedCase] = {}
    loc_name = stages[0] if len(stages) > 1 else None
    if loc_name is not None:
        loc_cases = {c.case_id: c for c in load_dataset(recipe, folders[loc_name], splits=(split,), with_reference=True, mmap=True)}
    results = []
    for i, case in enumerate(cases):
        start = time.time()
        image = np.asarray(case.image)
        center = None
        loc_labels = loc_ref = loc_spacing = None
        how = main_conf["evaluate"]["crop_center"]
        if how == "label":
            center = case.tumor_center
        if loc_name is not None and case.case_id in loc_cases:
            lc = loc_cases[case.case_id]
            loc_out = runners[loc_name].run(np.asarray(lc.image), genotype=False)
            loc_labels = loc_out.probs.argmax(axis=0).astype(np.uint8)
            loc_ref = _reference(lc.reference, runners[loc_name])
            loc_spacing = lc.spacing
            if how == "localizer" and center is None:
                c = predicted_center(loc_out.probs)
                center = map_center(c, lc.geometry, case.geometry) if c is not None else None
        out = runners[main].run(image, center=center, tabular=case.tabular, genotype=genotype)
        labels = out.probs.argmax(axis=0).astype(np.uint8)
        labels = _postprocess(labels, recipe, case.spacing)
        reference = case.reference
        if reference is not None:
            reference = (np.asarray(reference) > 0).astype(np.uint8) if binary else np.asarray(reference)
        results.append(
            CaseResult(
                case_id=case.case_id, labels=labels, reference=reference, spacing=case.spacing,
                genotype_logits=out.genotype_logits,
                genotype_true={t: _true_class(case, t, recipe) for t in recipe["tasks"]},
                embedding=out.embedding, survival_days=case.survival_days, event=case.event,
                localizer_labels=loc_labels, localizer_reference=loc_ref, localizer_spacing=loc_spacing,
                seconds=time.time() - start,
            )
        )
        if progress is not None:
            progress((i + 1) / len(cases), f"evaluated {case.case_id} ({i + 1}/{len(cases)})")
    return results


def _reference(reference: np.ndarray | None, runner: StageRunner) -> np.ndarray | None:
    if reference is None:
        return None
    ref = np.asarray(reference)
    return (ref > 0).astype(np.uint8) if runner.net.config.num_seg_classes == 2 else ref


def _true_class(case: PreparedCase, task: str, recipe: Mapping[str, Any]) -> int:
    """The case's real class (held-out splits never hide labels)."""
    name = case.genotype_names.get(task)
    classes = list(recipe["tasks"][task])
    return classes.index(name) if name in classes else -1


def train_embeddings(recipe: Mapping[str, Any], runners: Mapping[str, StageRunner], folders: Mapping[str, Path],
                     task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings of the training cases (crop on their reference tumor), with survival."""
    main = list(recipe["stages"])[-1]
    runner = runners[main]
    emb, t, e = [], [], []
    for case in load_dataset(recipe, folders[main], splits=("train",), with_reference=True, mmap=True):
        if case.survival_days is None or case.event is None:
            continue
        center = case.tumor_center or tuple((np.asarray(case.shape) - 1) / 2)
        crop, _ = _crop_around(np.asarray(case.image), center, runner.size)
        _, embedding = runner._genotype(runner._forward(crop, True, case.tabular))
        emb.append(embedding[task])
        t.append(case.survival_days)
        e.append(int(case.event))
    return np.asarray(emb), np.asarray(t, dtype=float), np.asarray(e, dtype=int)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _regions(num_classes: int) -> dict[str, tuple[int, ...]]:
    from GliomaMTLLib.nets import default_regions

    return default_regions(num_classes)


def segmentation_rows(results: Sequence[CaseResult], num_classes: int, which: str = "main"
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per case x region rows, per region summary rows)."""
    from GliomaMTLLib.metrics import region_metrics

    regions = _regions(num_classes)
    per_case: list[dict[str, Any]] = []
    for r in results:
        pred, ref, spacing = ((r.labels, r.reference, r.spacing) if which == "main"
                              else (r.localizer_labels, r.localizer_reference, r.localizer_spacing))
        if pred is None or ref is None:
            continue
        metrics = region_metrics(pred, ref, spacing, regions=regions)
        for region, values in metrics.items():
            per_case.append({"case_id": r.case_id, "stage": which, "region": region,
                             **{k: float(values[k]) for k in REGION_METRICS}})
    summary = []
    for region in regions:
        rows = [row for row in per_case if row["region"] == region]
        if not rows:
            continue
        entry: dict[str, Any] = {"stage": which, "region": region, "n": len(rows)}
        for metric in REGION_METRICS:
            values = np.asarray([row[metric] for row in rows], dtype=float)
            finite = values[np.isfinite(values)]
            entry[f"{metric}_mean"] = float(finite.mean()) if finite.size else float("nan")
            entry[f"{metric}_sd"] = float(finite.std()) if finite.size else float("nan")
            entry[f"{metric}_median"] = float(np.median(finite)) if finite.size else float("nan")
        summary.append(entry)
    return per_case, summary


def _softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def classification_rows(results: Sequence[CaseResult], tasks: Mapping[str, Sequence[str]],
                        calibration: Mapping[str, float] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per task summary rows, {task: {y_true, probs, class_names}} for the ROC plot)."""
    from GliomaMTLLib.metrics import classification_metrics

    rows, curves = [], {}
    for task, classes in tasks.items():
        have = [r for r in results if task in r.genotype_logits]
        if not have:
            continue
        y = np.asarray([r.genotype_true.get(task, -1) for r in have], dtype=np.int64)
        temp = float((calibration or {}).get(task, 1.0))
        probs = np.stack([_softmax(r.genotype_logits[task], temp) for r in have])
        m = classification_metrics(y, probs, class_names=list(classes), n_boot=200)
        rows.append({
            "task": task, "n": m["n"], "n_unknown": m["n_unknown"], "auc": m["auc"],
            "auc_ci_low": m["auc_ci_low"], "auc_ci_high": m["auc_ci_high"], "accuracy": m["accuracy"],
            "sensitivity": m.get("sensitivity", float("nan")), "specificity": m.get("specificity", float("nan")),
            "balanced_accuracy": m["balanced_accuracy"], "auc_note": m["auc_note"],
        })
        curves[task] = {"y_true": y, "probs": probs, "class_names": list(classes)}
    return rows, curves


def survival_rows(results: Sequence[CaseResult], train: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                  task: str, penalizer: float) -> list[dict[str, Any]]:
    """C-index of a Cox model (fitted on the training embeddings) on the evaluated cases."""
    from GliomaMTLLib.metrics import fit_cox

    have = [r for r in results if task in r.embedding and r.survival_days is not None and r.event is not None]
    row: dict[str, Any] = {"model": f"Cox on {task} embedding", "n": len(have),
                           "events": int(sum(bool(r.event) for r in have)), "c_index": float("nan"), "note": ""}
    if train is None or len(train[0]) < 3 or not train[2].any():
        row["note"] = "too few training cases with survival (>= 3 and one event needed)"
        return [row]
    if len(have) < 2:
        row["note"] = "too few evaluated cases with survival"
        return [row]
    try:
        model = fit_cox(train[0], train[1], train[2], penalizer=penalizer)
        row["c_index"] = float(model.concordance(np.stack([r.embedding[task] for r in have]),
                                                 [r.survival_days for r in have], [int(r.event) for r in have]))
        row["n_train"] = int(len(train[0]))
    except (ValueError, np.linalg.LinAlgError) as exc:  # ill-posed fit on tiny data
        row["note"] = f"Cox fit failed: {exc}"
    return [row]


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    write_text_atomic(path, buf.getvalue())


SEG_COLUMNS = ["stage", "region", "n"] + [f"{m}_{s}" for m in REGION_METRICS for s in ("mean", "sd", "median")]
SEG_CASE_COLUMNS = ["case_id", "stage", "region", *REGION_METRICS]
CLS_COLUMNS = ["task", "n", "n_unknown", "auc", "auc_ci_low", "auc_ci_high", "accuracy", "sensitivity",
               "specificity", "balanced_accuracy", "auc_note"]
SURV_COLUMNS = ["model", "n", "events", "c_index", "n_train", "note"]


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def write_report(out_dir: str | os.PathLike, title: str, info: Mapping[str, Any],
                 seg_cases: Sequence[Mapping[str, Any]], seg_summary: Sequence[Mapping[str, Any]],
                 cls_rows: Sequence[Mapping[str, Any]], curves: Mapping[str, Any],
                 surv_rows: Sequence[Mapping[str, Any]], reported: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the tables (markdown, CSV, JSON) and the ROC figure; returns the metrics dict."""
    from GliomaMTLLib.metrics import markdown_table, plot_roc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reported = dict(reported or {})
    paper_dice = reported.get("dice", {}) or {}
    seg_rows = [{**row, "paper_dice": paper_dice.get(row["region"]) if row["stage"] == "main" else None}
                for row in seg_summary]
    cls_md = []
    for row in cls_rows:
        paper = reported.get(row["task"], {}) or {}
        cls_md.append({**row, **{f"paper_{k}": paper.get(k) for k in ("auc", "accuracy", "sensitivity", "specificity")}})
    surv_md = [{**row, "paper_c_index": (reported.get("survival", {}) or {}).get("c_index")} for row in surv_rows]

    lines = [f"# {title}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "Paper values are the authors' numbers on real data; ours are on the split named above.", ""]
    if seg_rows:
        lines += ["## Segmentation", "",
                  markdown_table(seg_rows, [("stage", "stage"), ("region", "region"), ("n", "n"),
                                            ("dice_mean", "Dice"), ("dice_sd", "Dice SD"), ("hd95_median", "HD95 median (mm)"),
                                            ("hd95_mean", "HD95 mean (mm)"), ("sensitivity_mean", "Sensitivity"),
                                            ("specificity_mean", "Specificity"), ("paper_dice", "paper Dice")]), ""]
    if cls_md:
        lines += ["## Genotype", "",
                  markdown_table(cls_md, [("task", "task"), ("n", "n"), ("auc", "AUC"), ("auc_ci_low", "AUC 95% CI low"),
                                          ("auc_ci_high", "AUC 95% CI high"), ("accuracy", "Accuracy"),
                                          ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                                          ("paper_auc", "paper AUC"), ("paper_accuracy", "paper Acc"),
                                          ("paper_sensitivity", "paper Sens"), ("paper_specificity", "paper Spec")]), ""]
        notes = [f"- {r['task']}: {r['auc_note']}" for r in cls_rows if r.get("auc_note")]
        lines += notes + ([""] if notes else [])
    if surv_md:
        lines += ["## Survival", "",
                  markdown_table(surv_md, [("model", "model"), ("n", "n"), ("events", "events"),
                                           ("c_index", "C-index"), ("paper_c_index", "paper C-index"), ("note", "note")]), ""]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    _write_csv(out / "segmentation.csv", seg_summary, SEG_COLUMNS)
    _write_csv(out / "segmentation_cases.csv", seg_cases, SEG_CASE_COLUMNS)
    _write_csv(out / "classification.csv", cls_rows, CLS_COLUMNS)
    _write_csv(out / "survival.csv", surv_rows, SURV_COLUMNS)
    roc = None
    if curves:
        roc = str(plot_roc(dict(curves), out / "roc.png"))
    metrics = {
        "info": dict(info),
        "segmentation": {f"{row['stage']}/{row['region']}": {k: row[k] for k in row if k not in ("stage", "region")}
                         for row in seg_summary},
        "genotype": {row["task"]: {k: row[k] for k in row if k != "task"} for row in cls_rows},
        "survival": list(surv_rows),
        "reported": reported,
        "roc_png": roc,
    }
    metrics = _json_safe(metrics)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def evaluate_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, split: str | None = None,
                 max_cases: int | None = None, device: str = "cpu",
                 progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Evaluate a finished run on a held-out split of its data (default ``evaluate.split``: test).

    Returns:
        the metrics dict also written to ``<out>/metrics.json``.
    """
    run_dir = Path(run_dir)
    recipe, runners = load_run(run_dir, device)
    split = split or recipe["evaluate"]["split"]
    out_dir = Path(out_dir) if out_dir else run_dir / f"eval-{split}"
    folders = prepare(recipe, run_dir).folders
    start = time.time()
    results = predict_prepared(recipe, runners, folders, split, max_cases or recipe["evaluate"]["max_cases"],
                               progress=progress)
    if not results:
        raise ValueError(f"{run_dir}: the {split!r} split has no cases to evaluate")
    main = list(recipe["stages"])[-1]
    num_classes = int(recipe["stages"][main]["network"].get("num_seg_classes", 4))
    seg_cases, seg_summary = segmentation_rows(results, num_classes, "main")
    if len(recipe["stages"]) > 1:
        loc = list(recipe["stages"])[0]
        loc_cases, loc_summary = segmentation_rows(
            results, int(recipe["stages"][loc]["network"].get("num_seg_classes", 4)), "localizer")
        seg_cases += loc_cases
        seg_summary += [row for row in loc_summary if row["region"] == "WT"]
    tasks = {t: list(c) for t, c in recipe["tasks"].items()}
    cls_rows, curves = classification_rows(results, tasks)
    surv_rows: list[dict[str, Any]] = []
    survival_known = any(r.survival_days is not None and r.event is not None for r in results)
    if tasks and survival_known:
        task = "idh" if "idh" in tasks else next(iter(tasks))
        train = train_embeddings(recipe, runners, folders, task)
        surv_rows = survival_rows(results, train, task, float(recipe["evaluate"]["cox_penalizer"]))
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    info = {
        "recipe": recipe["name"],
        "paper": recipe.get("paper"),
        "run": str(run_dir),
        "split": split,
        "cases": len(results),
        "data": f"{recipe['data']['source']} ({recipe['data']['cohort']})" if recipe["data"]["source"] == "synth"
        else str(recipe["data"]["root"]),
        "resolution": {s: c["preprocess"].get("spacing") for s, c in recipe["stages"].items()},
        "iterations": run_info.get("iterations"),
        "seconds_per_case": round((time.time() - start) / len(results), 3),
    }
    return write_report(out_dir, f"Evaluation of {recipe['name']}", info, seg_cases, seg_summary, cls_rows, curves,
                        surv_rows, recipe.get("reported"))


# ------------------------------------------------------------------ bundles


def parse_data_spec(spec: str) -> dict[str, Any]:
    """``synth:<cohort>[:n=<N>][:seed=<S>][:small]`` or a folder path -> data description."""
    if spec.startswith("synth"):
        parts = spec.split(":")[1:]
        out: dict[str, Any] = {"source": "synth", "cohort": "adult", "n": 8, "seed": 900_000, "small": False}
        for part in parts:
            if part in ("adult", "pediatric"):
                out["cohort"] = part
            elif part == "small":
                out["small"] = True
            elif part.startswith("n="):
                out["n"] = int(part[2:])
            elif part.startswith("seed="):
                out["seed"] = int(part[5:])
            elif part:
                raise ValueError(f"data spec {spec!r}: unknown part {part!r}; expected synth:<adult|pediatric>[:n=N][:seed=S][:small]")
        return out
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"--data {spec!r} is neither a folder nor a synth:<cohort>[:n=N][:seed=S][:small] spec")
    return {"source": "folder", "root": str(path)}


def iter_cases(data: Mapping[str, Any], sequences: Sequence[str], clinical_csv: str | None = None):
    """The raw `Case` objects of a data description (labels and clinical data attached)."""
    if data["source"] == "synth":
        from GliomaMTLLib.train.data import synth_case

        for i in range(int(data["n"])):
            seed = int(data["seed"]) + i
            yield synth_case(seed, data["cohort"], bool(data["small"]), f"synth-{data['cohort']}-{seed:06d}")
        return
    from GliomaMTLLib.io import attach_clinical, list_case_folders, read_case, read_clinical_table

    root = Path(data["root"])
    csv_path = clinical_csv or (root / "labels.csv" if (root / "labels.csv").is_file() else None)
    table = read_clinical_table(csv_path) if csv_path else {}
    for folder in list_case_folders(root):
        case = read_case(folder, required=list(sequences))
        yield attach_clinical(case, table.get(case.case_id) or table.get(folder.name))


def _predictor_for(bundle_path: str | os.PathLike, device: str = "cpu"):
    """The inference seam: ``(bundle, run)`` with ``run(case) -> (labels on the input grid,
    {task: calibrated class probabilities})``, through `GliomaMTLLib.inference.Predictor`, so the
    numbers are exactly what ``gliomamtl predict`` gives a user (input grid, post-processing,
    calibration)."""
    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.inference import Predictor

    bundle = load_bundle(bundle_path)
    predictor = Predictor(bundle, device=device)

    def run(case):
        pred = predictor.predict(case)
        probs = {task: np.asarray([p[c] for c in bundle.tasks[task]]) for task, p in pred.genotype.items()}
        return np.asarray(pred.labels), probs

    return bundle, run


def evaluate_bundle(bundle_path: str | os.PathLike, data_spec: str, out_dir: str | os.PathLike,
                    clinical_csv: str | None = None, max_cases: int | None = None, device: str = "cpu",
                    progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Evaluate a model bundle on raw cases, on each case's input grid."""
    bundle, run = _predictor_for(bundle_path, device)
    data = parse_data_spec(data_spec) if isinstance(data_spec, str) else dict(data_spec)
    num_classes = max(bundle.labels, default=0) + 1
    results: list[CaseResult] = []
    start = time.time()
    n_total = int(data.get("n", 0)) or None
    for i, case in enumerate(iter_cases(data, bundle.sequences, clinical_csv)):
        if max_cases and i >= int(max_cases):
            break
        labels, probs = run(case)
        ref = case.label
        if ref is not None and num_classes == 2:
            ref = (ref > 0).astype(np.uint8)
        truth = {t: (list(c).index(case.genotype[t]) if case.genotype.get(t) in c else -1) for t, c in bundle.tasks.items()}
        # probabilities are stored as log-probabilities so that the tables' softmax returns them unchanged
        results.append(CaseResult(case_id=case.case_id, labels=labels, reference=ref, spacing=case.geometry.spacing,
                                  genotype_logits={t: np.log(np.clip(p, 1e-12, 1.0)) for t, p in probs.items()},
                                  genotype_true=truth, embedding={}, survival_days=case.survival_days, event=case.event))
        if progress is not None:
            progress((i + 1) / (n_total or (i + 1)), f"evaluated {case.case_id}")
    if not results:
        raise ValueError(f"--data {data_spec}: no cases")
    seg_cases, seg_summary = segmentation_rows(results, num_classes, "main")
    cls_rows, curves = classification_rows(results, {t: list(c) for t, c in bundle.tasks.items()})
    info = {"model": f"{bundle.name} {bundle.version}", "bundle": str(bundle.folder), "data": data_spec,
            "cases": len(results), "grid": "each case's input grid", "inference": "GliomaMTLLib.inference.Predictor",
            "seconds_per_case": round((time.time() - start) / len(results), 3)}
    return write_report(out_dir, f"Evaluation of model {bundle.name}", info, seg_cases, seg_summary, cls_rows, curves, [],
                        None)


# --------------------------------------------------------------------------------------------
# Command line (also `gliomamtl evaluate`)
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="a training run folder (runs/<name>)")
    what.add_argument("--model", help="a model bundle folder or name (Resources/Models/<name>)")
    parser.add_argument("--data", help="with --model: a BraTS-style folder (+ labels.csv) or "
                        "synth:<adult|pediatric>[:n=N][:seed=S][:small] (default synth:<cohort>:n=8)")
    parser.add_argument("--clinical-csv", help="with --model and a folder: the genotype / survival CSV")
    parser.add_argument("--split", choices=("train", "val", "test"), help="with --run: split to evaluate (default test)")
    parser.add_argument("--max-cases", type=int, help="evaluate at most this many cases")
    parser.add_argument("--out", help="output folder (default <run>/eval-<split>)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--progress-json", action="store_true", help="print JSON-lines progress events on stdout")


def run_from_args(args: argparse.Namespace) -> int:
    reporter = None
    if args.progress_json:
        from GliomaMTLLib.progress import JsonLinesReporter

        reporter = JsonLinesReporter(sys.stdout)
    if args.run:
        metrics = evaluate_run(args.run, args.out, args.split, args.max_cases, args.device, progress=reporter)
        out = args.out or str(Path(args.run) / f"eval-{metrics['info']['split']}")
    else:
        if not args.out:
            raise ValueError("--model needs --out")
        data = args.data
        if data is None:
            from GliomaMTLLib.bundle import load_bundle

            cohort = "pediatric" if "braf" in load_bundle(args.model).tasks else "adult"
            data = f"synth:{cohort}:n=8"
        metrics = evaluate_bundle(args.model, data, args.out, args.clinical_csv, args.max_cases, args.device,
                                  progress=reporter)
        out = args.out
    if reporter is not None:
        reporter.done(out=str(out), metrics=metrics)
    else:
        print((Path(out) / "report.md").read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m GliomaMTLLib.train.evaluate", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
