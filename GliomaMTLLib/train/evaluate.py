"""Evaluation: the papers' tables for a trained run or a model bundle, through the one cascade.

Both entry points run `GliomaMTLLib.inference.Predictor` (the only implementation of the cascade:
localizer, crop or windows, main network, back to the input grid, post-processing) on raw cases,
and score its labels on each case's input grid, so the numbers are what ``gliomamtl predict``
gives a user:

- :func:`evaluate_run`: a run's networks before export (``Predictor(run_dir)``, the in-memory
  bundle of :mod:`GliomaMTLLib.train.run_model`) on the held-out split of its own data;
- :func:`evaluate_bundle`: a model bundle on a BraTS-style folder or a synthetic spec.

``sequences`` (``--sequences``) removes the other sequences from every case first, as if the
scan lacked them (a model with optional sequences fills them as its sequence dropout did).

Both write into ``--out``: ``report.md`` (all tables), ``segmentation.csv`` (per region),
``segmentation_cases.csv`` (per case and region), ``classification.csv`` (per genotype task),
``survival.csv`` (C-index), ``metrics.json`` (everything), ``roc.png`` (one panel per task).

Segmentation: Dice, HD95 (mm), sensitivity, specificity per region (WT, TC, ET; WT alone for a
whole-tumor model), `GliomaMTLLib.metrics.region_metrics`. Genotype: AUC (bootstrap 95 % CI),
accuracy, sensitivity, specificity, `classification_metrics`. Survival (paper 002): a Cox model on
the genotype branch's last-layer embeddings, fitted on the training split (crops on the reference
tumor), C-index on the evaluated split (crops on the tumor the Predictor found).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from GliomaMTLLib.io.atomic import write_text_atomic
from GliomaMTLLib.train.run_model import eval_mode  # noqa: F401  (re-exported)

REGION_METRICS = ("dice", "hd95", "sensitivity", "specificity")
ProgressCallback = Callable[[float, str], None]


@dataclass
class CaseResult:
    case_id: str
    labels: np.ndarray | None  # predicted labels on the case's input grid (after post-processing)
    reference: np.ndarray | None
    spacing: tuple[float, float, float]
    genotype_logits: dict[str, np.ndarray]  # log of the Predictor's probabilities (softmax returns them)
    genotype_true: dict[str, int]
    embedding: dict[str, np.ndarray]
    survival_days: float | None
    event: bool | None
    tumor_center_mm: tuple[float, float, float] | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Cases through the Predictor
# --------------------------------------------------------------------------------------------


def parse_sequences(spec: str | Sequence[str] | None) -> list[str] | None:
    """``"t1c,t2f"`` (names or aliases) -> ``["t1c", "t2f"]``; None stays None.

    Raises:
        ValueError: an unknown sequence name.
    """
    if spec is None:
        return None
    from GliomaMTLLib.labels import SEQUENCE_ALIASES, SEQUENCES

    items = [p.strip().lower() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    out = []
    for item in items:
        key = item if item in SEQUENCES else SEQUENCE_ALIASES.get(item)
        if key is None:
            raise ValueError(f"--sequences: unknown sequence {item!r}; expected names from {list(SEQUENCES)} or aliases")
        out.append(key)
    if not out:
        raise ValueError("--sequences: no sequence given")
    return out


def keep_sequences(case, sequences: Sequence[str] | None):
    """The case with only ``sequences`` (others removed, as if the scan lacked them); None: unchanged.

    Raises:
        ValueError: the case has none of ``sequences``.
    """
    if sequences is None:
        return case
    images = {k: v for k, v in case.images.items() if k in sequences}
    if not images:
        raise ValueError(f"case {case.case_id}: has none of --sequences {list(sequences)} (it has {list(case.images)})")
    return replace(case, images=images, sources={k: v for k, v in case.sources.items() if k in images or k == "label"})


def _reference(case, num_classes: int) -> np.ndarray | None:
    if case.label is None:
        return None
    return (case.label > 0).astype(np.uint8) if num_classes == 2 else np.asarray(case.label)


def genotype_embedding(predictor) -> dict[str, np.ndarray]:
    """The genotype path's features of the predictor's last case (``{}`` without a path)."""
    from GliomaMTLLib.genotype.evaluation import genotype_embedding as features

    return features(predictor)


def subset_key(sequences: Sequence[str] | None) -> str:
    """``"t1c+t2f"`` for a sequence subset, ``"all"`` for None."""
    return "+".join(sequences) if sequences else "all"


def _case_result(predictor, case, num_classes: int) -> CaseResult:
    """One case through ``predictor``: what the tables need."""
    tasks = predictor.tasks
    start = time.perf_counter()
    pred = predictor.predict(case)
    logits = {t: np.log(np.clip(np.asarray([p[c] for c in tasks[t]], dtype=float), 1e-12, 1.0))
              for t, p in pred.genotype.items()}
    truth = {t: (list(c).index(case.genotype[t]) if case.genotype.get(t) in c else -1) for t, c in tasks.items()}
    center = pred.tumor.get("center_mm")
    return CaseResult(
        case_id=case.case_id, labels=np.asarray(pred.labels), reference=_reference(case, num_classes),
        spacing=case.geometry.spacing, genotype_logits=logits, genotype_true=truth,
        embedding=genotype_embedding(predictor),  # the genotype path's features (survival by subtype)
        survival_days=case.survival_days, event=case.event,
        tumor_center_mm=tuple(center) if center is not None else None,
        seconds=time.perf_counter() - start, warnings=list(pred.warnings),
    )


def predict_case_subsets(predictor, cases: Iterable, subsets: Sequence[Sequence[str] | None] = (None,),
                         max_cases: int | None = None, total: int | None = None,
                         progress: ProgressCallback | None = None) -> dict[str, list[CaseResult]]:
    """Run ``predictor`` (a :class:`GliomaMTLLib.inference.Predictor`) on raw cases, once per
    sequence subset (None: the case as it is), each case built once for all subsets.

    Returns:
        :func:`subset_key` -> one :class:`CaseResult` per case.
    """
    num_classes = max(predictor.label_names, default=0) + 1
    results: dict[str, list[CaseResult]] = {subset_key(s): [] for s in subsets}
    if max_cases:
        cases = itertools.islice(cases, int(max_cases))  # a synthetic case past the limit is never generated
    for i, case in enumerate(cases):
        for subset in subsets:
            results[subset_key(subset)].append(_case_result(predictor, keep_sequences(case, subset), num_classes))
        if progress is not None:
            n = total or (i + 1)
            progress((i + 1) / max(n, i + 1), f"evaluated {case.case_id} ({i + 1}/{n})")
    return results


def predict_cases(predictor, cases: Iterable, sequences: Sequence[str] | None = None, max_cases: int | None = None,
                  total: int | None = None, progress: ProgressCallback | None = None) -> list[CaseResult]:
    """Run ``predictor`` on raw cases (only ``sequences`` of each, when given) and collect what the
    tables need: labels on the input grid, genotype probabilities, truth."""
    return predict_case_subsets(predictor, cases, [sequences], max_cases, total, progress)[subset_key(sequences)]


# --------------------------------------------------------------------------------------------
# A run's model on its own data
# --------------------------------------------------------------------------------------------


def load_run(run_dir: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """The resolved recipe of a finished run and its in-memory bundle (:class:`RunBundle`).

    Raises:
        FileNotFoundError: not a run folder, or a stage without finished weights.
    """
    from GliomaMTLLib.train.config import load_recipe
    from GliomaMTLLib.train.run_model import run_bundle

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run (no recipe.yaml)")
    recipe = load_recipe(run_dir / "recipe.yaml")
    return recipe, run_bundle(run_dir, recipe)


def run_predictor(bundle, device: str = "cpu"):
    """The Predictor of a run's bundle: PyTorch engine (no ONNX export cached for every run)."""
    from GliomaMTLLib.inference import Predictor

    return Predictor(bundle, device=device, engine="torch")


def split_cases(recipe: Mapping[str, Any], split: str) -> tuple[list[Any], Iterable]:
    """(specs, lazily built raw cases) of one split of the recipe's data."""
    from GliomaMTLLib.train.data import list_case_specs, load_case

    specs = [s for s in list_case_specs(recipe) if s.split == split]
    return specs, (load_case(s, recipe["sequences"]) for s in specs)


def predict_split(recipe: Mapping[str, Any], predictor, split: str, max_cases: int | None = None,
                  sequences: Sequence[str] | None = None, progress: ProgressCallback | None = None) -> list[CaseResult]:
    """The Predictor over the raw cases of one split of a run's data."""
    specs, cases = split_cases(recipe, split)
    n = min(len(specs), int(max_cases)) if max_cases else len(specs)
    return predict_cases(predictor, cases, sequences, max_cases, n, progress)


def _embeddings(net, prepared: Sequence[Any], centers: Mapping[str, Sequence[float] | None], task: str,
                window: Sequence[int]) -> dict[str, np.ndarray]:
    """Genotype-branch embedding of ``task`` per prepared case, from the main window centred on
    ``centers[case_id]`` (z, y, x on the prepared grid; None: the volume centre)."""
    import torch

    from GliomaMTLLib.preprocess import crop_around

    out: dict[str, np.ndarray] = {}
    for case in prepared:
        if case.case_id not in centers:
            continue
        center = centers[case.case_id]
        center = center if center is not None else tuple((np.asarray(case.shape) - 1) / 2)
        x, _ = crop_around(np.asarray(case.image), tuple(float(c) for c in center), tuple(int(w) for w in window))
        tab = torch.as_tensor(case.tabular, dtype=torch.float32)[None] if case.tabular is not None else None
        with torch.inference_mode():
            res = net(torch.from_numpy(np.ascontiguousarray(x))[None], tabular=tab, with_genotype=True,
                      return_embedding=True)
        out[case.case_id] = res["embedding"][task][0].float().cpu().numpy()
    return out


def _survival(recipe: Mapping[str, Any], run_dir: Path, predictor, results: list[CaseResult], task: str
              ) -> list[dict[str, Any]]:
    """C-index of a Cox model on ``task``'s embedding (train: reference tumor; evaluated: found tumor)."""
    from GliomaMTLLib.preprocess import physical_to_continuous_index
    from GliomaMTLLib.train.data import load_dataset, prepare

    main = list(recipe["stages"])[-1]
    folder = prepare(recipe, run_dir).folders[main]
    net, window = predictor.networks["main"], predictor.main.window
    train = [c for c in load_dataset(recipe, folder, splits=("train",), with_reference=True, mmap=True)
             if c.survival_days is not None and c.event is not None]
    train_emb = _embeddings(net, train, {c.case_id: c.tumor_center for c in train}, task, window)
    split = {c.case_id: c for c in load_dataset(recipe, folder, splits=(recipe["evaluate"]["split"], "val", "test"),
                                                with_reference=True, mmap=True)}
    centers: dict[str, Any] = {}
    for r in results:
        if r.case_id in split:
            c = split[r.case_id]
            centers[r.case_id] = (None if r.tumor_center_mm is None else
                                  tuple(physical_to_continuous_index(c.geometry, np.asarray([r.tumor_center_mm]))[0][::-1]))
    for case_id, emb in _embeddings(net, [split[k] for k in centers], centers, task, window).items():
        next(r for r in results if r.case_id == case_id).embedding[task] = emb
    arrays = (np.asarray([train_emb[c.case_id] for c in train]), np.asarray([c.survival_days for c in train], dtype=float),
              np.asarray([int(c.event) for c in train], dtype=int)) if train else None
    return survival_rows(results, arrays, task, float(recipe["evaluate"]["cox_penalizer"]))


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
    from GliomaMTLLib.metrics.segmentation import bootstrap_mean_ci

    regions = _regions(num_classes)
    per_case: list[dict[str, Any]] = []
    for r in results:
        pred, ref, spacing = r.labels, r.reference, r.spacing
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
        entry["dice_ci_low"], entry["dice_ci_high"] = bootstrap_mean_ci([row["dice"] for row in rows])
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
                                            ("dice_mean", "Dice"), ("dice_ci_low", "Dice 95% CI low"),
                                            ("dice_ci_high", "Dice 95% CI high"), ("dice_sd", "Dice SD"), ("hd95_median", "HD95 median (mm)"),
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
                 max_cases: int | None = None, device: str = "cpu", progress: ProgressCallback | None = None,
                 sequences: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate a finished run on a held-out split of its data (default ``evaluate.split``: test),
    through the Predictor (the exported model without its calibration), on each case's input grid.

    Returns:
        the metrics dict also written to ``<out>/metrics.json``.
    """
    run_dir = Path(run_dir)
    recipe, bundle = load_run(run_dir)
    split = split or recipe["evaluate"]["split"]
    out_dir = Path(out_dir) if out_dir else run_dir / f"eval-{split}"
    predictor = run_predictor(bundle, device)
    start = time.time()
    results = predict_split(recipe, predictor, split, max_cases or recipe["evaluate"]["max_cases"], sequences, progress)
    if not results:
        raise ValueError(f"{run_dir}: the {split!r} split has no cases to evaluate")
    main = list(recipe["stages"])[-1]
    num_classes = int(recipe["stages"][main]["network"].get("num_seg_classes", 4))
    seconds = (time.time() - start) / len(results)
    seg_cases, seg_summary = segmentation_rows(results, num_classes, "main")
    tasks = {t: list(c) for t, c in recipe["tasks"].items()}
    cls_rows, curves = classification_rows(results, tasks)
    surv_rows: list[dict[str, Any]] = []
    if tasks and any(r.survival_days is not None and r.event is not None for r in results):
        surv_rows = _survival(recipe, run_dir, predictor, results, "idh" if "idh" in tasks else next(iter(tasks)))
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    info = {
        "recipe": recipe["name"],
        "paper": recipe.get("paper"),
        "run": str(run_dir),
        "split": split,
        "cases": len(results),
        "sequences": ",".join(sequences) if sequences else "all",
        "data": f"{recipe['data']['source']} ({recipe['data']['cohort']})" if recipe["data"]["source"] == "synth"
        else str(recipe["data"]["root"]),
        "resolution": {s: c["preprocess"].get("spacing") for s, c in recipe["stages"].items()},
        "grid": "each case's input grid",
        "inference": "GliomaMTLLib.inference.Predictor",
        "iterations": run_info.get("iterations"),
        "tta": predictor.tta,
        "seconds_per_case": round(seconds, 3),
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


def evaluate_bundle(bundle_path: str | os.PathLike, data_spec: str, out_dir: str | os.PathLike,
                    clinical_csv: str | None = None, max_cases: int | None = None, device: str = "cpu",
                    progress: ProgressCallback | None = None, sequences: Sequence[str] | None = None,
                    subsets: Sequence[Sequence[str] | None] | None = None, tta: bool | None = None) -> dict[str, Any]:
    """Evaluate a model bundle on raw cases (a folder or a synthetic spec), on each case's input grid.

    Args:
        sequences: keep only these sequences of every case (None: all).
        subsets: several such subsets in one pass (each case is built once): each subset's
            report goes to ``<out>/<t1c+t2f>/`` and ``<out>/subsets.md`` compares their Dice.

    Returns:
        the metrics (``metrics.json``); with ``subsets``, ``{"subsets": {key: metrics}}``.
    """
    from GliomaMTLLib.inference import Predictor

    predictor = Predictor(bundle_path, device=device, tta=tta)
    bundle = predictor.bundle
    data = parse_data_spec(data_spec) if isinstance(data_spec, str) else dict(data_spec)
    start = time.time()
    # a folder case needs the model's required sequences only; --sequences removes the others later
    cases = iter_cases(data, predictor.required_sequences, clinical_csv)
    sets = list(subsets) if subsets else [sequences]
    by_subset = predict_case_subsets(predictor, cases, sets, max_cases, int(data.get("n", 0)) or None, progress)
    seconds = time.time() - start
    if len(sets) == 1:
        return _bundle_report(predictor, by_subset[subset_key(sets[0])], data_spec, sets[0], out_dir, seconds)
    reports = {key: _bundle_report(predictor, results, data_spec, subset, Path(out_dir) / key, seconds / len(sets))
               for (key, results), subset in zip(by_subset.items(), sets)}
    write_subset_table(out_dir, bundle, data_spec, reports)
    return {"subsets": reports}


def write_subset_table(out_dir: str | os.PathLike, bundle, data_spec: str, reports: Mapping[str, Mapping[str, Any]]
                       ) -> str:
    """``<out>/subsets.md`` (and ``subsets.json``): mean Dice [bootstrap 95% CI] per region for each sequence subset."""
    regions = [k.split("/")[1] for k in next(iter(reports.values()))["segmentation"]]
    lines = [f"# {bundle.name} {bundle.version}: Dice per input sequence subset", "",
             f"Data: `{data_spec}`; {next(iter(reports.values()))['info']['cases']} cases; missing sequences filled "
             "as the model's training sequence dropout did (zeros after normalisation).", "",
             "| sequences | " + " | ".join(f"Dice {r}" for r in regions) + " |",
             "|---|" + "---|" * len(regions)]
    table = {}
    for key, metrics in reports.items():
        seg = metrics["segmentation"]
        cells = [f"{seg[f'main/{r}']['dice_mean']:.3f} [{seg[f'main/{r}'].get('dice_ci_low', float('nan')):.3f}, "
                 f"{seg[f'main/{r}'].get('dice_ci_high', float('nan')):.3f}]"
                 if seg.get(f"main/{r}", {}).get("dice_mean") is not None else "n/a" for r in regions]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
        table[key] = {r: seg.get(f"main/{r}", {}) for r in regions}
    text = "\n".join(lines) + "\n"
    write_text_atomic(Path(out_dir) / "subsets.md", text)
    write_text_atomic(Path(out_dir) / "subsets.json", json.dumps(_json_safe(table), indent=2) + "\n")
    return text


def _bundle_report(predictor, results: list[CaseResult], data_spec: str, sequences: Sequence[str] | None,
                   out_dir: str | os.PathLike, seconds: float) -> dict[str, Any]:
    """The tables of one evaluation of a bundle (one sequence subset)."""
    bundle = predictor.bundle
    if not results:
        raise ValueError(f"--data {data_spec}: no cases")
    num_classes = max(bundle.labels, default=0) + 1
    seg_cases, seg_summary = segmentation_rows(results, num_classes, "main")
    cls_rows, curves = classification_rows(results, {t: list(c) for t, c in bundle.tasks.items()})
    info = {"model": f"{bundle.name} {bundle.version}", "bundle": str(bundle.folder), "data": data_spec,
            "cases": len(results), "sequences": subset_key(sequences),
            "grid": "each case's input grid", "inference": "GliomaMTLLib.inference.Predictor",
            "tta": predictor.tta, "seconds_per_case": round(seconds / len(results), 3),
            "predict_seconds_per_case": round(float(np.mean([r.seconds for r in results])), 3)}
    from GliomaMTLLib.genotype.evaluation import genotype_survival_rows

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    surv_rows = genotype_survival_rows(results, bundle.tasks, out_dir)  # paper 002: C-index by WHO subtype, km.png
    return write_report(out_dir, f"Evaluation of model {bundle.name}", info, seg_cases, seg_summary, cls_rows, curves,
                        surv_rows, None)


# --------------------------------------------------------------------------------------------
# Command line (also `gliomamtl evaluate`)
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from GliomaMTLLib.cli.evaluate_cmd import add_arguments as add

    add(parser)


def run_from_args(args: argparse.Namespace) -> int:
    reporter = None
    if args.progress_json:
        from GliomaMTLLib.progress import JsonLinesReporter

        reporter = JsonLinesReporter(sys.stdout)
    subsets = [None if spec.strip().lower() == "all" else parse_sequences(spec) for spec in (args.sequences or [])]
    sequences = subsets[0] if len(subsets) == 1 else None
    if len(subsets) > 1 and args.run:
        raise ValueError("--sequences: several subsets in one run need --model (with --run give one subset)")
    if args.run:
        metrics = evaluate_run(args.run, args.out, args.split, args.max_cases, args.device, progress=reporter,
                               sequences=sequences)
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
                                  progress=reporter, sequences=sequences, subsets=subsets if len(subsets) > 1 else None,
                                  tta=getattr(args, "tta", None))
        out = args.out
    if reporter is not None:
        reporter.done(out=str(out), metrics=metrics)
    else:
        print((Path(out) / ("subsets.md" if "subsets" in metrics else "report.md")).read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m GliomaMTLLib.train.evaluate", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
