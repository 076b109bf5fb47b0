"""Tumour compartments on the output grid, built inside each lesion's bounding box.

A lesion is an irregular (lobulated) ellipsoidal core, whose outline is the level set of a radius
perturbed by low-frequency noise, with an internal pattern:

* ``ring``: necrotic centre inside an enhancing rim of irregular thickness (typical IDH-wildtype
  glioblastoma);
* ``patchy``: non-enhancing solid tumour with a few enhancing patches;
* ``none``: non-enhancing solid tumour only (typical IDH-mutant glioma); optionally with the
  T2-FLAIR mismatch appearance (homogeneous core suppressed on FLAIR, thin bright rim);
* ``solid``: solid tumour that enhances over a large part (pediatric, e.g. BRAF V600E);
* ``cyst``: a smooth fluid-filled cyst with an (usually enhancing) mural nodule (pilocytic
  astrocytoma, BRAF fusion).

Calcifications are small foci inside the core. Edema (FLAIR hyperintensity) surrounds the core,
extends preferentially along white matter (so it reaches into the gyral white matter in
finger-like projections and spares the cortex) and never fills CSF.

Soft (partial-volume) class weights are returned for rendering; labels are their majority
(BraTS 2023 convention: 1 NCR = necrosis, non-enhancing tumour, cyst, calcification; 2 ED; 3 ET).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.labels import ED, ET, NCR
from GliomaMTLLib.synth.fields import box_geometry, smooth_noise

# Rendering classes of the tumour core (their weights sum to the core membership).
CORE_CLASSES: tuple[str, ...] = ("necrosis", "netumor", "mm_core", "mm_rim", "et", "cyst", "calc")
PATTERNS: tuple[str, ...] = ("ring", "patchy", "none", "solid", "cyst")
EDEMA_LABEL_THRESHOLD = 0.3


@dataclass
class Lesion:
    """Geometry and internal pattern of one tumour focus (all lengths in mm, output space).

    Attributes:
        center: core centre, output LPS.
        radius: mean semi-axis of the core.
        axes: relative semi-axes (3,), mean about 1.
        rotation: 3x3 orientation of the ellipsoid.
        lobulation: amplitude of the low-frequency radius noise (0 smooth .. 0.4 very lobulated).
        lobe_scale: correlation length of that noise.
        pattern: one of `PATTERNS`.
        necrosis: ``ring``: inner/outer radius ratio of the necrotic centre.
        rim_irregularity: ``ring``: noise amplitude of the inner boundary (thick/thin rim).
        enhancing_fraction: ``patchy``/``solid``: fraction of the core that enhances.
        nodule: ``cyst``: nodule radius relative to the cyst radius.
        nodule_enhancing: ``cyst``: whether the nodule enhances (else non-enhancing tumour).
        cyst_wall_enhancing: ``cyst``: thin enhancing cyst wall.
        mismatch: T2-FLAIR mismatch appearance of the non-enhancing core.
        calcifications: number of calcified foci.
        edema_margin: typical edema extent beyond the core (0 = none).
        edema_wm_bias: preference of edema for white matter (0 none .. 1.5 strong).
        edema_irregularity: noise amplitude of the edema outline.
        edema_profile: exponent of the edema strength's fall-off (small: a bright plateau with a
            sharp edge; large: a long faint infiltrative tail that is still labelled).
        mass: fraction of the core volume that displaces the surrounding tissue.
        margin_blur: width (mm) of the core's partial-volume transition (ill-defined, infiltrative
            margins are wider).
    """

    center: np.ndarray
    radius: float
    axes: np.ndarray = field(default_factory=lambda: np.ones(3))
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    lobulation: float = 0.2
    lobe_scale: float = 12.0
    pattern: str = "ring"
    necrosis: float = 0.6
    rim_irregularity: float = 0.15
    enhancing_fraction: float = 0.1
    nodule: float = 0.4
    nodule_enhancing: bool = True
    cyst_wall_enhancing: bool = False
    mismatch: bool = False
    calcifications: int = 0
    edema_margin: float = 10.0
    edema_wm_bias: float = 1.0
    edema_irregularity: float = 0.3
    edema_profile: float = 0.7
    mass: float = 0.6
    margin_blur: float = 1.0

    def extent_mm(self) -> float:
        """Radius (mm) of a ball around the centre that contains everything this lesion draws."""
        core = self.radius * float(np.max(self.axes)) * (1.0 + 2.5 * self.lobulation)
        if self.pattern == "cyst":
            core += self.radius * self.nodule * 1.2
        return core + 1.6 * self.edema_margin * (1.0 + 2.5 * self.edema_irregularity) + 4.0


@dataclass
class TumorMaps:
    """Tumour weights and labels inside ``box`` (a slice tuple of the crop arrays)."""

    box: tuple[slice, slice, slice]
    core: dict[str, np.ndarray]
    edema: np.ndarray
    label: np.ndarray


def _box_for(lesions: list[Lesion], crop: Geometry) -> tuple[slice, slice, slice] | None:
    """Index box (z, y, x slices) of the crop covering every lesion's extent."""
    origin = np.asarray(crop.origin)
    spacing = np.asarray(crop.spacing)
    size = np.asarray(crop.size)
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for les in lesions:
        e = les.extent_mm()
        lo = np.minimum(lo, les.center - e)
        hi = np.maximum(hi, les.center + e)
    i0 = np.clip(np.floor((lo - origin) / spacing).astype(int), 0, size)
    i1 = np.clip(np.ceil((hi - origin) / spacing).astype(int) + 1, 0, size)
    if np.any(i1 - i0 < 1):
        return None
    return (slice(i0[2], i1[2]), slice(i0[1], i1[1]), slice(i0[0], i1[0]))


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume step: 1 where x >> 0, 0 where x << 0, linear over ``width`` (x in mm)."""
    return np.clip(x / width + 0.5, 0.0, 1.0, dtype=np.float32)


def _quantile_threshold(values: np.ndarray, where: np.ndarray, upper_fraction: float) -> float:
    """Threshold above which ``upper_fraction`` of ``values[where]`` lie."""
    sel = values[where]
    if sel.size == 0:
        return float("inf")
    return float(np.quantile(sel, 1.0 - float(np.clip(upper_fraction, 0.0, 1.0))))


def _lesion_maps(les: Lesion, grid: Geometry, wm: np.ndarray, csf: np.ndarray,
                 rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Soft core-class weights and edema strength of one lesion on ``grid`` (its box)."""
    sp = float(grid.spacing[0])
    width = max(1.0, 0.7 * sp)  # partial-volume transition (mm)
    ax = [grid.origin[d] + np.arange(grid.size[d], dtype=np.float32) * sp - les.center[d] for d in range(3)]
    # Ellipsoid-normalised coordinates u = R^T (x - c) / (radius * axes), built by broadcasting.
    rt = les.rotation.T.astype(np.float32)
    scale = (les.radius * les.axes).astype(np.float32)
    rho2 = np.zeros(grid.shape, dtype=np.float32)
    for k in range(3):
        u = (rt[k, 0] * ax[0][None, None, :] + rt[k, 1] * ax[1][None, :, None]
             + rt[k, 2] * ax[2][:, None, None]) / scale[k]
        rho2 += u * u
    rho = np.sqrt(rho2)
    del rho2

    lob = smooth_noise(rng, grid, les.lobe_scale)
    rho_c = rho / np.maximum(1.0 + les.lobulation * lob, 0.35)
    core_sd = (1.0 - rho_c) * les.radius  # ~ signed distance to the core surface (mm), + inside
    m_core = _soft(core_sd, max(width, les.margin_blur))
    zeros = lambda: np.zeros(grid.shape, dtype=np.float32)  # noqa: E731
    cls = {name: zeros() for name in CORE_CLASSES}

    if les.pattern == "cyst":
        m_cyst = m_core
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        nod_r = max(les.nodule * les.radius, 1.5 * sp)
        nod_c = direction * les.radius * 0.85  # on the cyst wall
        nod_noise = smooth_noise(rng, grid, max(nod_r * 0.6, 2 * sp))
        d_nod = np.sqrt((ax[0][None, None, :] - nod_c[0]) ** 2 + (ax[1][None, :, None] - nod_c[1]) ** 2
                        + (ax[2][:, None, None] - nod_c[2]) ** 2)
        m_nod = _soft(nod_r * (1.0 + 0.25 * nod_noise) - d_nod, width)
        m_core = np.maximum(m_cyst, m_nod)
        inner = m_cyst * (1.0 - m_nod)
        if les.cyst_wall_enhancing:
            wall = inner * _soft(1.6 - core_sd, width)
            cls["et"] += wall
            inner = inner - wall
        cls["cyst"] = inner
        cls["et" if les.nodule_enhancing else "netumor"] += m_core - m_cyst * (1.0 - m_nod)
    elif les.pattern == "ring":
        rim_noise = smooth_noise(rng, grid, max(les.radius * 0.35, 2 * sp))
        rho_n = rho / np.maximum(1.0 + les.rim_irregularity * rim_noise, 0.35)
        m_in = np.minimum(_soft((les.necrosis - rho_n) * les.radius, width), m_core)
        cls["necrosis"] = m_in
        cls["et"] = m_core - m_in
    else:
        solid = m_core
        if les.pattern in ("patchy", "solid") and les.enhancing_fraction > 0:
            patch = smooth_noise(rng, grid, float(rng.uniform(3.0, 7.0)) if sp < 2 else 2 * sp)
            thr = _quantile_threshold(patch, m_core > 0.5, les.enhancing_fraction)
            m_et = m_core * np.clip((patch - thr) / 0.3 + 0.5, 0.0, 1.0)
            cls["et"] = m_et
            solid = m_core - m_et
        if les.mismatch:
            rim_mm = float(rng.uniform(1.2, 2.8))
            m_rim = solid * _soft(rim_mm - core_sd, width)
            cls["mm_rim"] = m_rim
            cls["mm_core"] = solid - m_rim
        else:
            cls["netumor"] = solid

    if les.calcifications > 0:
        inside = np.flatnonzero(core_sd.ravel() > 2.0)
        if inside.size:
            calc = zeros()
            picks = rng.choice(inside, size=min(les.calcifications, inside.size), replace=False)
            for flat in picks:
                zi, yi, xi = np.unravel_index(flat, grid.shape)
                r = float(rng.uniform(0.7, 1.8))
                h = int(np.ceil((r + width) / sp)) + 1
                sl = (slice(max(zi - h, 0), zi + h + 1), slice(max(yi - h, 0), yi + h + 1),
                      slice(max(xi - h, 0), xi + h + 1))
                d = np.sqrt((ax[0][sl[2]][None, None, :] - ax[0][xi]) ** 2
                            + (ax[1][sl[1]][None, :, None] - ax[1][yi]) ** 2
                            + (ax[2][sl[0]][:, None, None] - ax[2][zi]) ** 2)
                np.maximum(calc[sl], _soft(r - d, width), out=calc[sl])
            calc *= m_core
            for name in CORE_CLASSES:
                if name != "calc":
                    cls[name] *= 1.0 - calc
            cls["calc"] = calc

    # Edema: strength falls off with the distance beyond the core; its reach is longer in white
    # matter than in grey matter (cortex sparing, finger-like projections into the gyral white
    # matter) and irregular; never in CSF.
    edema = zeros()
    if les.edema_margin > 0.5:
        e_noise = smooth_noise(rng, grid, float(rng.uniform(6.0, 12.0)))
        outside = np.maximum(-core_sd, 0.0)
        b = les.edema_wm_bias
        reach = les.edema_margin * np.maximum(1.0 + les.edema_irregularity * e_noise, 0.3)
        reach *= np.maximum((1.0 - 0.65 * b) + 0.9 * b * wm, 0.05)
        edema = np.clip(1.0 - outside / reach, 0.0, 1.0) ** np.float32(les.edema_profile)
        # A thin halo right around the core keeps the core from touching normal tissue directly.
        if les.edema_margin >= 2.0:
            np.maximum(edema, _soft(min(0.5 * les.edema_margin, 2.0) - outside, width), out=edema)
        edema *= 1.0 - csf  # the core's share is taken out once all lesions are merged
        edema = edema.astype(np.float32)
    return cls, edema


def build_tumor(lesions: list[Lesion], crop: Geometry, wm: np.ndarray, csf: np.ndarray,
                brain: np.ndarray, rng: np.random.Generator) -> TumorMaps | None:
    """All lesions' soft weights and labels inside one box of the crop grid.

    Args:
        lesions: tumour foci (centres in output LPS mm).
        crop: the grid of ``wm``, ``csf`` and ``brain``.
        wm, csf: warped tissue fractions (normalised to sum 1 with GM) on ``crop``.
        brain: boolean brain mask on ``crop``.
        rng: random generator.

    Returns:
        TumorMaps, or None if no lesion touches the crop.
    """
    box = _box_for(lesions, crop)
    if box is None:
        return None
    origin = np.asarray(crop.origin) + np.array([box[2].start, box[1].start, box[0].start]) * np.asarray(crop.spacing)
    shape = tuple(s.stop - s.start for s in box)
    core = {name: np.zeros(shape, dtype=np.float32) for name in CORE_CLASSES}
    edema = np.zeros(shape, dtype=np.float32)
    wm_b, csf_b = wm[box], csf[box]
    for les in lesions:
        sub = _box_for([les], box_geometry(origin, shape[::-1], float(crop.spacing[0])))
        if sub is None:
            continue
        sub_origin = origin + np.array([sub[2].start, sub[1].start, sub[0].start]) * np.asarray(crop.spacing)
        sub_shape = tuple(s.stop - s.start for s in sub)
        grid = box_geometry(sub_origin, sub_shape[::-1], float(crop.spacing[0]))
        cls, ed = _lesion_maps(les, grid, wm_b[sub], csf_b[sub], rng)
        for name in CORE_CLASSES:
            np.maximum(core[name][sub], cls[name], out=core[name][sub])
        np.maximum(edema[sub], ed, out=edema[sub])

    inside = brain[box].astype(np.float32)
    total = np.zeros(shape, dtype=np.float32)
    for name in CORE_CLASSES:
        core[name] *= inside
        total += core[name]
    over = total > 1.0
    if over.any():
        for name in CORE_CLASSES:
            core[name][over] /= total[over]
        total[over] = 1.0
    edema *= inside * (1.0 - total)
    # Edema is contiguous with a tumour core: drop islands that a long white-matter reach can
    # leave at a distance (e.g. across a sulcus).
    seeds = total >= 0.5
    if seeds.any():
        comp, _ = ndimage.label((edema > 0.05) | seeds)
        keep = np.isin(comp, np.unique(comp[seeds]))
        edema *= keep

    label = np.zeros(shape, dtype=np.uint8)
    is_core = total >= 0.5
    label[is_core] = NCR
    label[is_core & (core["et"] >= 0.5 * total)] = ET
    tissue_ok = csf_b < 0.5
    # Edema is outlined where its hyperintensity is clearly visible (strength >= 0.3).
    label[~is_core & (edema >= EDEMA_LABEL_THRESHOLD * (1.0 - total)) & (edema > 0.15) & tissue_ok & (inside > 0)] = ED
    return TumorMaps(box=box, core=core, edema=edema, label=label)
