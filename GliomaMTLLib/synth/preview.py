"""Preview PNG of phantom (or any BraTS-layout) cases: one row per case, axial and coronal slices
through the tumour centre of the four sequences with a semi-transparent label overlay.

Display convention: radiological (patient right on the viewer's left), anterior up on axial
slices, superior up on coronal slices, as in published BraTS figures.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from GliomaMTLLib.io.atomic import atomic_path
from GliomaMTLLib.io.case import Case
from GliomaMTLLib.labels import LABEL_COLORS, SEQUENCE_TITLES, SEQUENCES


def _center(case: Case) -> tuple[int, int, int]:
    """(z, y, x) index of the tumour centre (largest-label centroid), else of the brain."""
    ref = case.label if case.label is not None and case.label.any() else None
    if ref is None:
        ref = next(iter(case.images.values())) != 0
    else:
        ref = ref > 0
    idx = np.argwhere(ref)
    if len(idx) == 0:
        return tuple(int(s // 2) for s in case.geometry.shape)  # type: ignore[return-value]
    c = np.round(idx.mean(0)).astype(int)
    # Snap to a voxel that is actually in the region (a ring's centroid can be outside it).
    d = np.abs(idx - c).sum(1)
    return tuple(int(v) for v in idx[int(np.argmin(d))])  # type: ignore[return-value]


def _window(img: np.ndarray) -> tuple[float, float]:
    vals = img[img != 0]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [0.5, 99.5])
    return float(min(lo, 0.0) if lo < 0 else 0.0), float(hi if hi > lo else lo + 1.0)


def _overlay(label2d: np.ndarray, alpha: float) -> np.ndarray:
    rgba = np.zeros(label2d.shape + (4,), dtype=np.float32)
    for value, color in LABEL_COLORS.items():
        sel = label2d == value
        rgba[sel, :3] = color
        rgba[sel, 3] = alpha
    return rgba


def _genotype_text(case: Case) -> str:
    parts = [f"{k}={v}" for k, v in case.genotype.items()]
    if case.survival_days is not None:
        parts.append(f"OS={case.survival_days:.0f}d{'' if case.event else '+'}")
    return ", ".join(parts) if parts else "genotype unknown"


def save_preview(cases: Sequence[Case], path: str | Path, overlay_alpha: float = 0.35,
                 title: str | None = None) -> Path:
    """Write the preview PNG of ``cases`` (one row each) to ``path`` atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not cases:
        raise ValueError("no cases to preview")
    n = len(cases)
    ncols = 2 * len(SEQUENCES)
    panel_w, panel_h, row_gap, head = 1.55, 1.75, 0.28, 0.56 + (0.25 if title else 0.0)
    fig_w, fig_h = panel_w * ncols + 0.1, n * (panel_h + row_gap) + head
    fig, axes = plt.subplots(n, ncols, figsize=(fig_w, fig_h), squeeze=False)
    fig.patch.set_facecolor("black")
    fig.subplots_adjust(left=0.05 / fig_w, right=1 - 0.05 / fig_w, bottom=0.05 / fig_h, top=1 - head / fig_h,
                        wspace=0.04, hspace=row_gap / panel_h)
    for row, case in enumerate(cases):
        cz, cy, cx = _center(case)
        brain = np.zeros(case.geometry.shape, dtype=bool)
        for img in case.images.values():
            brain |= img != 0
        idx = np.argwhere(brain) if brain.any() else np.argwhere(np.ones_like(brain))
        lo = np.maximum(idx.min(0) - 4, 0)
        hi = np.minimum(idx.max(0) + 5, np.asarray(case.geometry.shape))
        label = case.label if case.label is not None else np.zeros(case.geometry.shape, np.uint8)
        for v, view in enumerate(("axial", "coronal")):
            for s, seq in enumerate(SEQUENCES):
                ax = axes[row, v * len(SEQUENCES) + s]
                ax.set_facecolor("black")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if seq not in case.images:
                    continue
                img = case.images[seq]
                vmin, vmax = _window(img)
                if view == "axial":
                    sl = img[cz, lo[1]:hi[1], lo[2]:hi[2]]
                    lab = label[cz, lo[1]:hi[1], lo[2]:hi[2]]
                    origin = "upper"
                else:
                    sl = img[lo[0]:hi[0], cy, lo[2]:hi[2]]
                    lab = label[lo[0]:hi[0], cy, lo[2]:hi[2]]
                    origin = "lower"
                ax.imshow(sl, cmap="gray", vmin=vmin, vmax=vmax, origin=origin, interpolation="nearest")
                if overlay_alpha > 0:
                    ax.imshow(_overlay(lab, overlay_alpha), origin=origin, interpolation="nearest")
                ax.set_aspect("equal")
                if row == 0:
                    box = ax.get_position()
                    fig.text((box.x0 + box.x1) / 2, 1 - (head - 0.22) / fig_h, f"{SEQUENCE_TITLES[seq]}\n{view}",
                             color="white", fontsize=8, ha="center", va="bottom")
        box = axes[row, 0].get_position()
        fig.text(box.x0 + 0.005, box.y1 + 0.04 / fig_h, f"{case.case_id}:  {_genotype_text(case)}",
                 color="white", fontsize=8, ha="left", va="bottom")
    if title:
        fig.text(0.5, 1 - 0.05 / fig_h, title, color="white", fontsize=10, ha="center", va="top")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, facecolor=fig.get_facecolor(), format="png")
    plt.close(fig)
    return path


def read_brats_case(folder: str | Path, genotype: dict[str, str] | None = None) -> Case:
    """Read one BraTS 2023-layout case folder (``<id>-t1n.nii.gz`` ..., ``<id>-seg.nii.gz``)."""
    import SimpleITK as sitk

    from GliomaMTLLib.io.geometry import Geometry

    folder = Path(folder)
    cid = folder.name
    images = {}
    geometry = None
    for seq in SEQUENCES:
        f = folder / f"{cid}-{seq}.nii.gz"
        if not f.is_file():
            continue
        img = sitk.ReadImage(str(f))
        geometry = geometry or Geometry.from_image(img)
        images[seq] = sitk.GetArrayFromImage(img).astype(np.float32)
    if geometry is None:
        raise FileNotFoundError(f"no {cid}-<sequence>.nii.gz files in {folder}")
    seg = folder / f"{cid}-seg.nii.gz"
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(seg))).astype(np.uint8) if seg.is_file() else None
    return Case(case_id=cid, images=images, geometry=geometry, label=label, genotype=genotype or {})


def preview_folder(folder: str | Path, path: str | Path | None = None, max_cases: int = 6) -> Path:
    """Preview the first ``max_cases`` cases of a cohort folder (genotype from its labels.csv)."""
    folder = Path(folder)
    rows: dict[str, dict[str, str]] = {}
    table = folder / "labels.csv"
    if table.is_file():
        with open(table, newline="") as fh:
            rows = {r["case_id"]: r for r in csv.DictReader(fh)}
    case_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))[:max_cases]
    cases = []
    for d in case_dirs:
        r = rows.get(d.name, {})
        genotype = {k: r[k] for k in ("idh", "codel_1p19q", "braf") if r.get(k)}
        case = read_brats_case(d, genotype)
        if r.get("survival_days"):
            case.survival_days = float(r["survival_days"])
            case.event = r.get("event") in ("1", "True", "true")
        cases.append(case)
    return save_preview(cases, path or folder / "preview.png", title=f"{folder.name}: {len(cases)} cases")
