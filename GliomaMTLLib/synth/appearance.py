"""MR contrast of every tissue class in T1, T1 post-contrast, T2 and FLAIR, and its randomisation.

Means are in units of the per-sequence z-score over the brain, calibrated so that a phantom
rendered with the base values reproduces REAL_STATS.md (one real BraTS glioblastoma: normal-brain
percentiles and per-compartment means). ``python scripts/bench_synth.py --calibrate 5`` fits the
anchor classes (least squares on IDH-wildtype ring cases); the table below takes those fits for
T1/T1c and compromises for T2/FLAIR, whose normal-brain shape the MNI average anatomy cannot match
exactly (more partial-volume CSF than a real scan): the fit wanted T2 CSF below necrosis and a
FLAIR GM/WM contrast of 1.7, both unrealistic. ``--stats N --spread 0|1`` prints the comparison.
Each case then draws its own contrast SynthSeg-style, well beyond the calibration:

* most sequences: every class mean = base + Gaussian jitter, then a global contrast stretch, so
  the label-defining cues (edema bright on FLAIR and T2, enhancing tumour bright on T1c, CSF dark on
  T1/FLAIR and bright on T2) hold in most cases but with widely varying margins;
* with probability ``wild_probability`` per sequence: every class mean drawn uniformly at random
  (any ordering, cues lost on purpose);
then gamma, bias field, blur or thick slices, noise, and the stored intensity range and type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from GliomaMTLLib.labels import SEQUENCES
from GliomaMTLLib.synth.distractors import DISTRACTOR_CLASSES
from GliomaMTLLib.synth.tumor import CORE_CLASSES

NORMAL_CLASSES: tuple[str, ...] = ("csf", "gm", "wm")
CLASSES: tuple[str, ...] = NORMAL_CLASSES + CORE_CLASSES + ("edema",) + DISTRACTOR_CLASSES

# fmt: off
# Base class means (z over brain; the `RELATIVE` classes below are set from their reference class). Sources: REAL_STATS.md for the compartments (NCR, ED, ET) and
# normal-brain percentiles; textbook ordering for the rest (cyst ~ CSF but less suppressed on
# FLAIR; calcification dark on T2/FLAIR/T1c; T2-FLAIR mismatch core bright on T2, suppressed on
# FLAIR; vessels/choroid plexus bright on T1c, flow voids dark on T2).
BASE_MEANS: dict[str, dict[str, float]] = {
    "t1n": {"csf": -2.40, "gm": -0.26, "wm": 0.90, "necrosis": -1.90, "netumor": -1.30, "mm_core": -1.60,
            "mm_rim": -1.30, "et": -1.55, "cyst": -2.45, "calc": -0.60, "edema": -1.40, "vessel": -0.9,
            "dura": -0.2},
    "t1c": {"csf": -2.10, "gm": -0.46, "wm": 0.54, "necrosis": -1.40, "netumor": -1.00, "mm_core": -1.30,
            "mm_rim": -1.00, "et": 1.60, "cyst": -2.00, "calc": -1.40, "edema": -1.55, "vessel": 2.2,
            "dura": 2.2},
    "t2w": {"csf": 2.60, "gm": -0.36, "wm": -1.15, "necrosis": 2.45, "netumor": 1.75, "mm_core": 2.35,
            "mm_rim": 2.00, "et": 1.85, "cyst": 2.75, "calc": -1.50, "edema": 2.20, "vessel": -1.3,
            "dura": -0.6},
    "t2f": {"csf": -1.90, "gm": -0.05, "wm": -0.75, "necrosis": 0.80, "netumor": 1.30, "mm_core": 0.10,
            "mm_rim": 1.75, "et": 0.60, "cyst": 0.20, "calc": -1.10, "edema": 1.70, "vessel": -1.0,
            "dura": 0.3},
}
# Classes defined relative to a normal class (base class, offset per sequence), so they stay on
# the right side of it whatever the jitter: white-matter hyperintensities (caps, rims, spots) are
# bright on FLAIR/T2 but less than edema; limbic/insular grey matter is mildly FLAIR-bright; the
# choroid plexus always enhances.
RELATIVE: dict[str, tuple[str, dict[str, float], float]] = {
    "wmh": ("wm", {"t1n": -0.45, "t1c": -0.3, "t2w": 1.6, "t2f": 1.75}, 0.35),
    "choroid": ("wm", {"t1n": -1.5, "t1c": 1.9, "t2w": 1.95, "t2f": 1.15}, 0.3),  # always enhances
    "gm_hyper": ("gm", {"t1n": -0.1, "t1c": 0.0, "t2w": 0.35, "t2f": 0.7}, 0.25),
}
# On FLAIR, tumour cores stay brighter than free fluid by at least this margin (z-units) unless
# the sequence is "wild": real necrotic core is FLAIR-bright (z +1.6..+2.5 where CSF is the
# darkest tissue); a cyst or a T2-FLAIR mismatch core may be fluid-like but less suppressed.
FLAIR_ABOVE_CSF: dict[str, float] = {"necrosis": 1.6, "netumor": 1.8, "mm_rim": 1.8, "et": 1.4, "edema": 1.8,
                                     "cyst": 0.5, "mm_core": 0.9}
# Added to the z-units before the multiplicative effects (gamma, bias): sets how dark the darkest
# tissue is relative to the brightest, e.g. CSF/WM ~ 0.3 on T1, CSF/WM ~ 4 on T2.
BASE_OFFSET: dict[str, float] = {"t1n": 3.6, "t1c": 3.5, "t2w": 2.6, "t2f": 3.0}
# Amplitude (z-units) of the smooth intra-class texture.
TEXTURE: dict[str, float] = {"csf": 0.08, "gm": 0.14, "wm": 0.11, "necrosis": 0.35, "netumor": 0.25,
                             "mm_core": 0.08, "mm_rim": 0.15, "et": 0.7, "cyst": 0.06, "calc": 0.2,
                             "edema": 0.28, "vessel": 0.3, "choroid": 0.35, "dura": 0.3, "wmh": 0.12,
                             "gm_hyper": 0.1}
# Per-class spread (z-units, sd) of the case-to-case jitter in the ordinary mode.
JITTER: dict[str, float] = {"csf": 0.45, "gm": 0.3, "wm": 0.3, "necrosis": 0.6, "netumor": 0.6,
                            "mm_core": 0.5, "mm_rim": 0.5, "et": 0.6, "cyst": 0.6, "calc": 0.7,
                            "edema": 0.5, "vessel": 0.8, "dura": 0.7}  # RELATIVE classes: their own sd
# fmt: on


@dataclass
class SequenceStyle:
    """Everything that decides how one sequence of one case looks.

    Attributes:
        means: class -> mean (z-units).
        texture: class -> signed texture amplitude (z-units).
        offset: added before the multiplicative effects.
        gamma: exponent of the intensity non-linearity.
        bias_amplitude: sd of the log bias field; bias_scale_mm its correlation length.
        blur_mm: isotropic Gaussian blur (sd, mm).
        slice_axis: axis (0 x, 1 y, 2 z; -1 none) along which thick slices were acquired.
        slice_mm: slice thickness along ``slice_axis``.
        noise: noise sd relative to the mean brain intensity.
        max_value: stored maximum intensity.
    """

    means: dict[str, float]
    texture: dict[str, float]
    offset: float
    gamma: float = 1.0
    bias_amplitude: float = 0.1
    bias_scale_mm: float = 90.0
    blur_mm: float = 0.0
    slice_axis: int = -1
    slice_mm: float = 1.0
    noise: float = 0.02
    max_value: float = 1000.0
    wild: bool = False


@dataclass
class CaseStyle:
    """The four sequences' styles plus how the case is stored."""

    sequences: dict[str, SequenceStyle] = field(default_factory=dict)
    int16: bool = False
    negative_edge: bool = False
    # Unused since generator version 2 (vessels are drawn by distractors.py), but still drawn:
    # removing the draw would change every phantom of a seed.
    vessel_density: float = 0.5


def _jittered_means(rng: np.random.Generator, seq: str, spread: float) -> dict[str, float]:
    base = BASE_MEANS[seq]
    means = {c: base[c] + spread * JITTER[c] * float(rng.normal()) for c in CLASSES if c not in RELATIVE}
    # Global contrast stretch about the normal-brain level, then a shift of the tumour classes as a
    # group (scanner/sequence differences move lesion conspicuity as a whole).
    stretch = float(np.exp(rng.normal(0.0, 0.25 * spread)))
    centre = float(np.mean([means[c] for c in NORMAL_CLASSES]))
    means = {c: centre + stretch * (v - centre) for c, v in means.items()}
    shift = float(rng.normal(0.0, 0.3 * spread))
    for c in CORE_CLASSES + ("edema",):
        means[c] += shift
    if seq != "t2f":
        # The mismatch rim is a FLAIR phenomenon: elsewhere it looks like the rest of the core.
        means["mm_rim"] = means["mm_core"] + 0.1 * spread * float(rng.normal())
    else:
        for c, margin in FLAIR_ABOVE_CSF.items():
            means[c] = max(means[c], means["csf"] + margin * stretch)
    for c, (ref, offsets, sd) in RELATIVE.items():
        means[c] = means[ref] + stretch * offsets[seq] * float(np.exp(spread * sd * rng.normal()))
    return means


def sample_style(rng: np.random.Generator, wild_probability: float = 0.08, spread: float = 1.0,
                 degrade: bool = True, texture_like: Mapping[str, str] | None = None) -> CaseStyle:
    """Draw one case's contrast and acquisition (see module docstring).

    Args:
        rng: random generator.
        wild_probability: per-sequence probability of fully random class means.
        spread: multiplies all jitter (0 = the calibrated base contrast exactly).
        degrade: False disables gamma, bias, blur and keeps noise minimal (calibration).
        texture_like: class -> class whose texture amplitude it takes (e.g. ``{"cyst": "wm"}``: a
            cyst as textured as white matter), a rendering shift; the random draws stay the same.

    Raises:
        ValueError: for an unknown class in ``texture_like``.
    """
    like = dict(texture_like or {})
    unknown = sorted({*like, *like.values()} - set(CLASSES))
    if unknown:
        raise ValueError(f"texture_like names unknown classes {unknown}; known: {', '.join(CLASSES)}")
    style = CaseStyle(
        int16=bool(rng.random() < 0.5),
        negative_edge=bool(rng.random() < 0.5),
        vessel_density=float(rng.uniform(0.0, 1.0)),
    )
    # Thick-slice acquisitions usually share the slice axis within a case (axial 2D protocols).
    case_axis = int(rng.choice([2, 2, 2, 1, 0]))
    for seq in SEQUENCES:
        wild = bool(rng.random() < wild_probability * (spread > 0))
        if wild:
            means = {c: float(rng.uniform(-2.5, 3.5)) for c in CLASSES}
        else:
            means = _jittered_means(rng, seq, spread)
        texture = {c: TEXTURE[like.get(c, c)] * float(rng.uniform(0.5, 1.6)) * float(rng.choice([-1.0, 1.0])) for c in CLASSES}
        lowest = min(means.values())
        offset = max(BASE_OFFSET[seq] * float(np.exp(rng.normal(0.0, 0.15 * spread))), 0.4 - lowest)
        st = SequenceStyle(means=means, texture=texture, offset=offset, wild=wild,
                           max_value=float(np.exp(rng.uniform(np.log(300.0), np.log(15000.0)))))
        if degrade:
            st.gamma = float(np.exp(rng.normal(0.0, 0.18 * spread)))
            st.bias_amplitude = float(rng.uniform(0.0, 0.25))
            st.bias_scale_mm = float(rng.uniform(50.0, 150.0))
            st.blur_mm = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.4 else 0.0
            if rng.random() < 0.5:
                st.slice_axis = case_axis if rng.random() < 0.8 else int(rng.integers(0, 3))
                st.slice_mm = float(rng.uniform(2.0, 6.5))
            st.noise = float(np.exp(rng.uniform(np.log(0.008), np.log(0.07))))
        else:
            st.noise = 0.005
        style.sequences[seq] = st
    return style
