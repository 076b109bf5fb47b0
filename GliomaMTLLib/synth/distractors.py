"""Normal structures that look like tumour on some sequence, and skull-strip imperfections.

What a network trained on phantoms without them mistakes for tumour on real scans:

* ``choroid``: choroid plexus in the atria of the lateral ventricles (glomus) and the third and
  fourth ventricles, bright on T1 post-contrast (enhancing-tumour look-alike inside fluid);
* ``vessel``: thin tubes in the cisterns and sulci (circle of Willis, cortical veins) and along
  the ventricle walls (subependymal veins): bright on T1c, flow voids (dark) on T2 and FLAIR;
* ``dura``: residual dura / venous sinus left by the skull strip on the brain surface, bright
  on T1c;
* ``wmh``: periventricular FLAIR caps and rims (thicker at the frontal and occipital horns) and
  scattered white-matter hyperintensities, more with age (edema look-alikes);
* ``gm_hyper``: mildly FLAIR/T2-bright normal grey matter (hippocampus, amygdala, insula,
  hypothalamus);
* cut cortex: patches of the brain surface removed by the skull strip (returned as a mask).

Every map is a partial-volume weight (0..1) on the crop grid; `appearance` gives each class its
contrast. Positions come from MNI coordinates mapped through the subject's pose; structures that
must stay inside a space (choroid in the ventricles, vessels in CSF) are multiplied by it, so the
random deformation and the mass effect move them along. None of them is ever labelled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.synth.anatomy import ras_to_lps
from GliomaMTLLib.synth.deform import Pose
from GliomaMTLLib.synth.fields import Lattice, smooth_noise

DISTRACTOR_CLASSES: tuple[str, ...] = ("choroid", "vessel", "dura", "wmh", "gm_hyper")

# MNI RAS centres (mm) and sd (mm) of regional blobs.
_CHOROID = ((-27.0, -40.0, 14.0, 6.0), (27.0, -40.0, 14.0, 6.0), (0.0, -16.0, 10.0, 3.5), (0.0, -47.0, -33.0, 3.5))
_HORNS = ((-14.0, 18.0, 12.0, 9.0), (14.0, 18.0, 12.0, 9.0), (-26.0, -56.0, 8.0, 9.0), (26.0, -56.0, 8.0, 9.0))
_BRIGHT_GM = ((-24.0, -6.0, -18.0, 6.0), (24.0, -6.0, -18.0, 6.0),    # amygdala
              (-29.0, -20.0, -14.0, 7.0), (29.0, -20.0, -14.0, 7.0),  # hippocampal head
              (-38.0, 2.0, 4.0, 9.0), (38.0, 2.0, 4.0, 9.0),          # insula
              (0.0, -6.0, -10.0, 5.0))                                  # hypothalamus


def _blobs(lattice: Lattice, pose: Pose, blobs: tuple[tuple[float, float, float, float], ...],
           amplitudes: np.ndarray) -> np.ndarray:
    """Sum of Gaussian blobs (MNI centres, per-blob amplitude) on the lattice's grid."""
    pts = lattice.points()
    values = np.zeros(pts.shape[:3], dtype=np.float32)
    for (x, y, z, sd), amp in zip(blobs, amplitudes):
        if amp <= 0:
            continue
        c = pose.to_output(ras_to_lps(np.array([x, y, z])))
        sd_out = sd * float(np.mean(pose.scale))
        d2 = np.sum((pts - c) ** 2, axis=-1)
        values += np.float32(amp) * np.exp(-d2 / (2.0 * sd_out**2)).astype(np.float32)
    return lattice.upsample(values)


def sparse(weight: np.ndarray, floor: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices, float32 values) of the voxels where ``weight`` exceeds ``floor``."""
    idx = np.flatnonzero(weight.reshape(-1) > floor)
    return idx, weight.reshape(-1)[idx].astype(np.float32)


def _shell(brain: np.ndarray, iterations: int) -> np.ndarray:
    return brain & ~ndimage.binary_erosion(brain, iterations=iterations)


def cut_cortex(rng: np.random.Generator, grid: Geometry, brain: np.ndarray) -> np.ndarray:
    """Mask of brain-surface patches (2-4 mm deep) an imperfect skull strip removed; often empty."""
    if rng.random() >= 0.3:
        return np.zeros_like(brain)
    step = 2 if grid.spacing[0] < 2 else 1
    coarse = brain[::step, ::step, ::step]
    shell = _shell(coarse, 2 if step == 2 else 1)
    if step > 1:
        shell = shell.repeat(step, 0).repeat(step, 1).repeat(step, 2)
        shell = shell[: brain.shape[0], : brain.shape[1], : brain.shape[2]]
    noise = smooth_noise(rng, grid, float(rng.uniform(12.0, 25.0)))
    return shell & brain & (noise > np.float32(rng.uniform(1.6, 2.6)))


def build_distractors(rng: np.random.Generator, grid: Geometry, pose: Pose, tissue: dict[str, np.ndarray],
                      ventricles: np.ndarray, vent_distance: np.ndarray, brain: np.ndarray, age: float,
                      texture: np.ndarray, fine: np.ndarray) -> dict[str, np.ndarray]:
    """Weights of every `DISTRACTOR_CLASSES` structure on ``grid`` (float32, z-y-x).

    Args:
        rng: random generator.
        grid: the crop grid of the tissue maps.
        pose: the subject's pose (MNI -> output mapping of the regional centres).
        tissue: ``csf``/``gm``/``wm`` weights (after `fluid.apply_fluid`).
        ventricles: ventricle fluid weight; vent_distance: signed distance (mm) to its surface.
        brain: boolean brain mask.
        age: subject age (years): more white-matter lesions and caps with age.
        texture, fine: the case's unit smooth fields (a few mm and ~2.5 mm).
    """
    sp = float(grid.spacing[0])
    lat = Lattice(grid, max(4.0, 2 * sp))
    out: dict[str, np.ndarray] = {}
    old = float(np.clip((age - 30.0) / 50.0, 0.0, 1.0))

    # choroid plexus: glomus in both atria (sometimes calcified or small: random amplitude), 3rd/4th
    amps = rng.uniform(0.6, 1.6, size=len(_CHOROID)) * (rng.random(len(_CHOROID)) < [0.95, 0.95, 0.6, 0.6])
    blob = _blobs(lat, pose, _CHOROID, amps)
    rough = np.float32(1.0) + np.float32(0.35) * texture
    out["choroid"] = np.clip((blob * rough - np.float32(0.45)) / np.float32(0.3), 0.0, 1.0) * ventricles

    # vessels: curves where two smooth fields both cross zero, inside CSF / along the ventricle wall
    scale = float(rng.uniform(5.0, 9.0))
    n1 = smooth_noise(rng, grid, scale)
    n2 = smooth_noise(rng, grid, scale)
    width = np.float32(rng.uniform(0.08, 0.2) * max(1.0, sp / 1.5))
    tube = np.clip(1.0 - np.sqrt(n1 * n1 + n2 * n2) / width, 0.0, 1.0)
    del n1, n2
    subependymal = np.clip(1.0 - np.abs(vent_distance - np.float32(0.8)) / np.float32(1.2), 0.0, 1.0)
    where = np.clip(tissue["csf"] * (1.0 - ventricles) + np.float32(rng.uniform(0.3, 1.0)) * subependymal, 0.0, 1.0)
    out["vessel"] = tube * where

    # residual dura / venous sinus on the brain surface, in patches
    dura = np.zeros(grid.shape, dtype=np.float32)
    if rng.random() < 0.65:
        shell = _shell(brain, 1 if sp >= 2 else int(rng.integers(1, 3)))
        patch = np.clip((texture - np.float32(rng.uniform(0.3, 1.8))) / np.float32(0.6), 0.0, 1.0)
        dura = shell * patch
    out["dura"] = dura.astype(np.float32)

    # periventricular caps/rims (thicker at the horns) and scattered white-matter hyperintensities
    base = float(rng.uniform(0.0, 1.2) + 2.0 * old * rng.random())
    caps = float(rng.uniform(0.0, 2.0) + 3.0 * old * rng.random())
    horn = _blobs(lat, pose, _HORNS, np.ones(len(_HORNS)))
    rim_w = np.maximum(np.float32(base) + np.float32(caps) * horn, np.float32(0.05)) * (1.0 + 0.3 * texture)
    rim = np.clip(1.0 - vent_distance / np.maximum(rim_w, 0.05), 0.0, 1.0) * (vent_distance > 0)
    spots_thr = np.float32(rng.uniform(2.2, 4.0) - 1.2 * old)
    spots = np.clip((-fine - spots_thr) / np.float32(0.4), 0.0, 1.0)
    white = tissue["wm"] + np.float32(0.3) * tissue["gm"]
    out["wmh"] = (np.maximum(rim, spots) * white).astype(np.float32)

    # mildly bright normal grey matter (limbic, insular, hypothalamic)
    amps = rng.uniform(0.3, 1.0, size=len(_BRIGHT_GM)) * float(rng.uniform(0.4, 1.0))
    out["gm_hyper"] = np.clip(_blobs(lat, pose, _BRIGHT_GM, amps), 0.0, 1.0) * tissue["gm"]

    for name, w in out.items():
        w *= brain
        out[name] = w.astype(np.float32, copy=False)
    return out
