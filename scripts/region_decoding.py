#!/usr/bin/env python
"""Which decoder, unsure-ET threshold and test-time flips should a model ship with? Chosen jointly.

    python scripts/region_decoding.py --model gliomamtl_adult --group tune --out runs/eval/decoding
    python scripts/region_decoding.py --model gliomamtl_adult --group report --out runs/eval/decoding
    python scripts/region_decoding.py --model gliomamtl_adult --group shift --out runs/eval/decoding
    python scripts/region_decoding.py --out runs/eval/decoding --score

The cascade turns the main network's class probabilities into labels with a decoder
(:mod:`GliomaMTLLib.inference.decoding`: the 4-label argmax, or nested region thresholds
WT > a, TC > b inside it, ET > c inside the core), then post-processes them (the unsure-ET rule
at ``et_min_confidence`` sees the decoder's ET). Prediction (``--group``) runs each phantom once
with post-processing off, with and without test-time flips, and stores the region
probabilities in the tumor's box, the reference labels of that box and the brain mask there
(``--out/<group>/<case>.npz``, resumable). Scoring (``--score``) then decodes and post-processes
every setting from those files, with the library's own decoder and rules, and chooses the setting
with the best mean of WT, TC and ET Dice on ``tune``; ``report`` (the card's test seeds, never
used for the choice) and ``shift`` (contrast spread 1.8, a setting training never used) show it
beside the shipped setting, paired, with bootstrap intervals. It asserts nothing about the model;
it stops if the stored argmax does not reproduce the Predictor's labels.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WT_T = (0.4, 0.5, 0.6)
TC_T = (0.4, 0.5, 0.6)
ET_T = (0.3, 0.4, 0.5, 0.6)
CONFIDENCES = (0.0, 0.6, 0.65, 0.7, 0.75, 0.8)
REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
GROUPS = {
    "tune": [(105_000 + i, 1.0) for i in range(40)] + [(1_600_000 + i, 1.0) for i in range(40)],
    "report": [(205_000 + i, 1.0) for i in range(100)],
    "shift": [(1_300_000 + i, 1.8) for i in range(30)],
}


def decoders() -> list[dict]:
    """Every decoder on the grid, the argmax first."""
    grid = [{"mode": "regions", "wt": a, "tc": b, "et": c} for a, b, c in itertools.product(WT_T, TC_T, ET_T)]
    return [{"mode": "argmax"}, *grid]


def predict_group(model: str, group: str, out: Path) -> None:
    """Store each phantom's region probabilities (plain and flipped), reference and brain mask in its box."""
    import torch

    torch.set_num_threads(1)
    import json

    from GliomaMTLLib.inference import Predictor
    from GliomaMTLLib.inference.decoding import Decoding, foreground_from_regions
    from GliomaMTLLib.inference.postprocess import PostprocessConfig, outside_brain
    from GliomaMTLLib.synth import synthesize

    off = {"et_min_ml": 0.0, "min_component_ml": 0.0, "et_min_confidence": 0.0}
    predictor = Predictor(model, device="cpu", num_threads=1, postprocess=off, decoding={"mode": "argmax"}, tta=False)
    try:  # the phantoms, the regions and the file names are the adult cohort's
        Decoding("regions").check_regions(predictor.regions)
    except ValueError as exc:
        raise SystemExit(f"{model}: this script compares NCR/ED/ET decoders on adult phantoms; {exc}") from None
    folder = out / group
    folder.mkdir(parents=True, exist_ok=True)
    rules = PostprocessConfig.from_dict(predictor.bundle.meta.get("postprocess")).to_dict()  # the model's own
    rules_file = out / "postprocess.json"
    if rules_file.exists() and json.loads(rules_file.read_text()) != rules:
        raise SystemExit(f"{rules_file} holds another model's post-processing {rules_file.read_text()}; use another --out")
    rules_file.write_text(json.dumps(rules))
    for seed, spread in GROUPS[group]:
        target = folder / f"synth-adult-{seed}.npz"  # synthesize's default case id; skip before generating
        if target.exists():
            continue
        case = synthesize(seed, "adult", contrast_spread=spread).case
        stored: dict[str, np.ndarray] = {}
        for tta in (False, True):
            predictor.tta = tta
            pred = predictor.predict(case)
            probs = pred.probabilities
            if tta and probs.slices != box:
                raise SystemExit(f"{case.case_id}: the flipped prediction's box {probs.slices} is not {box}")
            box = probs.slices
            suffix = "_tta" if tta else ""
            for region in REGIONS:
                stored[region.lower() + suffix] = probs.box_values(region).astype(np.float32)
            if not tta:
                plain_labels = pred.labels
        outside = outside_brain(case.images[case.sequences[0]], box)
        ref = case.label
        ref_box = ref[box]
        ref_out = [int(np.count_nonzero(np.isin(ref, m))) - int(np.count_nonzero(np.isin(ref_box, m))) for m in REGIONS.values()]
        check = Decoding().labels(foreground_from_regions(stored["wt"], stored["tc"], stored["et"]))
        check[outside] = 0
        differ = int(np.count_nonzero(check != plain_labels[box])) + int(np.count_nonzero(plain_labels)) - int(np.count_nonzero(plain_labels[box]))
        if differ > 1e-3 * max(int(np.count_nonzero(plain_labels)), 1):  # float rounding only
            raise SystemExit(f"{case.case_id}: the stored argmax differs from the Predictor on {differ} voxels")
        np.savez_compressed(
            folder / f".{target.name}.tmp.npz",  # atomic: a killed run leaves no half-written case
            box=np.array([[s.start, s.stop] for s in box]), ref_box=ref_box, ref_outside=np.array(ref_out),
            outside=outside, voxel_ml=np.array(case.geometry.voxel_volume_ml),
            **{k: v.astype(np.float16) for k, v in stored.items()},
        )
        (folder / f".{target.name}.tmp.npz").rename(target)
        print(group, case.case_id, flush=True)


def score_case(data: dict, decoding: dict, tta: bool, rules: dict) -> np.ndarray:
    """(WT, TC, ET) Dice of one stored case under one decoder at each of :data:`CONFIDENCES`
    (shape ``(len(CONFIDENCES), 3)``), with the model's other post-processing ``rules``."""
    from GliomaMTLLib.inference.decoding import Decoding, foreground_from_regions
    from GliomaMTLLib.inference.postprocess import PostprocessConfig, apply_postprocess, et_mean_probability

    suffix = "_tta" if tta else ""
    wt, tc, et = (data[r + suffix].astype(np.float32) for r in ("wt", "tc", "et"))
    labels = Decoding.from_dict(decoding).labels(foreground_from_regions(wt, tc, et))
    labels[data["outside"]] = 0
    voxel_ml = float(data["voxel_ml"])
    config = PostprocessConfig.from_dict({**rules, "et_min_confidence": 0.0})
    labels, _ = apply_postprocess(labels, [1, 2, 3], voxel_ml, config)
    ref = data["ref_box"]
    dices = []
    for members, outside_ref in zip(REGIONS.values(), data["ref_outside"]):
        p, r = np.isin(labels, members), np.isin(ref, members)
        denominator = int(p.sum()) + int(r.sum()) + int(outside_ref)
        dices.append(1.0 if denominator == 0 else 2.0 * int((p & r).sum()) / denominator)
    # The unsure-ET rule (as apply_postprocess's rule 3) turns all ET into NCR: WT and TC keep their Dice.
    mean_p, et_ml = et_mean_probability(labels, et, None, voxel_ml)
    et_if_fired = 1.0 if int(np.count_nonzero(ref == 3)) + int(data["ref_outside"][2]) == 0 else 0.0
    rows = np.tile(np.asarray(dices), (len(CONFIDENCES), 1))
    for i, c in enumerate(CONFIDENCES):
        if config.unsure_et(mean_p, et_ml, c):
            rows[i, 2] = et_if_fired
    return rows


def grid_settings() -> list[tuple[dict, float, bool]]:
    """(decoder, unsure-ET threshold, flips) for the whole grid, in :func:`score_table`'s order."""
    return [(d, c, t) for d in decoders() for c in CONFIDENCES for t in (False, True)]


def score_table(out: Path, settings: list, rules: dict) -> dict[str, np.ndarray]:
    """Group -> Dice array (settings, cases, 3) of the stored cases under :func:`grid_settings`
    ``settings``, kept in ``out/scores.npz`` (recomputed when the cases, settings or rules change)."""
    import json

    cache = out / "scores.npz"
    files = {g: sorted(p.name for p in (out / g).glob("synth-adult-*.npz")) for g in GROUPS if (out / g).is_dir()}
    key = json.dumps({"files": files, "settings": [list(s) for s in settings], "rules": rules}, sort_keys=True)
    if cache.exists():
        with np.load(cache) as npz:
            if str(npz["key"]) == key:
                return {g: npz[g] for g in files if files[g]}
    results: dict[str, np.ndarray] = {}
    for group, names in files.items():
        if not names:
            continue
        table = np.zeros((len(settings), len(names), 3))
        for j, name in enumerate(names):
            with np.load(out / group / name) as npz:
                data = {k: npz[k] for k in npz.files}
            for i_d, d in enumerate(decoders()):
                for i_t, t in enumerate((False, True)):
                    rows = score_case(data, d, t, rules)
                    for k in range(len(CONFIDENCES)):  # grid_settings' order: decoder, threshold, flips
                        table[(i_d * len(CONFIDENCES) + k) * 2 + i_t, j] = rows[k]
        results[group] = table
        print(f"{group}: {len(names)} cases scored", flush=True)
    np.savez(cache, key=np.array(key), **results)
    return results


def score(out: Path, show: list[str]) -> None:
    """Print the grid's best settings on ``tune`` and the chosen one against the shipped one on every group."""
    import json

    from GliomaMTLLib.metrics.segmentation import bootstrap_mean_ci

    settings = grid_settings()
    rules = json.loads((out / "postprocess.json").read_text())
    if rules["et_min_confidence"] not in CONFIDENCES:
        raise SystemExit(f"the model's et_min_confidence {rules['et_min_confidence']} is not on the grid {CONFIDENCES}")
    results = score_table(out, settings, rules)  # group -> (settings, cases, 3)
    # the baseline: argmax, the model's rules, no flips
    base = settings.index(({"mode": "argmax"}, rules["et_min_confidence"], False))
    if "tune" not in results:
        raise SystemExit(f"no tuning cases in {out / 'tune'}")
    mean = results["tune"].mean(axis=1)  # (settings, 3)
    order = np.argsort(-mean.mean(axis=1))

    def name(s) -> str:
        d, c, t = s
        dec = "argmax" if d["mode"] == "argmax" else f"regions {d['wt']:g}/{d['tc']:g}/{d['et']:g}"
        return f"{dec}, unsure-ET {c:g}, {'flips' if t else 'no flips'}"

    print("\nbest settings on tune (mean of WT, TC, ET):")
    print("| setting | " + " | ".join(f"{g} WT / TC / ET (n={r.shape[1]})" for g, r in results.items()) + " |")
    print("|---|" + "---|" * len(results))
    names = [name(x) for x in settings]
    unknown = [n for n in show if n not in names]
    if unknown:
        raise SystemExit(f"--show {unknown[0]!r} is not a setting on the grid, e.g. {names[1]!r}")
    asked = [names.index(n) for n in show]
    shown = list(dict.fromkeys([base, *order[:8], *asked]))
    for i in shown:
        cells = [" / ".join(f"{v:.4f}" for v in r[i].mean(axis=0)) for r in results.values()]
        print(f"| {name(settings[i])}{' (shipped)' if i == base else ''} | " + " | ".join(cells) + " |")
    best = int(order[0])
    best_plain = int(next(i for i in order if not settings[i][2]))
    for i in dict.fromkeys((best, best_plain, *asked)):
        print(f"\n{name(settings[i])} minus shipped, paired (95% bootstrap interval; cases better/worse):")
        for group, r in results.items():
            cells = []
            for k, region in enumerate(REGIONS):
                diff = r[i, :, k] - r[base, :, k]
                lo, hi = bootstrap_mean_ci(diff)
                cells.append(f"{region} {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] ({(diff > 1e-9).sum()}/{(diff < -1e-9).sum()})")
            print(f"  {group}: " + "; ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gliomamtl_adult", help="bundle name or folder")
    parser.add_argument("--group", choices=sorted(GROUPS), help="which phantoms to predict")
    parser.add_argument("--out", required=True, help="folder for <group>/<case>.npz")
    parser.add_argument("--score", action="store_true", help="only score the stored cases")
    parser.add_argument("--show", action="append", default=[], metavar="SETTING",
                        help='with --score: also compare this setting with the shipped one, written as the table '
                             'writes it, e.g. "regions 0.6/0.4/0.5, unsure-ET 0.7, flips" (repeatable)')
    args = parser.parse_args()
    out = Path(args.out)
    if args.score:
        score(out, args.show)
        return 0
    if not args.group:
        parser.error("--group is required unless --score")
    predict_group(args.model, args.group, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
