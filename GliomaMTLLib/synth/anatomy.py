"""Adult brain anatomy for the phantom generator: the MNI152 (ICBM 2009a) templates packaged with
nilearn, prepared once per process.

What is prepared:
  * grey matter, white matter and cerebrospinal fluid probability maps on the template grid
    (CSF = brain mask - GM - WM, clipped), brainstem cut at the foramen magnum like a BraTS
    skull-strip, as SimpleITK images in LPS physical space (so any transform can resample them);
  * candidate tumour centres: points on a 2 mm lattice inside the brain with their smoothed tissue
    fractions, depth below the brain surface and anatomical region (frontal, temporal, ...), used to
    draw genotype-dependent locations;
  * a sample of brain-surface points, to bound the deformed brain on the output grid;
  * the signed distance (mm, negative inside) to the ventricular system (lateral, third and fourth
    ventricles: template CSF inside anatomical boxes, deep below the surface), so each phantom can
    grow or shrink its ventricles to any size and render them as sharp pure fluid.

The 1 mm preparation is cached in-process and, unless disabled, as an ``.npz`` file under
``$GLIOMAMTL_CACHE``/anatomy (default: the user cache folder; ``GLIOMAMTL_CACHE=none`` disables it), which
turns a ~10 s first call into ~0.3 s. Coarser anatomies (``small`` phantoms) are derived from the
1 mm one by anti-aliased downsampling.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from GliomaMTLLib.io.atomic import atomic_path

# Bumped whenever the preparation below changes, so stale caches are ignored.
_CACHE_VERSION = 4
# RAS z (mm, MNI) below which the brain mask is cut: the foramen magnum level of a skull-strip.
_BRAINSTEM_CUT_Z = -62.0
_LPS_FLIP = np.array([-1.0, -1.0, 1.0])
# Signed distances to the ventricles are stored as int8 in steps of 1/_SDF_STEPS mm (|d| <= 10 mm).
_SDF_STEPS = 12.0
VENTRICLE_SDF_MAX_MM = 10.0

# Region bit flags of the candidate tumour centres (see `_regions`).
REGIONS: dict[str, int] = {
    "frontal": 1,
    "temporal": 2,
    "parietal": 4,
    "occipital": 8,
    "deep": 16,  # basal ganglia, thalamus, insula
    "cerebellum": 32,
    "brainstem": 64,
    "suprasellar": 128,  # optic pathway / hypothalamus, midline
}


@dataclass(frozen=True)
class Anatomy:
    """Template tissue maps and tumour-placement helpers at one resolution.

    Attributes:
        spacing: template voxel size (mm) of ``gm``, ``wm``, ``csf``.
        gm, wm, csf: float32 SimpleITK probability images (LPS geometry of the template).
        vent: float32 SimpleITK image, signed distance (mm) to the ventricle surface (negative
            inside, clipped to +-``VENTRICLE_SDF_MAX_MM``).
        center_lps: centre (mm, LPS) of the brain's bounding box in template space.
        extent_mm: brain bounding-box size (mm) along LPS x, y, z.
        surface_lps: (N, 3) points (mm, LPS) on the brain surface.
        cand_ras: (M, 3) candidate tumour centres in MNI RAS mm.
        cand_gm, cand_wm, cand_csf: smoothed (2 mm) tissue fractions at the candidates.
        cand_depth: distance (mm) from each candidate to the brain surface.
        cand_region: uint16 bit flags (`REGIONS`) of each candidate.
    """

    spacing: float
    gm: sitk.Image
    wm: sitk.Image
    csf: sitk.Image
    vent: sitk.Image
    center_lps: np.ndarray
    extent_mm: np.ndarray
    surface_lps: np.ndarray
    cand_ras: np.ndarray
    cand_gm: np.ndarray
    cand_wm: np.ndarray
    cand_csf: np.ndarray
    cand_depth: np.ndarray
    cand_region: np.ndarray


def cache_dir() -> Path | None:
    """Folder of the on-disk anatomy cache, or None when disabled (``GLIOMAMTL_CACHE=none``)."""
    from GliomaMTLLib.paths import cache_dir as root, cache_enabled

    return root() / "anatomy" if cache_enabled() else None


def _regions(ras: np.ndarray) -> np.ndarray:
    """Coarse anatomical region flags of MNI RAS points (N, 3): boxes good to a few mm, enough to
    give locations the right tendencies (frontal vs posterior fossa), not an atlas."""
    x, y, z = ras[:, 0], ras[:, 1], ras[:, 2]
    ax = np.abs(x)
    cerebellum = (z < -18) & (y < -40) & (ax <= 58)
    brainstem = (z < -8) & (ax < 14) & (y >= -42) & (y <= -10) & ~cerebellum
    pf = cerebellum | brainstem
    temporal = (z < 5) & (y >= -60) & (y <= 22) & (ax >= 30) & ~pf
    frontal = (((y > -12) & (z >= -14)) | ((y > 8) & (z >= -28))) & ~temporal & ~pf
    occipital = (y < -66) & ~pf
    parietal = (y <= -12) & (y >= -66) & (z >= 15) & ~pf
    deep = (ax < 32) & (y >= -36) & (y <= 20) & (z >= -8) & (z <= 20)
    suprasellar = (ax < 16) & (y >= -22) & (y <= 16) & (z >= -24) & (z <= 2) & ~pf
    flags = np.zeros(len(ras), dtype=np.uint16)
    for name, member in (
        ("frontal", frontal), ("temporal", temporal), ("parietal", parietal),
        ("occipital", occipital), ("deep", deep), ("cerebellum", cerebellum),
        ("brainstem", brainstem), ("suprasellar", suprasellar),
    ):
        flags[member] |= REGIONS[name]
    return flags


def _ventricles(csf: np.ndarray, depth: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Ventricular system of the template: CSF inside boxes (MNI RAS mm, checked on slices of the
    ICBM 2009a template) of the lateral, third and fourth ventricles, deep below the surface, so
    the interhemispheric fissure, Sylvian fissures and cortical sulci are left out."""
    from scipy import ndimage

    i, j, k = (np.arange(n, dtype=np.float32) for n in csf.shape)
    x = (i * affine[0, 0] + affine[0, 3])[:, None, None]
    y = (j * affine[1, 1] + affine[1, 3])[None, :, None]
    z = (k * affine[2, 2] + affine[2, 3])[None, None, :]
    ax = np.abs(x)
    fluid = csf > 0.35
    lateral = (ax <= 34) & (y >= -50) & (y <= 35) & (z >= -2) & (z <= 36) & (depth >= 12) & ~((ax < 3) & (z > 22))
    third = (ax <= 4) & (y >= -28) & (y <= 2) & (z >= -10) & (z <= 16) & (depth >= 6)
    fourth = (ax <= 10) & (y >= -56) & (y <= -34) & (z >= -46) & (z <= -18) & (depth >= 8)
    vent = fluid & (lateral | third | fourth)
    lab, n = ndimage.label(vent)
    if n > 1:  # drop specks
        sizes = ndimage.sum(vent, lab, index=np.arange(1, n + 1))
        vent = np.isin(lab, 1 + np.flatnonzero(sizes >= 500))
    return vent


def _load_nilearn() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """GM, WM, brain mask (float arrays indexed [i, j, k] = RAS x, y, z) and the 4x4 RAS affine."""
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the synthetic phantom generator needs nilearn (its packaged MNI152 templates); "
            "install it with: pip install 'gliomamtl[synth]'"
        ) from exc
    images = {
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "mask": datasets.load_mni152_brain_mask(resolution=1),
    }
    affine = np.asarray(images["mask"].affine, dtype=float)
    arrays = {k: np.asarray(v.get_fdata(), dtype=np.float32) for k, v in images.items()}
    return arrays, affine


def _prepare_base() -> dict[str, np.ndarray]:
    """Compute the 1 mm preparation (what the cache file stores)."""
    from scipy import ndimage

    arrays, affine = _load_nilearn()
    mask = arrays["mask"] > 0.5
    # Cut the brainstem at the foramen magnum (RAS z), as a BraTS skull-strip does.
    k_cut = int(np.ceil((_BRAINSTEM_CUT_Z - affine[2, 3]) / affine[2, 2]))
    mask[:, :, : max(k_cut, 0)] = False
    # Keep the largest connected component (the cut can leave specks).
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
        mask = lab == (int(np.argmax(sizes)) + 1)
    gm = np.where(mask, np.clip(arrays["gm"], 0, 1), 0)
    wm = np.where(mask, np.clip(arrays["wm"], 0, 1), 0)
    tissue = gm + wm
    over = tissue > 1
    gm[over] /= tissue[over]
    wm[over] /= tissue[over]
    csf = np.where(mask, np.clip(1.0 - gm - wm, 0, 1), 0)
    q = lambda a: np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)  # noqa: E731 - templates are 8-bit
    out = {"gm": q(gm), "wm": q(wm), "csf": q(csf), "affine": affine}

    # Candidate tumour centres: a 2 mm lattice inside the brain.
    depth = ndimage.distance_transform_edt(mask, sampling=np.abs(np.diag(affine)[:3]))
    vent = _ventricles(csf, depth, affine)
    sampling = np.abs(np.diag(affine)[:3])
    sdf = ndimage.distance_transform_edt(~vent, sampling=sampling) - ndimage.distance_transform_edt(vent, sampling=sampling)
    sdf = np.clip(sdf, -VENTRICLE_SDF_MAX_MM, VENTRICLE_SDF_MAX_MM)
    out["vent_sdf"] = np.round(sdf * _SDF_STEPS).astype(np.int8)
    sm = {k: ndimage.gaussian_filter(v.astype(np.float32), 2.0) for k, v in (("gm", gm), ("wm", wm), ("csf", csf))}
    sub = (slice(0, None, 2),) * 3
    sel = mask[sub] & (depth[sub] >= 4.0)
    ijk = np.argwhere(sel) * 2
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    out.update(
        cand_ras=ras.astype(np.float32),
        cand_gm=sm["gm"][sub][sel].astype(np.float16),
        cand_wm=sm["wm"][sub][sel].astype(np.float16),
        cand_csf=sm["csf"][sub][sel].astype(np.float16),
        cand_depth=depth[sub][sel].astype(np.float16),
        cand_region=_regions(ras),
    )
    # Brain surface points (LPS) and bounding box.
    surface = mask & ~ndimage.binary_erosion(mask)
    pts = np.argwhere(surface)
    pts = pts[:: max(1, len(pts) // 6000)]
    out["surface_lps"] = ((pts @ affine[:3, :3].T + affine[:3, 3]) * _LPS_FLIP).astype(np.float32)
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0)
    corners = np.array([lo, hi], dtype=float) @ affine[:3, :3].T + affine[:3, 3]
    out["bbox_ras"] = np.sort(corners, axis=0).astype(np.float32)
    return out


def _cache_file() -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    try:  # the distribution metadata, not `import nilearn` (which takes seconds)
        from importlib.metadata import PackageNotFoundError, version

        tag = version("nilearn")
    except PackageNotFoundError:  # pragma: no cover
        tag = "unknown"
    return folder / f"mni152_anatomy_v{_CACHE_VERSION}_nilearn{tag}.npz"


@functools.lru_cache(maxsize=1)
def _base() -> dict[str, np.ndarray]:
    """The 1 mm preparation, from the cache file when present and valid."""
    path = _cache_file()
    if path is not None and path.is_file():
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError):
            pass  # corrupt cache: rebuild below
    base = _prepare_base()
    if path is not None:
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **base)
        except OSError:
            pass  # read-only home: the in-process cache still works
    return base


def _to_image(array_ijk: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """Wrap a nilearn-ordered [i, j, k] array (RAS affine) as a SimpleITK image in LPS space."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_ijk.transpose(2, 1, 0)))
    m_lps = _LPS_FLIP[:, None] * affine[:3, :3]
    spacing = np.linalg.norm(m_lps, axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (m_lps / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in _LPS_FLIP * affine[:3, 3]))
    return image


def _block_mean(array_ijk: np.ndarray, factor: int) -> np.ndarray:
    """Average non-overlapping ``factor``^3 blocks (zero-padded at the far edges): an anti-aliased
    integer downsampling that costs one reshape, unlike Gaussian smoothing of the 1 mm volume."""
    pad = [(0, (-n) % factor) for n in array_ijk.shape]
    a = np.pad(array_ijk, pad)
    i, j, k = (n // factor for n in a.shape)
    return a.reshape(i, factor, j, factor, k, factor).mean(axis=(1, 3, 5), dtype=np.float32)


@functools.lru_cache(maxsize=4)
def load_anatomy(spacing: int = 1) -> Anatomy:
    """The prepared MNI152 anatomy with tissue maps at ``spacing`` mm (1 = native, 2 or 3 = block means).

    Cached per process; the first call in a fresh environment reads nilearn's templates and
    writes the on-disk cache (about 10 s), later processes load the cache.

    Raises:
        ImportError: if nilearn is not installed.
    """
    base = _base()
    affine = base["affine"]
    maps = {}
    factor = int(round(spacing))
    if factor < 1 or abs(factor - spacing) > 1e-6:
        raise ValueError(f"anatomy spacing must be a whole number of mm, got {spacing}")
    # Voxel (0,0,0) of the block-averaged grid sits at the centre of the first block.
    coarse = affine.copy()
    coarse[:3, :3] = affine[:3, :3] * factor
    coarse[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.full(3, (factor - 1) / 2.0)
    for key in ("gm", "wm", "csf"):
        array = base[key].astype(np.float32) / 255.0
        if factor > 1:
            array = _block_mean(array, factor)
        maps[key] = _to_image(array, coarse)
    sdf = base["vent_sdf"].astype(np.float32) / _SDF_STEPS
    if factor > 1:
        sdf = _block_mean(sdf, factor)
    maps["vent"] = _to_image(sdf, coarse)
    bbox = base["bbox_ras"].astype(float)
    center_lps = bbox.mean(0) * _LPS_FLIP
    return Anatomy(
        spacing=float(spacing),
        gm=maps["gm"],
        wm=maps["wm"],
        csf=maps["csf"],
        vent=maps["vent"],
        center_lps=center_lps,
        extent_mm=bbox[1] - bbox[0],
        surface_lps=base["surface_lps"].astype(float),
        cand_ras=base["cand_ras"].astype(float),
        cand_gm=base["cand_gm"].astype(float),
        cand_wm=base["cand_wm"].astype(float),
        cand_csf=base["cand_csf"].astype(float),
        cand_depth=base["cand_depth"].astype(float),
        cand_region=base["cand_region"].astype(np.uint16),
    )


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """MNI RAS mm -> LPS mm (the two differ by the sign of x and y)."""
    return np.asarray(points, dtype=float) * _LPS_FLIP
