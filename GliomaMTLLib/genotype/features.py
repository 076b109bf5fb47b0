"""Named radiological features of one crop, computed differentiably in torch.

Inputs (one case, on the main network's crop, canonical LPS order ``z, y, x``):

* ``probs``: (4, z, y, x) softmax of the segmentation (background, NCR, ED, ET) - the model's
  own prediction, never the reference labels; or (2, z, y, x) (background, tumor) of a
  whole-tumor model (the pediatric FLAIR model), whose tumor counts as ED: its core features are
  then 0 and the whole-tumor ones (volume, shape, FLAIR inside, location) carry the signal;
* ``image``: (C, z, y, x) z-scored sequences in the bundle's order (``t1n, t1c, t2w, t2f`` for the
  adult model; any missing sequence leaves its features at 0);
* ``depth`` (z, y, x) mm below the brain surface and ``position`` (3, z, y, x) in brain
  half-extents (see :mod:`GliomaMTLLib.genotype.context`), constants for the gradients.

Every feature is a ratio of soft (probability-weighted) sums, so gradients reach both the
segmentation and the image, and integrated gradients can explain the whole path. Soft masks:
``wt = p1 + p2 + p3``, ``tc = p1 + p3`` (core), ``ncr = p1``, ``ed = p2``, ``et = p3``.

The literature cues they stand for (WHO CNS5 adult diffuse glioma and pediatric LGG imaging):
ring enhancement around necrosis and large edema (IDH-wildtype), little enhancement and the
T2-FLAIR mismatch (IDH-mutant astrocytoma), frontal cortical location and calcification
(1p/19q-codeleted oligodendroglioma), posterior-fossa cystic tumors (BRAF fusion).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

#: Feature names in the order of :func:`radiological_features`' output.
FEATURE_NAMES: tuple[str, ...] = (
    "log_wt_ml",  # whole tumor volume, log(1 + ml)
    "log_tc_ml",  # tumor core volume
    "et_share_of_core",  # enhancing share of the core
    "ncr_share_of_core",  # necrotic / non-enhancing share of the core
    "core_share_of_wt",
    "log_edema_to_core",  # edema extent relative to the core
    "rim_thickness_mm",  # enhancing volume / core surface
    "rim_completeness",  # share of the necrosis border covered by enhancement
    "core_sphericity",  # 36 pi V^2 / A^3: 1 for one ball, ~1/n for n separate balls
    "wt_sphericity",
    "enhancement_core",  # mean (t1c - t1n) in the core
    "enhancement_et",  # mean (t1c - t1n) in the enhancing part
    "mismatch_t2_minus_flair_ncr",  # T2 bright, FLAIR suppressed in the non-enhancing core
    "flair_rim_minus_center_ncr",  # FLAIR-bright rim around a suppressed centre
    "t2_ncr",
    "flair_ncr",
    "t2_edema",
    "flair_edema",
    "calcification_share",  # share of the core dark on T2 and FLAIR (calcification-like foci)
    "margin_sharpness",  # mean FLAIR gradient magnitude across the tumor border, per mm
    "position_superior",
    "position_anterior",
    "position_left",  # laterality
    "midline_distance",
    "frontal_share",
    "temporal_share",
    "depth_mm",  # depth of the tumor below the brain surface
    "cortical_share",  # share of the tumor within 6 mm of the surface
    # appended (older bundles select the features above by name)
    "cyst_share_wt",  # share of the tumor FLAIR-darker than its solid part by > 1 brain sd (cyst, fluid core)
    "flair_sd_wt",  # FLAIR heterogeneity inside the tumor
    "infratentorial_share",  # share in the posterior fossa (inferior and posterior)
    "calcification_focus",  # strongest T2- and FLAIR-dark focus inside the core, against its 3-voxel neighbourhood
    "fluid_smooth_share_wt",  # share of the tumor as smooth on FLAIR as fluid (a cyst), relative to normal brain
    "calcification_focus_z",  # calcification_focus in units of the core's own local T2/FLAIR variation
    "enhancement_border_minus_center",  # (t1c - t1n) at the core's border minus at its centre: a ring
)
#: Voxels averaged for ``calcification_focus``: a few, so one calcified focus of 1-2 mm counts but a
#: single noisy voxel does not decide it.
CALC_FOCUS_VOXELS = 4
#: ``fluid_smooth_share_wt``: a tumor voxel counts as fluid-smooth when its 3-voxel FLAIR standard
#: deviation is below this fraction of the smoothest quarter of the normal brain in the crop, so the
#: threshold follows each scan's own noise instead of one scanner's.
FLUID_SMOOTH_FRACTION = 0.75

#: Floor (z-units) of the core's local-variation spread in ``calcification_focus_z``, so a perfectly
#: flat core cannot turn a trace of darkness into a large score.
CALC_SPREAD_FLOOR = 0.03
#: Fewest core-interior voxels (~0.07 ml at 1.5 mm) for ``calcification_focus_z``; below, it is 0.
CALC_MIN_VOXELS = 20

_EPS = 1e-6


def feature_indices(names: Sequence[str], where: str = "") -> list[int]:
    """Positions of ``names`` in :data:`FEATURE_NAMES`, in the given order.

    Raises:
        ValueError: naming ``where`` (e.g. a model.json) and the unknown names.
    """
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise ValueError(f"{where or 'the list'} names unknown genotype features {unknown}; "
                         f"known: {', '.join(FEATURE_NAMES)}")
    return [FEATURE_NAMES.index(n) for n in names]


_T1N, _T1C, _T2W, _T2F = "t1n", "t1c", "t2w", "t2f"


def _wmean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted mean of ``x`` with weights ``w`` (0 when the weights vanish)."""
    return (x * w).sum() / (w.sum() + 1e-3)


def gradient_magnitude(x: torch.Tensor, spacing_zyx: Sequence[float]) -> torch.Tensor:
    """|grad x| per mm of a (z, y, x) tensor by central differences (edges replicated)."""
    p = F.pad(x[None, None], (1, 1, 1, 1, 1, 1), mode="replicate")[0, 0]
    dz = (p[2:, 1:-1, 1:-1] - p[:-2, 1:-1, 1:-1]) / (2.0 * float(spacing_zyx[0]))
    dy = (p[1:-1, 2:, 1:-1] - p[1:-1, :-2, 1:-1]) / (2.0 * float(spacing_zyx[1]))
    dx = (p[1:-1, 1:-1, 2:] - p[1:-1, 1:-1, :-2]) / (2.0 * float(spacing_zyx[2]))
    return torch.sqrt(dz * dz + dy * dy + dx * dx + 1e-8)


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool3d(x[None, None], k, stride=1, padding=k // 2, count_include_pad=False)[0, 0]


def fluid_smooth_share(flair: torch.Tensor, wt: torch.Tensor, depth: torch.Tensor,
                       interior: torch.Tensor | None = None) -> torch.Tensor:
    """Share of the tumor interior whose local FLAIR variation is that of fluid (a cyst's content).

    Local variation = standard deviation in a 3-voxel box. The reference is the lower quartile of it
    over normal brain in the crop (more than 3 mm deep, tumor probability < 0.05; all brain voxels of
    the crop when fewer than 100 such voxels; 0 when the crop has fewer than 100 brain voxels). The
    reference stays differentiable in the image: integrated gradients move it along their path, and
    a detached reference would break their completeness. Cystic pediatric tumors (pilocytic
    astrocytoma) are mostly fluid; solid ones are not. 0 for a flat (missing) FLAIR. ``interior``:
    the tumor away from its soft border, when the caller has it (computed from ``wt`` otherwise).
    """
    mean = _box_mean(flair, 3)
    sd = torch.sqrt(torch.clamp(_box_mean(flair * flair, 3) - mean * mean, min=0.0) + 1e-6)
    normal = (depth > 3.0) & (wt.detach() < 0.05)  # which voxels count as normal brain: a selection
    if int(normal.sum()) < 100:
        normal = depth > 0.0  # never the zero background outside the brain: its sd is the epsilon
    if int(normal.sum()) < 100:
        return torch.zeros((), dtype=flair.dtype, device=flair.device)
    pool = sd[normal]
    reference = torch.quantile(pool, 0.25)
    if float(reference.detach()) < 1e-2:  # a flat image (missing sequence): sd is only the epsilon
        return torch.zeros((), dtype=flair.dtype, device=flair.device)
    threshold = FLUID_SMOOTH_FRACTION * reference
    if interior is None:
        interior = wt * torch.clamp(_box_mean(wt, 5), 0.0, 1.0) ** 4
    return _wmean(torch.sigmoid((threshold - sd) / (0.3 * threshold)), interior)


def calcification_z(local_dark: torch.Tensor, interior: torch.Tensor) -> torch.Tensor:
    """``local_dark`` in robust z-units of the core: (value - median) / (IQR / 1.349), over the
    voxels with ``interior`` > 0.5, the spread floored at :data:`CALC_SPREAD_FLOOR`. Zeros when the
    interior has fewer than :data:`CALC_MIN_VOXELS` voxels (no core to compare with)."""
    inside = local_dark[interior.detach() > 0.5]  # which voxels form the reference: a selection
    if inside.numel() < CALC_MIN_VOXELS:
        return torch.zeros_like(local_dark)
    q = torch.quantile(inside, torch.tensor([0.25, 0.5, 0.75], dtype=inside.dtype, device=inside.device))
    spread = torch.sqrt(((q[2] - q[0]) / 1.349) ** 2 + CALC_SPREAD_FLOOR**2)
    return (local_dark - q[1]) / spread


def radiological_features(
    probs: torch.Tensor,
    image: torch.Tensor,
    depth: torch.Tensor,
    position: torch.Tensor,
    spacing_zyx: Sequence[float],
    sequences: Sequence[str] = (_T1N, _T1C, _T2W, _T2F),
) -> torch.Tensor:
    """The (F,) feature vector of one crop, in the order of :data:`FEATURE_NAMES`.

    Raises:
        ValueError: on inconsistent shapes or fewer than 4 segmentation classes.
    """
    if probs.ndim == 4 and probs.shape[0] == 2:
        zero_map = torch.zeros_like(probs[1])
        probs = torch.stack([probs[0], zero_map, probs[1], zero_map])
    if probs.ndim != 4 or probs.shape[0] < 4:
        raise ValueError(f"probs must be (4, z, y, x) softmax (background, NCR, ED, ET) or (2, z, y, x) "
                         f"(background, tumor); got {tuple(probs.shape)}")
    shape = probs.shape[1:]
    if image.shape[1:] != shape or depth.shape != shape or position.shape != (3, *shape):
        raise ValueError(
            f"image {tuple(image.shape)}, depth {tuple(depth.shape)} and position {tuple(position.shape)} "
            f"must lie on the probs grid {tuple(shape)}"
        )
    if image.shape[0] != len(sequences):
        raise ValueError(f"image has {image.shape[0]} channels for sequences {list(sequences)}")
    dtype = probs.dtype
    voxel_ml = math.prod(float(s) for s in spacing_zyx) / 1000.0
    voxel_mm3 = voxel_ml * 1000.0
    ncr, ed, et = probs[1], probs[2], probs[3]
    tc = ncr + et
    wt = tc + ed
    zero = torch.zeros(shape, dtype=dtype, device=probs.device)
    seq = {name: image[i] for i, name in enumerate(sequences)}
    t1n, t1c, t2w, t2f = (seq.get(n, zero) for n in (_T1N, _T1C, _T2W, _T2F))

    v_wt, v_tc, v_ncr, v_ed, v_et = (m.sum() for m in (wt, tc, ncr, ed, et))
    one = 1.0 / voxel_ml  # one ml in voxels: keeps ratios tame when a compartment is empty
    sz, sy, sx = (float(s) for s in spacing_zyx)
    mean_area = (sy * sx + sz * sx + sz * sy) / 3.0  # mm^2 of one voxel face

    g_tc = gradient_magnitude(tc, spacing_zyx)
    g_wt = gradient_magnitude(wt, spacing_zyx)
    g_ncr = gradient_magnitude(ncr, spacing_zyx)
    # surface area (mm^2) of a soft mask = integral of |grad| over the volume
    area_tc = g_tc.sum() * voxel_mm3
    area_wt = g_wt.sum() * voxel_mm3

    def sphericity(volume_vox: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
        vol = volume_vox * voxel_mm3
        return 36.0 * math.pi * vol**2 / (area**3 + 36.0 * math.pi * (mean_area * 8.0) ** 3 + _EPS)

    et_near = torch.clamp(3.0 * _box_mean(et, 5), 0.0, 1.0)
    ncr_inner = ncr * torch.clamp(_box_mean(ncr, 5), 0.0, 1.0) ** 4
    ncr_border = torch.clamp(ncr - ncr_inner, min=0.0)
    t2_tc = _wmean(t2w, tc)
    calc = tc * torch.sigmoid((t2_tc - t2w - 1.5) / 0.3) * torch.sigmoid((_wmean(t2f, tc) - t2f - 1.0) / 0.3)
    g_flair = gradient_magnitude(t2f, spacing_zyx)
    sup, ant, left = position[0], position[1], position[2]
    wt_in = wt * torch.clamp(_box_mean(wt, 5), 0.0, 1.0) ** 4  # the tumor away from its soft border
    flair_wt = _wmean(t2f, wt_in)
    flair_sd = torch.sqrt(_wmean((t2f - flair_wt) ** 2, wt_in) + 1e-4)
    # FLAIR level of the solid (brighter-than-average) tumor; a cyst is > 1 brain sd darker than it
    flair_solid = _wmean(t2f, wt_in * torch.sigmoid((t2f - flair_wt) / 0.25))
    lateral = torch.abs(left)
    # calcification-like foci: darker on T2 and FLAIR than their immediate surroundings, away from
    # the core's border (where normal tissue is dark too); a mean-of-core threshold misses them
    tc_in = tc * torch.clamp(_box_mean(tc, 5), 0.0, 1.0) ** 4
    tc_deep = tc * torch.clamp(_box_mean(tc, 9), 0.0, 1.0) ** 8  # the core's centre, ~6 mm from its border
    local_dark = 0.5 * ((_box_mean(t2w, 3) - t2w) + (_box_mean(t2f, 3) - t2f))
    focus = (local_dark * tc_in).flatten()
    calc_focus = focus.topk(min(CALC_FOCUS_VOXELS, focus.numel())).values.mean()
    # the same foci against the core's own spread of local darkness (median and interquartile
    # range over the core interior, so the foci do not inflate it): tumor texture and scanner
    # noise make the raw score vary from scan to scan, a calcified focus stands out of both
    focus_z = calcification_z(local_dark, tc_in).flatten() * tc_in.flatten()
    calc_focus_z = focus_z.topk(min(CALC_FOCUS_VOXELS, focus_z.numel())).values.mean()

    feats = [
        torch.log1p(v_wt * voxel_ml),
        torch.log1p(v_tc * voxel_ml),
        v_et / (v_tc + one),
        v_ncr / (v_tc + one),
        v_tc / (v_wt + one),
        torch.log((v_ed + one) / (v_tc + one)),
        v_et * voxel_mm3 / (area_tc + mean_area * 50.0),
        (g_ncr * et_near).sum() / (g_ncr.sum() + 1.0),
        sphericity(v_tc, area_tc),
        sphericity(v_wt, area_wt),
        _wmean(t1c - t1n, tc),
        _wmean(t1c - t1n, et),
        _wmean(t2w - t2f, ncr),
        _wmean(t2f, ncr_border) - _wmean(t2f, ncr_inner),
        _wmean(t2w, ncr),
        _wmean(t2f, ncr),
        _wmean(t2w, ed),
        _wmean(t2f, ed),
        calc.sum() / (v_tc + one),
        _wmean(g_flair, g_wt),
        _wmean(sup, wt),
        _wmean(ant, wt),
        _wmean(left, wt),
        _wmean(lateral, wt),
        _wmean(torch.sigmoid((ant - 0.25) / 0.1), wt),
        _wmean(torch.sigmoid((-sup - 0.1) / 0.1) * torch.sigmoid((lateral - 0.35) / 0.1), wt),
        _wmean(depth, wt),
        _wmean(torch.sigmoid((6.0 - depth) / 1.5), wt),
        _wmean(torch.sigmoid((flair_solid - 1.0 - t2f) / 0.2), wt_in),
        flair_sd,
        _wmean(torch.sigmoid((-sup - 0.35) / 0.1) * torch.sigmoid((-ant - 0.05) / 0.1), wt),
        calc_focus,
        fluid_smooth_share(t2f, wt, depth, wt_in),
        calc_focus_z,
        _wmean(t1c - t1n, tc * (1.0 - tc_deep)) - _wmean(t1c - t1n, tc_deep),
    ]
    out = torch.stack([f.to(dtype) for f in feats])
    assert out.shape[0] == len(FEATURE_NAMES)
    return out


def features_numpy(arrays: dict, sequences: Sequence[str] = (_T1N, _T1C, _T2W, _T2F)) -> "np.ndarray":  # noqa: F821
    """:func:`radiological_features` of stored arrays (``probs``, ``image``, ``depth``, ``position``,
    ``spacing_zyx``), as a float64 numpy vector."""
    import numpy as np

    t = {k: torch.as_tensor(np.asarray(arrays[k], dtype=np.float32)) for k in ("probs", "image", "depth", "position")}
    spacing = [float(s) for s in np.asarray(arrays["spacing_zyx"]).ravel()]
    with torch.no_grad():
        return radiological_features(t["probs"], t["image"], t["depth"], t["position"], spacing, sequences).double().numpy()
