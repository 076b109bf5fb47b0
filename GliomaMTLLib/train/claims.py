"""The seed papers' claims, checked on the synthetic cohort: ``python -m GliomaMTLLib.train.claims``.

Trains the ``claims`` recipe (training/configs/claims.yaml) in variants that differ in one design
choice each, evaluates every variant on the same held-out split with `GliomaMTLLib.train.evaluate`
(through `GliomaMTLLib.inference.Predictor`, the cascade users run, on each case's input grid), and
writes ``<out>/claims.md`` (the table) and ``<out>/claims.json`` (every number):

- single-task vs multi-task segmentation (papers 000, 001, 004 claim the genotype task helps
  the segmentation, or at least does not hurt it);
- whole-brain vs seg-gated genotype input (000 claims gating the input by the predicted tumor
  beats reading genotype from whole-brain features, as 001-003 do);
- the four task weightings: fixed (003), linear (004), uncertainty (000), dynamic (001).

Segmentation differences are paired (same test cases) with a bootstrap 95% interval, so a
reader can tell a real difference from noise. ``--seeds`` repeats every variant with other
network seeds (same data) and reports the mean.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REGIONS = ("WT", "TC", "ET")
TASKS = ("idh", "codel_1p19q")


@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: a name, what it tests, and its recipe overrides."""

    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)


VARIANTS: tuple[Variant, ...] = (
    Variant("seg_only", "single-task segmentation (no genotype heads)",
            {"tasks": {}, "stages.main.network.tasks": {}}),
    Variant("seggated_uncertainty", "multi-task, seg-gated genotype input (000), uncertainty weighting (000)"),
    Variant("wholebrain_uncertainty", "multi-task, whole-brain bottleneck genotype head (002/003), uncertainty weighting",
            {"stages.main.network.head_style": "bottleneck"}),
    Variant("seggated_fixed", "multi-task, seg-gated, fixed weights seg 1 + 0.3 per task (003)",
            {"stages.main.loss.weighting": {"type": "fixed", "weights": {"seg": 1.0, "idh": 0.3, "codel_1p19q": 0.3}}}),
    Variant("seggated_linear", "multi-task, seg-gated, linear weighting, every task 1 (004)",
            {"stages.main.loss.weighting": {"type": "linear"}}),
    Variant("seggated_dynamic", "multi-task, seg-gated, dynamic weighting L_cls + L_seg/(L_cls+L_seg) L_seg (001)",
            {"stages.main.loss.weighting": {"type": "dynamic"}}),
    Variant("seggated_uncertainty_summary", "as seggated_uncertainty, plus the tumor composition into the heads (ours)",
            {"stages.main.network.seg_summary": True}),
)

#: Stand-in, in a variant's overrides, for the run folder of ``seg_only`` with the same seed.
SEG_ONLY_RUN = "{seg_only_run}"

# The papers' heads trained the way issue 12 asks: on the finished single-task network of the same
# seed (its weights copied, encoder and decoder frozen), class-balanced for IDH, with no sequence
# dropout or contrast curves, for 400 iterations. Segmentation is the single-task one by construction.
_HEAD_PHASE = {"name": "genotype", "iterations": 400, "genotype": True, "freeze": ["encoder.*", "decoder.*"],
               "balance": "idh", "augment": {"sequence_dropout": 0.0, "contrast_prob": 0.0}}


def _head_variant(style: str, paper: str) -> Variant:
    return Variant(f"heads_{style}", f"{style} head ({paper}) on the frozen seg_only network of the same seed, "
                   "class-balanced, 400 it", {
                       "stages.main.init": SEG_ONLY_RUN,
                       "stages.main.network.head_style": style,
                       "stages.main.loss.weighting": {"type": "fixed", "weights": {"seg": 1.0, "idh": 1.0, "codel_1p19q": 1.0}},
                       "stages.main.phases": [_HEAD_PHASE],
                   })


HEAD_VARIANTS: tuple[Variant, ...] = (
    _head_variant("seggated", "000"), _head_variant("multilevel", "001"), _head_variant("bottleneck", "002/003"),
)
ALL_VARIANTS: tuple[Variant, ...] = VARIANTS + HEAD_VARIANTS


def variant_recipe(variant: Variant, seed: int, base: str = "claims", smoke: bool = False,
                   extra: Sequence[str] = (), runs: Path = Path("runs/claims")) -> dict[str, Any]:
    """The base recipe with the variant's overrides, the network seed and any ``--set`` extras
    (``SEG_ONLY_RUN`` becomes ``runs/seg_only-seed<seed>``)."""
    from GliomaMTLLib.train.config import load_recipe

    overrides = {k: (str(runs / f"seg_only-seed{seed}") if v == SEG_ONLY_RUN else v) for k, v in variant.overrides.items()}
    pairs: list[Any] = [("name", f"claims-{variant.name}"), ("seed", seed), *overrides.items()]
    return load_recipe(base, [*pairs, *extra], smoke=smoke)


def run_variant(variant: Variant, seed: int, runs: Path, smoke: bool = False, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train (or resume / reuse a finished run) and evaluate one variant; returns its metrics."""
    from GliomaMTLLib.train.evaluate import evaluate_run
    from GliomaMTLLib.train.trainer import train

    recipe = variant_recipe(variant, seed, smoke=smoke, extra=extra, runs=runs)
    run_dir = runs / f"{variant.name}-seed{seed}"
    info_path = run_dir / "run.json"
    finished = info_path.is_file() and json.loads(info_path.read_text()).get("status") == "finished"
    if not finished:
        train(recipe, run_dir, resume=(run_dir / "checkpoint.pt").is_file(), quiet=True)
    saved = run_dir / "eval-test" / "metrics.json"
    if finished and saved.is_file() and saved.stat().st_mtime >= info_path.stat().st_mtime:
        metrics = json.loads(saved.read_text())  # evaluated by an earlier call: reuse
    else:
        metrics = evaluate_run(run_dir)
    seconds = json.loads(info_path.read_text()).get("seconds")
    return {"variant": variant.name, "seed": seed, "run": str(run_dir), "train_seconds": seconds, "metrics": metrics}


def _case_dice(run: str) -> dict[str, dict[str, float]]:
    """{region: {case_id: Dice}} from an evaluated run's segmentation_cases.csv."""
    import csv

    out: dict[str, dict[str, float]] = {r: {} for r in REGIONS}
    with open(Path(run) / "eval-test" / "segmentation_cases.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["stage"] == "main" and row["region"] in out:
                out[row["region"]][row["case_id"]] = float(row["dice"])
    return out


def paired_difference(a: dict[str, float], b: dict[str, float], n_boot: int = 2000, seed: int = 0
                      ) -> tuple[float, float, float]:
    """Mean of b - a over the cases both have, with a percentile-bootstrap 95% interval."""
    from scipy.stats import bootstrap

    cases = sorted(set(a) & set(b))
    if not cases:
        return float("nan"), float("nan"), float("nan")
    d = np.asarray([b[c] - a[c] for c in cases], dtype=float)
    ci = bootstrap((d,), np.mean, n_resamples=n_boot, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return float(d.mean()), float(ci.low), float(ci.high)


def summarize(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant (mean over seeds): Dice per region, AUC per task, training time, and
    the paired Dice difference to ``seg_only`` (first seed of each)."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    reference = by_variant.get("seg_only", [None])[0]
    ref_dice = _case_dice(reference["run"]) if reference else None
    rows = []
    for name, runs in by_variant.items():
        row: dict[str, Any] = {"variant": name, "seeds": len(runs)}
        paired = ref_dice is not None and name != "seg_only"
        case_dice = _case_dice(runs[0]["run"]) if paired else {}
        for region in REGIONS:
            vals = [r["metrics"]["segmentation"].get(f"main/{region}", {}).get("dice_mean") for r in runs]
            known = [v for v in vals if v is not None]
            row[f"dice_{region}"] = float(np.mean(known)) if known else float("nan")
            if paired:
                mean, lo, hi = paired_difference(ref_dice[region], case_dice[region])
                row[f"delta_{region}"] = f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            else:
                row[f"delta_{region}"] = "-"
        for task in TASKS:
            rows_task = [r["metrics"]["genotype"].get(task) for r in runs if r["metrics"]["genotype"].get(task)]
            if rows_task:
                row[f"auc_{task}"] = float(np.mean([t["auc"] for t in rows_task]))
                row[f"auc_{task}_ci"] = (f"[{rows_task[0]['auc_ci_low']:.2f}, {rows_task[0]['auc_ci_high']:.2f}]"
                                         if len(rows_task) == 1 else
                                         f"{len(rows_task)} seeds: {min(t['auc'] for t in rows_task):.2f} to "
                                         f"{max(t['auc'] for t in rows_task):.2f}")
            else:
                row[f"auc_{task}"] = float("nan")
                row[f"auc_{task}_ci"] = "-"
        row["train_minutes"] = float(np.mean([float(r["train_seconds"] or 0) for r in runs])) / 60
        rows.append(row)
    return rows


def render(rows: Sequence[dict[str, Any]], recipe: dict[str, Any], command: str) -> str:
    """The markdown report: setup, the table, and what each row tests."""
    from GliomaMTLLib.metrics import markdown_table
    from GliomaMTLLib.train.config import phase_iterations

    data = recipe["data"]
    net = recipe["stages"]["main"]["network"]
    phases = ", ".join(f"{p['name']} {phase_iterations(recipe, p)} it" for p in recipe["stages"]["main"]["phases"])
    lines = [
        "# The seed papers' claims, checked on synthetic phantoms", "",
        f"Produced by `{command}`.", "",
        f"- data: synthetic adult phantoms at {'3 mm (small)' if data['small'] else 'full size'}, "
        f"{data['n_train']} training / {data['n_test']} test cases (seed {data['seed']})",
        f"- network: features {net['features']}, whole-brain input {recipe['stages']['main']['input']['size']}, "
        f"{phases}, batch {recipe['stages']['main']['batch_size']}"
        + ("; the heads_* variants train only their head, on the finished seg_only network of the same seed "
           "(see below)" if any(r["variant"].startswith("heads_") for r in rows) else ""),
        "- Dice: mean over test cases (legacy BraTS convention); delta: paired difference to `seg_only` "
        "on the same cases, with a bootstrap 95% interval; AUC with its bootstrap 95% interval", "",
        markdown_table(rows, [
            ("variant", "variant"), ("dice_WT", "Dice WT"), ("dice_TC", "Dice TC"), ("dice_ET", "Dice ET"),
            ("delta_WT", "vs seg_only WT"), ("delta_TC", "vs seg_only TC"), ("delta_ET", "vs seg_only ET"),
            ("auc_idh", "AUC IDH"), ("auc_idh_ci", "IDH 95% CI"), ("auc_codel_1p19q", "AUC 1p/19q"),
            ("auc_codel_1p19q_ci", "1p/19q 95% CI"), ("train_minutes", "train min"),
        ]), "",
        "Variants:", "",
    ]
    lines += [f"- `{v.name}`: {v.description}" for v in ALL_VARIANTS if any(r["variant"] == v.name for r in rows)]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="training/results", help="folder of claims.md / claims.json")
    parser.add_argument("--runs", default="runs/claims", help="folder of the variants' run folders")
    parser.add_argument("--variants", nargs="+", choices=[v.name for v in ALL_VARIANTS],
                        help="only these variants (default: the seven design variants; the heads_* variants "
                             "train on seg_only of the same seed, which runs first)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="network seeds (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], nargs="+", metavar="KEY=VALUE",
                        help="recipe overrides applied to every variant (e.g. stages.main.phases.0.iterations=200)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and network, 2 iterations (a test)")


def main(argv: Sequence[str] | None = None) -> int:
    from GliomaMTLLib.io.atomic import write_text_atomic

    parser = argparse.ArgumentParser(prog="python -m GliomaMTLLib.train.claims", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    extra = [item for group in args.overrides for item in group]
    chosen = [v for v in ALL_VARIANTS if v.name in args.variants] if args.variants else list(VARIANTS)
    if any(SEG_ONLY_RUN in v.overrides.values() for v in chosen) and all(v.name != "seg_only" for v in chosen):
        chosen.insert(0, next(v for v in VARIANTS if v.name == "seg_only"))  # the heads start from it
    if all(v.name != "seg_only" for v in chosen):
        print("[claims] note: without seg_only there is no paired Dice difference", file=sys.stderr)
    runs, out = Path(args.runs), Path(args.out)
    start = time.time()
    results = []
    for seed in args.seeds:
        for variant in chosen:
            print(f"[claims] {variant.name} seed {seed} ({time.time() - start:.0f} s)", file=sys.stderr)
            results.append(run_variant(variant, seed, runs, smoke=args.smoke, extra=extra))
    rows = summarize(results)
    command = " ".join(["python -m GliomaMTLLib.train.claims", *(sys.argv[1:] if argv is None else argv)])
    out.mkdir(parents=True, exist_ok=True)
    recipe = variant_recipe(chosen[0], args.seeds[0], smoke=args.smoke, extra=extra, runs=runs)
    write_text_atomic(out / "claims.md", render(rows, recipe, command))
    write_text_atomic(out / "claims.json", json.dumps({"rows": rows, "runs": results}, indent=2, default=float) + "\n")
    print(f"[claims] wrote {out / 'claims.md'} ({time.time() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
