#!/usr/bin/env python
"""What genotype AUC the phantoms allow: a classifier that sees the generator's own draws.

For each phantom the generator first draws a subject (``GliomaMTLLib.synth.genotype``): subtype,
age, and the main lesion's pattern, size, necrosis, enhancing fraction, edema margin, margin blur,
T2-FLAIR mismatch, calcifications and tissue preference, then its centre's brain region. A
class-balanced L2 logistic regression on those draws (no image at all) bounds what any image-based
genotype path can reach on this generator: an upper limit, since a draw can be invisible in the
rendered images (calcified foci of 0.7-1.8 mm radius are smaller than the 1.5 mm main grid).

    python scripts/genotype_ceiling.py --cohort adult
    python scripts/genotype_ceiling.py --cohort pediatric

The generator's tissue preference ("grey-white junction" or "anywhere") is a hidden label that only
weights where the centre may fall; the "visible draws" column replaces it by the grey-matter
fraction at the centre, which is what an image can show of it.

Prints a markdown table (AUC on held-out draws, one-vs-rest for the pediatric classes); it
measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATTERNS = ("ring", "patchy", "none", "cyst", "solid")
TISSUES = ("wm", "junction", "any")
LESION = ("radius", "necrosis", "enhancing_fraction", "edema_margin", "margin_blur", "mismatch", "calcified", "lesions")


def draw(cohort: str, n: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(features, feature names, subtypes) of the phantoms of seeds ``seed .. seed + n - 1``, replayed
    as the generator draws them on its 3 mm grid (subject, pose, then the main lesion's centre, at
    the depth that pose allows); the region from the 2 mm anatomy."""
    from GliomaMTLLib.synth.anatomy import load_anatomy
    from GliomaMTLLib.synth.generator import replay_main_lesion
    from GliomaMTLLib.synth.genotype import REGIONS

    anatomy = load_anatomy(2)
    names = ([f"pattern_{p}" for p in PATTERNS] + [f"tissue_{t}" for t in TISSUES]
             + [f"region_{r}" for r in REGIONS] + list(LESION) + ["centre_lateral", "centre_anterior", "centre_superior",
                                                                   "centre_depth", "centre_grey_matter", "age"])
    rows, subtypes = [], []
    for i in range(n):
        subject, _, centre = replay_main_lesion(seed + i, cohort, small=True)
        plan = subject.lesions[0]
        nearest = int(np.linalg.norm(anatomy.cand_ras - centre, axis=1).argmin())
        flags = int(anatomy.cand_region[nearest])
        p = plan.params
        rows.append([plan.pattern == q for q in PATTERNS] + [plan.tissue == t for t in TISSUES]
                    + [bool(flags & bit) for bit in REGIONS.values()]
                    + [plan.radius, p.get("necrosis", 0.0), p.get("enhancing_fraction", 0.0), p.get("edema_margin", 0.0),
                       p.get("margin_blur", 0.0), p.get("mismatch", False), p.get("calcifications", 0) > 0,
                       len(subject.lesions), abs(centre[0]), centre[1], centre[2], anatomy.cand_depth[nearest],
                       anatomy.cand_gm[nearest], subject.age])
        subtypes.append(subject.subtype)
    return np.asarray(rows, dtype=float), names, np.asarray(subtypes)


def auc(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(C=0.3, class_weight="balanced", max_iter=5000).fit(scaler.transform(x_train), y_train)
    return float(roc_auc_score(y_test, model.predict_proba(scaler.transform(x_test))[:, 1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", choices=("adult", "pediatric"), default="adult")
    parser.add_argument("--n", type=int, default=6000, help="phantoms replayed, seeds --seed onwards (the last 2,000 are the test set)")
    parser.add_argument("--seed", type=int, default=0, help="first phantom seed")
    args = parser.parse_args()

    x, names, subtype = draw(args.cohort, args.n, args.seed)
    targets = ({"IDH mutant": subtype != "idh_wt", "1p/19q codeleted": subtype == "idh_mut_codel"} if args.cohort == "adult"
               else {f"BRAF {s.split('_')[1]}": subtype == s for s in ("braf_fusion", "braf_v600e", "braf_other")})
    location = [i for i, n in enumerate(names) if n.startswith(("region_", "centre_"))]
    no_age = [i for i, n in enumerate(names) if n != "age"]
    # The tissue preference is a hidden label (it only weights where the centre may fall); what an
    # image can show of it is the grey matter at the centre, which the "visible" input keeps.
    visible = [i for i in no_age if not names[i].startswith("tissue_")]
    inputs = {"every draw but age": no_age, "every draw": list(range(len(names))),
              "visible draws (no tissue preference, no age)": visible, "location only": location}
    test = slice(args.n - 2000, args.n)
    print(f"{args.cohort}: {args.n - 2000} training draws (or the first 420, as many as the shipped paths' "
          f"development phantoms), 2,000 test draws")
    print("| target | " + " | ".join(f"{k}, 420 / {args.n - 2000}" for k in inputs) + " |")
    print("|---|" + "---|" * len(inputs))
    scores = {label: [] for label in targets}
    for label, y in targets.items():
        for cols in inputs.values():
            small = auc(x[:420, cols], y[:420], x[test][:, cols], y[test])
            large = auc(x[: args.n - 2000, cols], y[: args.n - 2000], x[test][:, cols], y[test])
            scores[label].append((small, large))
        print(f"| {label} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in scores[label]) + " |")
    if args.cohort == "pediatric":  # one-vs-rest fits, averaged: the macro AUC the card reports
        macro = np.mean([scores[label] for label in targets], axis=0)
        print("| BRAF macro | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in macro) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
