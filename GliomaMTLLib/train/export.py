"""Export a finished run as a model bundle (``model.json`` + ``model.safetensors`` + ``card.md``).

``python -m GliomaMTLLib.train.export --run runs/<name> --out Resources/Models/<name>``

- the networks of every stage, under ``<stage>.<parameter>`` (`GliomaMTLLib.bundle.save_bundle`)
- ``stages``: network (NetConfig), preprocess (PreprocessConfig), ``mode`` (whole / crop /
  sliding), ``input_size`` (the network input the stage was trained on) and, for the main stage,
  ``crop_size`` (the window `GliomaMTLLib.inference.Predictor` runs it on) and ``overlap``
- ``required_sequences`` / ``optional_sequences`` (recipe ``export.required_sequences``; default all required)
- ``calibration``: a temperature per genotype task fitted on the validation split
  (`GliomaMTLLib.metrics.fit_temperature`) on the probabilities of the run's
  `GliomaMTLLib.inference.Predictor`; probabilities shown to users are softmax(logits / T)
- ``metrics``: the held-out (test split) evaluation of the run through the same Predictor, on each
  case's input grid (GliomaMTLLib.train.evaluate)
- ``training``: recipe, data, iterations, time, hardware
- ``card.md`` from ``training/card_template.md``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from string import Template
from typing import Any, Mapping, Sequence

import numpy as np

from GliomaMTLLib.train.evaluate import evaluate_run, load_run, predict_split, run_predictor
from GliomaMTLLib.train.run_model import bundle_meta, eval_mode, stage_meta  # noqa: F401  (re-exported)

CARD_TEMPLATE = Path(__file__).resolve().parent / "card_template.md"


def fit_calibration(recipe: Mapping[str, Any], predictor) -> tuple[dict[str, float], dict[str, Any]]:
    """Temperature per task on the validation split, and how each was obtained.

    The validation cases go through ``predictor`` (the run's uncalibrated Predictor, the one
    cascade), so the temperatures fit the probabilities users get.

    Returns:
        ``({task: T}, {task: {"known_cases": n, "fitted": bool, "why": str}})``. A task with
        fewer than ``export.calibration_min_cases`` known validation labels keeps T = 1.
    """
    from GliomaMTLLib.metrics import fit_temperature

    if not recipe["tasks"]:
        return {}, {}
    minimum = int(recipe["export"]["calibration_min_cases"])
    # The run's Predictor has no calibration (T = 1): log-probabilities are the logits up to a
    # per-case constant, which softmax(z / T) ignores, so the fitted T is the same.
    results = predict_split(recipe, predictor, "val")
    temps: dict[str, float] = {}
    info: dict[str, Any] = {}
    for task in recipe["tasks"]:
        have = [r for r in results if task in r.genotype_logits]
        y = np.asarray([r.genotype_true.get(task, -1) for r in have], dtype=np.int64)
        known = int((y >= 0).sum())
        if known < minimum:
            temps[task] = 1.0
            info[task] = {"known_cases": known, "fitted": False,
                          "why": f"{known} known validation labels < calibration_min_cases = {minimum}"}
            continue
        logits = np.stack([r.genotype_logits[task] for r in have])
        temps[task] = float(fit_temperature(logits, y))
        info[task] = {"known_cases": known, "fitted": True, "why": "validation NLL (temperature scaling)"}
    return temps, info


def calibration_text(fit: Mapping[str, Any]) -> str:
    """One line per task on how its temperature was obtained (for the model card)."""
    if not fit:
        return "Genotype probabilities are not calibrated (no genotype tasks, or calibration off)."
    lines = []
    for task, row in fit.items():
        how = ("fitted on the validation split by temperature scaling" if row.get("fitted")
               else f"left at 1 (not fitted: {row.get('why')})")
        lines.append(f"- `{task}`: temperature {how}; {row.get('known_cases')} known validation labels.")
    return "Genotype calibration:\n\n" + "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return str(value)


def render_card(meta: Mapping[str, Any], recipe: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """``card.md`` from the template: data, recipe, time, hardware, held-out metrics, limits."""
    training = meta["training"]
    seg_lines = []
    for key, row in (metrics.get("segmentation") or {}).items():
        ci = (f" [{_fmt(row['dice_ci_low'])}, {_fmt(row['dice_ci_high'])}]"
              if row.get("dice_ci_low") is not None and row.get("dice_ci_high") is not None else "")
        seg_lines.append(f"| {key} | {row.get('n')} | {_fmt(row.get('dice_mean'))}{ci} | {_fmt(row.get('hd95_median'))} | "
                         f"{_fmt(row.get('sensitivity_mean'))} | {_fmt(row.get('specificity_mean'))} |")
    geno_lines = []
    for task, row in (metrics.get("genotype") or {}).items():
        geno_lines.append(f"| {task} | {row.get('n')} | {_fmt(row.get('auc'))} | {_fmt(row.get('accuracy'))} | "
                          f"{_fmt(row.get('sensitivity'))} | {_fmt(row.get('specificity'))} | "
                          f"{_fmt(meta.get('calibration', {}).get(task))} |")
    hw = training.get("hardware") or {}
    stages = "\n".join(
        f"- `{name}`: {s['mode']} input {'x'.join(map(str, s['input_size']))} at "
        f"{s['preprocess'].get('spacing') or 'native'} mm, features {s['network']['features']}, "
        f"tasks {list(s['network']['tasks']) or 'none'}"
        for name, s in meta["stages"].items()
    )
    data = recipe["data"]
    data_text = (f"synthetic phantoms (GliomaMTLLib.synth, cohort `{data['cohort']}`): {data['n_train']} training, "
                 f"{data['n_val']} validation, {data['n_test']} test cases, seed {data['seed']}"
                 if data["source"] == "synth" else f"cases from `{data['root']}` (clinical table `{data['clinical_csv']}`)")
    values = {
        "name": meta["name"], "version": meta["version"], "description": meta.get("description", ""),
        "sequences": ", ".join(meta["sequences"]) + (
            f" (required: {', '.join(meta['required_sequences'])}; optional, filled as sequence dropout when missing: "
            f"{', '.join(meta['optional_sequences'])})" if meta.get("optional_sequences") else ""),
        "labels": ", ".join(f"{k} = {v}" for k, v in meta["labels"].items()),
        "tasks": ", ".join(f"{t} ({'/'.join(c)})" for t, c in meta["tasks"].items()) or "none",
        "stages": stages, "recipe": training["recipe"], "paper": recipe.get("paper") or "",
        "data": data_text, "iterations": training.get("iterations"),
        "hours": f"{float(training.get('seconds') or 0) / 3600:.2f}",
        "hardware": f"{hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} cores, {hw.get('torch_threads', '?')} torch threads)"
        + (f", GPU {hw['gpu']}" if hw.get("gpu") else "") + f", world size {hw.get('world_size', 1)}",
        "seg_rows": "\n".join(seg_lines) or "| (none) | | | | | |",
        "geno_rows": "\n".join(geno_lines) or "| (none) | | | | | | |",
        "eval_cases": (metrics.get("info") or {}).get("cases", "?"),
        "calibration_text": calibration_text(meta.get("calibration_fit") or {}),
        "synthetic_note": ("These weights were trained on synthetic data only." if data["source"] == "synth"
                           else "These weights were trained on the data named above."),
    }
    return Template(CARD_TEMPLATE.read_text()).safe_substitute(values)


def export_run(run_dir: str | Path, out: str | Path, overwrite: bool = False, evaluate: bool = True,
               max_eval_cases: int | None = None) -> Path:
    """Write the bundle of a finished run; returns its folder."""
    from GliomaMTLLib.bundle import save_bundle
    from GliomaMTLLib.train.checkpoint import load_stage_weights

    run_dir = Path(run_dir)
    recipe, run = load_run(run_dir)
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    if run_info.get("status") not in (None, "finished"):
        raise ValueError(f"{run_dir}: the run is {run_info.get('status')!r}, not finished; resume it first")
    predictor = run_predictor(run)
    calibration, calibration_fit = fit_calibration(recipe, predictor) if recipe["export"]["calibrate"] else ({}, {})
    metrics: dict[str, Any] = {}
    if evaluate:
        metrics = evaluate_run(run_dir, run_dir / "eval-test", "test", max_eval_cases)
    meta = {
        **bundle_meta(recipe),
        "calibration": calibration,
        "calibration_fit": calibration_fit,
        "training": {
            "recipe": recipe["name"],
            "paper": recipe.get("paper"),
            "data": {k: recipe["data"][k] for k in ("source", "cohort", "n_train", "n_val", "n_test", "seed", "small", "root")},
            "iterations": run_info.get("iterations"),
            "seconds": run_info.get("seconds"),
            "hardware": run_info.get("hardware"),
            "synthetic_only": recipe["data"]["source"] == "synth",
        },
        "metrics": {"split": "test", "grid": "each case's input grid", "inference": "GliomaMTLLib.inference.Predictor",
                    "segmentation": metrics.get("segmentation", {}),
                    "genotype": metrics.get("genotype", {}), "survival": metrics.get("survival", [])},
    }
    state_dicts = {stage: load_stage_weights(run_dir, stage) for stage in recipe["stages"]}
    card = render_card(meta, recipe, metrics)
    bundle = save_bundle(out, meta, state_dicts, card=card, overwrite=overwrite)
    return bundle.folder


def compare_metrics(new: Mapping[str, Any], reference: Mapping[str, Any], tolerance: float) -> list[str]:
    """Differences beyond ``tolerance`` between two bundles' held-out metrics (``model.json`` metrics):
    Dice per stage/region, AUC and accuracy per task. Returns one line per problem (empty: match)."""
    problems = []
    pairs = [("segmentation", key, "dice_mean") for key in (reference.get("segmentation") or {})]
    pairs += [("genotype", key, m) for key in (reference.get("genotype") or {}) for m in ("auc", "accuracy")]
    for section, key, metric in pairs:
        ref = (reference.get(section) or {}).get(key, {}).get(metric)
        got = (new.get(section) or {}).get(key, {}).get(metric)
        if ref is None:
            continue
        if got is None:
            problems.append(f"{section} {key} {metric}: missing (reference {ref:.3f})")
        elif abs(float(got) - float(ref)) > tolerance:
            problems.append(f"{section} {key} {metric}: {float(got):.3f} vs reference {float(ref):.3f} (tolerance {tolerance})")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m GliomaMTLLib.train.export", description="Export a finished run as a model bundle.")
    parser.add_argument("--run", required=True, help="the run folder (runs/<name>)")
    parser.add_argument("--out", required=True, help="bundle folder to write (e.g. Resources/Models/<name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the held-out evaluation (metrics left empty)")
    parser.add_argument("--max-eval-cases", type=int, help="evaluate at most this many test cases")
    parser.add_argument("--check-against", metavar="BUNDLE",
                        help="compare the held-out metrics with this bundle's (e.g. the shipped one); exit 1 on a mismatch")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed absolute difference (default 0.05)")
    args = parser.parse_args(argv)
    folder = export_run(args.run, args.out, overwrite=args.overwrite, evaluate=not args.no_evaluate,
                        max_eval_cases=args.max_eval_cases)
    print(f"wrote {folder}")
    if args.check_against:
        from GliomaMTLLib.bundle import load_bundle

        problems = compare_metrics(load_bundle(folder).meta["metrics"], load_bundle(args.check_against).meta["metrics"],
                                   args.tolerance)
        for line in problems:
            print(f"MISMATCH {line}", file=sys.stderr)
        print(f"{'mismatch' if problems else 'match'}: {folder} vs {args.check_against} (tolerance {args.tolerance})")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
