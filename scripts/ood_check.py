#!/usr/bin/env python
"""How often the genotype is withheld as "unlike the training data", on metastasis-like phantoms
and on ordinary glioma phantoms nobody fitted on.

    python scripts/ood_check.py [--model gliomamtl_adult] [--n 8] [--seed 1400000] [--small]

Metastasis-like: 3-6 small (3-7 mm) ring-enhancing lesions at the grey-white junction, each in
10-25 mm of edema (the generator with its subject replaced, full 1 mm grid). Gliomas: the
generator's own adult subjects, seeds from ``--seed`` on (outside every recipe's and the genotype
fit's seeds). ``--small`` renders both groups as the generator's 3 mm phantoms (thick slices: the
false-alarm rate where blur merges and splits lesions). One row per case: separate tumor cores, feature distance, and which check fired;
then the share withheld per group. It measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def metastasis_subject(rng: np.random.Generator):
    from GliomaMTLLib.synth.genotype import LesionPlan, Subject

    plans = [LesionPlan(radius=float(rng.uniform(3.0, 7.0)), pattern="ring", tissue="junction", params=dict(
        necrosis=float(rng.uniform(0.3, 0.6)), rim_irregularity=0.1, enhancing_fraction=float(rng.uniform(0.3, 0.5)),
        edema_margin=float(rng.uniform(10.0, 25.0)), lobulation=0.05, mass=0.3, margin_blur=1.0, mismatch=False,
        calcifications=0)) for _ in range(int(rng.integers(3, 7)))]
    return Subject("adult", "idh_wt", {"idh": "wildtype", "codel_1p19q": "intact"}, float(rng.uniform(45, 80)),
                   plans, False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gliomamtl_adult", help="bundle name or folder")
    parser.add_argument("--n", type=int, default=8, help="phantoms per group")
    parser.add_argument("--seed", type=int, default=1_400_000, help="first seed")
    parser.add_argument("--small", action="store_true", help="3 mm phantoms instead of 1 mm")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    import GliomaMTLLib.synth.generator as generator
    from GliomaMTLLib.genotype.path import RadiologicalPath
    from GliomaMTLLib.inference import Predictor

    predictor = Predictor(args.model, device="cpu", num_threads=1)
    path = next((p for p in predictor.task_logits.paths if isinstance(p, RadiologicalPath)), None)
    limit = path.model.max_core_lesions if path else None
    threshold = path.model.ood.threshold if path and path.model.ood else None
    print(f"model {predictor.bundle.name} {predictor.bundle.version}: core limit {limit}, feature-distance threshold {threshold}"
          + (", 3 mm phantoms" if args.small else ""))
    print("| group | seed | cores | feature distance | withheld by |")
    print("|---|---|---|---|---|")
    withheld: dict[str, list[bool]] = {"metastasis-like": [], "glioma": []}
    original = generator.sample_subject
    for group in withheld:
        for i in range(args.n):
            seed = args.seed + i
            if group == "metastasis-like":
                subject = metastasis_subject(np.random.default_rng(seed))
                generator.sample_subject = lambda rng, cohort, s=subject: s
            try:
                case = generator.generate_case(seed, "adult", small=args.small)
            finally:
                generator.sample_subject = original
            prediction = predictor.predict(case)
            cores = prediction.tumor.get("core_lesions")
            distance = path.ood_distance() if path else float("nan")
            why = [w for w in prediction.warnings if w.startswith("input unlike the training data")]
            reason = ("cores" if why and "tumor cores" in why[0] else "features" if why else "")
            withheld[group].append(bool(why))
            print(f"| {group} | {seed} | {cores} | {distance:.2f} | {reason} |", flush=True)
    for group, flags in withheld.items():
        print(f"{group}: genotype withheld in {sum(flags)} of {len(flags)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
