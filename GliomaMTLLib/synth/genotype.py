"""Genotype, age, genotype-linked tumour appearance and survival of a synthetic subject.

The links come from the radiology literature and are deliberately overlapping distributions, not
rules, so a good classifier should reach an AUC of roughly 0.85-0.95 on the phantoms, not 1.0:

Adult diffuse glioma (WHO 2021):
* IDH-wildtype (~60%): older (~62 y); ring enhancement around necrosis in most cases, more edema,
  anywhere in the hemispheres (temporal, parietal, deep), sometimes multifocal; short survival
  (median ~14 months).
* IDH-mutant, 1p/19q intact (astrocytoma, ~24%): younger (~38 y); little or no enhancement
  (non-enhancing tumour, labelled NCR), little edema, frontal/insular; the T2-FLAIR mismatch sign
  in ~40%; median survival ~6 years.
* IDH-mutant, 1p/19q codeleted (oligodendroglioma, ~16%; only IDH-mutant tumours are codeleted):
  frontal, cortical (grey-white junction), calcified in ~60%, patchy faint enhancement, mismatch
  almost never; longest survival (~10 years).

Pediatric low-grade glioma (BRAF):
* fusion (~45%): posterior fossa (cerebellum) or optic pathway/hypothalamus; cystic with an
  enhancing mural nodule (pilocytic astrocytoma) or solid and avidly enhancing; little edema.
* V600E (~30%): supratentorial, hemispheric (temporal), mostly solid, sometimes calcified.
* other (~25%): mixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from GliomaMTLLib.synth.anatomy import REGIONS, Anatomy

COHORTS: tuple[str, ...] = ("adult", "pediatric")
SUBTYPES: dict[str, tuple[tuple[str, float], ...]] = {
    "adult": (("idh_wt", 0.60), ("idh_mut_intact", 0.24), ("idh_mut_codel", 0.16)),
    "pediatric": (("braf_fusion", 0.45), ("braf_v600e", 0.30), ("braf_other", 0.25)),
}
GENOTYPES: dict[str, dict[str, str]] = {
    "idh_wt": {"idh": "wildtype", "codel_1p19q": "intact"},
    "idh_mut_intact": {"idh": "mutant", "codel_1p19q": "intact"},
    "idh_mut_codel": {"idh": "mutant", "codel_1p19q": "codeleted"},
    "braf_fusion": {"braf": "fusion"},
    "braf_v600e": {"braf": "v600e"},
    "braf_other": {"braf": "other"},
}
# (mean, sd, lo, hi) of age at diagnosis in years.
AGE: dict[str, tuple[float, float, float, float]] = {
    "idh_wt": (62, 11, 25, 90), "idh_mut_intact": (38, 11, 18, 75), "idh_mut_codel": (45, 12, 20, 80),
    "braf_fusion": (8, 4.5, 1, 18), "braf_v600e": (11, 4.5, 1, 18), "braf_other": (9, 5, 1, 18),
}
# Median overall survival (days) of each subtype at its mean age and a median-sized tumour.
MEDIAN_SURVIVAL: dict[str, float] = {
    "idh_wt": 420.0, "idh_mut_intact": 2300.0, "idh_mut_codel": 3900.0,
    "braf_fusion": 9000.0, "braf_v600e": 5000.0, "braf_other": 6500.0,
}
# Region weights (per candidate point) of the tumour centre, see anatomy.REGIONS; "other" = none.
LOCATION: dict[str, dict[str, float]] = {
    "idh_wt": {"frontal": 1.0, "temporal": 1.5, "parietal": 1.2, "occipital": 0.8, "deep": 1.0,
               "cerebellum": 0.05, "brainstem": 0.05, "suprasellar": 0.2, "other": 0.6},
    "idh_mut_intact": {"frontal": 2.2, "temporal": 1.3, "parietal": 0.5, "occipital": 0.2, "deep": 1.3,
                       "cerebellum": 0.02, "brainstem": 0.05, "suprasellar": 0.1, "other": 0.3},
    "idh_mut_codel": {"frontal": 3.5, "temporal": 0.6, "parietal": 0.6, "occipital": 0.2, "deep": 0.3,
                      "cerebellum": 0.01, "brainstem": 0.01, "suprasellar": 0.05, "other": 0.2},
    "braf_fusion": {"frontal": 0.08, "temporal": 0.1, "parietal": 0.08, "occipital": 0.1, "deep": 0.4,
                    "cerebellum": 4.0, "brainstem": 1.0, "suprasellar": 8.0, "other": 0.1},
    "braf_v600e": {"frontal": 1.0, "temporal": 2.5, "parietal": 1.0, "occipital": 1.0, "deep": 0.8,
                   "cerebellum": 0.5, "brainstem": 0.3, "suprasellar": 0.8, "other": 0.5},
    "braf_other": {"frontal": 0.6, "temporal": 0.8, "parietal": 0.6, "occipital": 0.6, "deep": 0.8,
                   "cerebellum": 2.0, "brainstem": 1.0, "suprasellar": 2.0, "other": 0.5},
}


@dataclass
class LesionPlan:
    """A lesion's parameters before it is placed (see tumor.Lesion for their meaning).

    ``tissue`` is the centre's tissue preference: ``wm`` (deep white matter), ``junction``
    (grey-white junction: cortical involvement) or ``any``.
    """

    radius: float
    pattern: str
    tissue: str = "wm"
    params: dict = field(default_factory=dict)


@dataclass
class Subject:
    """Everything drawn before any anatomy is touched."""

    cohort: str
    subtype: str
    genotype: dict[str, str]
    age: float
    lesions: list[LesionPlan]
    multifocal_nearby: bool = True


def _pick(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    p = np.asarray([options[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(median * np.exp(rng.normal(0.0, sigma)), lo, hi))


def _main_lesion(rng: np.random.Generator, subtype: str) -> LesionPlan:
    u = rng.uniform
    if subtype == "idh_wt":
        pattern = _pick(rng, {"ring": 0.72, "patchy": 0.14, "none": 0.14})
        radius = _lognormal(rng, 16.0, 0.28, 7.0, 28.0) if rng.random() > 0.12 else float(u(4.0, 8.0))
        plan = LesionPlan(
            radius=radius, pattern=pattern,
            tissue=_pick(rng, {"wm": 0.8, "junction": 0.1, "any": 0.1}),
            params=dict(
                necrosis=float(np.clip(1.0 - u(2.0, 6.5) / radius, 0.15, 0.9)),  # rim 2-6.5 mm thick
                rim_irregularity=u(0.08, 0.45),
                enhancing_fraction=u(0.08, 0.4),
                edema_margin=u(6.0, 28.0) if rng.random() < 0.8 else u(0.5, 8.0),
                lobulation=u(0.08, 0.38),
                mass=u(0.3, 0.9),
                margin_blur=u(1.0, 2.5),
                mismatch=bool(rng.random() < 0.02),
                calcifications=int(rng.random() < 0.03) * int(rng.integers(1, 4)),
            ),
        )
    elif subtype in ("idh_mut_intact", "idh_mut_codel"):
        codel = subtype == "idh_mut_codel"
        pattern = _pick(rng, {"none": 0.5, "patchy": 0.42, "ring": 0.08} if codel
                        else {"none": 0.56, "patchy": 0.3, "ring": 0.14})
        calcified = rng.random() < (0.6 if codel else 0.08)
        radius = _lognormal(rng, 17.0, 0.28, 8.0, 30.0) if rng.random() > 0.1 else float(u(5.0, 9.0))
        plan = LesionPlan(
            radius=radius, pattern=pattern,
            tissue=_pick(rng, {"junction": 0.8, "wm": 0.2} if codel else {"wm": 0.65, "junction": 0.35}),
            params=dict(
                necrosis=float(np.clip(1.0 - u(2.0, 6.0) / radius, 0.15, 0.85)),
                rim_irregularity=u(0.1, 0.3),
                enhancing_fraction=u(0.03, 0.25),
                edema_margin=u(0.0, 8.0) if rng.random() < 0.7 else u(6.0, 20.0),
                lobulation=u(0.05, 0.3),
                mass=u(0.2, 0.8),
                margin_blur=u(1.0, 3.5),  # infiltrative, ill-defined margins
                mismatch=bool(pattern != "ring" and rng.random() < (0.03 if codel else 0.45)),
                calcifications=int(rng.integers(2, 9)) if calcified else 0,
            ),
        )
    else:  # pediatric
        cyst_p = {"braf_fusion": 0.65, "braf_v600e": 0.25, "braf_other": 0.4}[subtype]
        if rng.random() < cyst_p:
            pattern = "cyst"
        else:
            pattern = _pick(rng, {"braf_fusion": {"solid": 0.7, "patchy": 0.2, "none": 0.1},
                                  "braf_v600e": {"solid": 0.45, "patchy": 0.25, "none": 0.3},
                                  "braf_other": {"solid": 0.35, "patchy": 0.3, "none": 0.35}}[subtype])
        calcified = rng.random() < (0.15 if subtype == "braf_v600e" else 0.04)
        plan = LesionPlan(
            radius=_lognormal(rng, 16.0 if pattern == "cyst" else 15.0, 0.3, 7.0, 28.0), pattern=pattern,
            tissue="any" if subtype != "braf_v600e" else _pick(rng, {"junction": 0.6, "any": 0.4}),
            params=dict(enhancing_fraction=u(0.35, 0.9) if pattern == "solid" else u(0.05, 0.3),
                        nodule=u(0.3, 0.7), nodule_enhancing=bool(rng.random() < 0.9),
                        cyst_wall_enhancing=bool(rng.random() < 0.3),
                        edema_margin=u(0.0, 4.0) if rng.random() < 0.85 else u(4.0, 10.0),
                        lobulation=u(0.03, 0.12) if pattern == "cyst" else u(0.05, 0.25),
                        mass=u(0.5, 0.9) if pattern == "cyst" else u(0.3, 0.7),
                        margin_blur=u(1.0, 1.5) if pattern == "cyst" else u(1.0, 3.0),
                        mismatch=False, calcifications=int(rng.integers(1, 6)) if calcified else 0),
        )
    return plan


def sample_subject(rng: np.random.Generator, cohort: str) -> Subject:
    """Draw subtype, genotype labels, age and lesion plans.

    Raises:
        ValueError: for an unknown cohort.
    """
    if cohort not in COHORTS:
        raise ValueError(f"unknown cohort {cohort!r}; expected one of {COHORTS}")
    options = dict(SUBTYPES[cohort])
    subtype = _pick(rng, options)
    mean, sd, lo, hi = AGE[subtype]
    age = float(np.clip(rng.normal(mean, sd), lo, hi))
    main = _main_lesion(rng, subtype)
    lesions = [main]
    multifocal_p = {"idh_wt": 0.2, "idh_mut_intact": 0.06, "idh_mut_codel": 0.05}.get(subtype, 0.03)
    nearby = True
    if rng.random() < multifocal_p:
        second = _main_lesion(rng, subtype)
        second.radius = max(main.radius * float(rng.uniform(0.25, 0.7)), 4.0)
        second.pattern = main.pattern if rng.random() < 0.7 else second.pattern
        second.params["edema_margin"] = main.params["edema_margin"] * float(rng.uniform(0.4, 1.0))
        lesions.append(second)
        nearby = bool(rng.random() < 0.5)
    return Subject(cohort=cohort, subtype=subtype, genotype=dict(GENOTYPES[subtype]), age=age,
                   lesions=lesions, multifocal_nearby=nearby)


def choose_center(rng: np.random.Generator, anatomy: Anatomy, subtype: str, plan: LesionPlan,
                  min_depth_mm: float, near_ras: np.ndarray | None = None) -> np.ndarray:
    """Draw a tumour centre (MNI RAS mm) from the candidate lattice.

    Weight of a candidate = region weight of the subtype x tissue preference, restricted to points
    at least ``min_depth_mm`` below the brain surface (and within 15-45 mm of ``near_ras`` if given).
    """
    table = LOCATION[subtype]
    weights = np.zeros(len(anatomy.cand_ras))
    for name, bit in REGIONS.items():
        member = (anatomy.cand_region & bit) > 0
        weights[member] = np.maximum(weights[member], table[name])
    weights[anatomy.cand_region == 0] = table["other"]
    gm, wm, csf = anatomy.cand_gm, anatomy.cand_wm, anatomy.cand_csf
    if plan.tissue == "wm":
        tissue = wm**2 + 0.03
    elif plan.tissue == "junction":
        tissue = 4.0 * gm * wm + 0.05 * wm
    else:
        tissue = (gm + wm) ** 2 + 0.02
    weights = weights * tissue * (csf < 0.5)
    ok = anatomy.cand_depth >= min_depth_mm
    if near_ras is not None:
        d = np.linalg.norm(anatomy.cand_ras - near_ras, axis=1)
        ok &= (d > 15.0) & (d < 45.0)
    for relax in (1.0, 0.75, 0.5, 0.0):
        w = np.where(ok if relax == 1.0 else anatomy.cand_depth >= min_depth_mm * relax, weights, 0.0)
        if w.sum() > 0:
            break
    return anatomy.cand_ras[int(rng.choice(len(w), p=w / w.sum()))]


def sample_survival(rng: np.random.Generator, subject: Subject, whole_tumor_ml: float) -> tuple[float, bool]:
    """Overall survival (days) and whether death was observed.

    Weibull (shape 1.3) with the subtype's median, modulated by age (older = worse), tumour volume
    and multifocality; independent exponential censoring tuned to about 30% censored.
    """
    shape = 1.3
    median = MEDIAN_SURVIVAL[subject.subtype]
    mean_age = AGE[subject.subtype][0]
    log_hr = 0.03 * (subject.age - mean_age) + 0.25 * np.log(max(whole_tumor_ml, 1.0) / 60.0)
    log_hr += 0.35 * (len(subject.lesions) > 1)
    scale = median / np.log(2.0) ** (1.0 / shape)
    t_event = scale * (rng.exponential() / np.exp(log_hr)) ** (1.0 / shape)
    # Censoring rate mu with P(C < T) ~ mu / (lambda + mu) = 0.3 for an exponential T of this median.
    mu = (0.3 / 0.7) * np.log(2.0) / median
    t_censor = rng.exponential(1.0 / mu)
    days = float(max(1.0, np.round(min(t_event, t_censor))))
    return days, bool(t_event <= t_censor)
