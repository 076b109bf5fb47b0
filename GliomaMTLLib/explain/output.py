"""Writing an `Explanation`: heatmaps, ``explain.png`` and, last, ``explain.json``.

Files in the output folder (``<id>`` the case id, ``<task>`` the explained task or region):

- ``<id>_ig_<task>_<sequence>.nii.gz``: float32 heatmap of each sequence on the exact input grid;
- ``<id>_ig_<task>_combined.nii.gz``: their sum;
- ``explain.png``: the slices with the most attribution (axial, coronal, sagittal) with the combined
  heatmap over the image, one axial slice per sequence, the predicted tumor outlined, a colour bar;
- ``explain.json``: :meth:`Explanation.report` plus the files; written last, so its presence means
  the explanation is complete.

Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from GliomaMTLLib.explain.explanation import Explanation
from GliomaMTLLib.io.atomic import atomic_path, write_text_atomic
from GliomaMTLLib.inference.report import display_window
from GliomaMTLLib.io.writers import write_volume
from GliomaMTLLib.labels import SEQUENCE_TITLES
from GliomaMTLLib.preprocess import reorientation_for

EXPLAIN_JSON = "explain.json"
EXPLAIN_PNG = "explain.png"
#: Background of the combined heatmap in the figure, first present wins.
FIGURE_SEQUENCES = ("t1c", "t2f", "t2w", "t1n")


def heatmap_filename(case_id: str, task: str, sequence: str) -> str:
    """``<case_id>_ig_<task>_<sequence>.nii.gz`` (``sequence`` may be ``combined``)."""
    return f"{case_id}_ig_{task}_{sequence}.nii.gz"


def write_explanation(
    explanation: Explanation,
    out_dir: str | os.PathLike,
    images: dict[str, np.ndarray] | None = None,
    figure: bool = True,
) -> dict[str, Path]:
    """Write an explanation's files into ``out_dir`` (created); ``explain.json`` last.

    Args:
        images: the case's sequences on the input grid (figure background).

    Returns:
        kind (``ig_<sequence>``, ``ig_combined``, ``explain_png``, ``explain_json``) -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    e = explanation
    written: dict[str, Path] = {}
    for sequence, heatmap in [*e.maps.items(), ("combined", e.combined)]:
        path = out / heatmap_filename(e.case_id, e.task, sequence)
        written[f"ig_{sequence}"] = write_volume(path, heatmap, e.geometry)
    if figure:
        written["explain_png"] = write_explanation_figure(e, out / EXPLAIN_PNG, images)
    written["explain_json"] = out / EXPLAIN_JSON
    write_text_atomic(out / EXPLAIN_JSON, json.dumps(e.report(written), indent=2) + "\n")
    return written


def _strongest(volume: np.ndarray) -> tuple[int, int, int]:
    """(z, y, x) indices of the slices holding the most absolute attribution along each axis."""
    magnitude = np.abs(volume)
    return tuple(int(np.argmax(magnitude.sum(axis=tuple(a for a in range(3) if a != axis))))
                 for axis in range(3))  # type: ignore[return-value]


def write_explanation_figure(
    explanation: Explanation, path: str | os.PathLike, images: dict[str, np.ndarray] | None = None
) -> Path:
    """``explain.png``: top row, the axial, coronal and sagittal slices with the most attribution, the
    combined heatmap over the image; bottom row, each sequence's heatmap on the axial slice; the
    predicted tumor outlined; one colour bar (symmetric, red positive, blue negative). The views are
    zoomed on the explained window and the tumor.

    Slices are shown in LPS-canonical orientation, radiological convention (patient left on the
    image right), like ``report.png``.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    e = explanation
    reorient = reorientation_for(e.geometry, "LPS")
    spacing = [e.geometry.spacing[p] for p in reorient.perm]  # x, y, z after reorientation
    combined = reorient.apply(e.combined)
    tumor = reorient.apply(e.labels) > 0
    images = images or {}
    key = next((k for k in FIGURE_SEQUENCES if k in images), None)
    z, y, x = _strongest(combined)
    nonzero = np.abs(combined[combined != 0])
    vmax = float(np.percentile(nonzero, 99.5)) if nonzero.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    norm, cmap = Normalize(-vmax, vmax), colormaps["RdBu_r"]

    def overlay(values: np.ndarray) -> np.ndarray:
        rgba = cmap(norm(values)).astype(np.float32)
        rgba[..., 3] = np.clip(np.abs(values) / vmax, 0.0, 1.0) ** 0.7 * 0.9
        return rgba

    # Zoom on the explained window (and the tumor), with a margin: the heatmap covers the model's crop only.
    focus = (combined != 0) | tumor
    if focus.any():
        lo = np.argwhere(focus).min(axis=0)
        hi = np.argwhere(focus).max(axis=0) + 1
        margin = np.maximum(4, ((hi - lo) * 0.15).astype(int))
        zs, ys, xs = (slice(int(max(a - m, 0)), int(min(b + m, n)))
                      for a, b, m, n in zip(lo, hi, margin, combined.shape))
    else:
        zs, ys, xs = (slice(0, n) for n in combined.shape)

    def cut(volume: np.ndarray, view: str) -> np.ndarray:
        return {"axial": volume[z, ys, xs], "coronal": volume[zs, y, xs], "sagittal": volume[zs, ys, x]}[view]

    aspects = {"axial": (spacing[1] / spacing[0], "upper"), "coronal": (spacing[2] / spacing[0], "lower"),
               "sagittal": (spacing[2] / spacing[1], "lower")}
    panels = [(view, key, combined, "combined") for view in ("axial", "coronal", "sagittal")]
    panels += [("axial", s, reorient.apply(heat), s) for s, heat in e.maps.items()]
    n_cols = max(3, len(e.maps))
    fig = Figure(figsize=(3.4 * n_cols + 1.2, 7.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n_cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (view, background_key, heat, name) in enumerate(panels):
        ax = axes[0, i] if i < 3 else axes[1, i - 3]
        aspect, origin = aspects[view]
        if background_key is not None and background_key in images:
            background = reorient.apply(images[background_key])
            lo, hi = display_window(background)
            ax.imshow(cut(background, view), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin,
                      interpolation="nearest")
        ax.imshow(overlay(cut(heat, view)), aspect=aspect, origin=origin, interpolation="nearest")
        outline = cut(tumor, view)
        if outline.any():
            ax.contour(outline.astype(np.float32), levels=[0.5], colors="lime", linewidths=0.7, origin=origin)
        index = {"axial": z, "coronal": y, "sagittal": x}[view]
        title = SEQUENCE_TITLES.get(name, name)
        ax.set_title(f"{view} {index}: {title}" + (f" on {SEQUENCE_TITLES.get(background_key, background_key)}"
                                                   if name == "combined" and background_key else ""), fontsize=9)
        if view != "sagittal":
            ax.text(0.01, 0.5, "R", transform=ax.transAxes, color="w", va="center", fontsize=8)
            ax.text(0.96, 0.5, "L", transform=ax.transAxes, color="w", va="center", fontsize=8)
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=axes, shrink=0.8, location="right")
    unit = "probability" if e.kind == "genotype" else "voxels of soft volume"
    bar.set_label(f"attribution per voxel ({unit}); green: predicted tumor")
    a = e.attribution
    what = f"{e.task}: {e.target}" if e.kind == "genotype" else f"{e.task} soft volume {e.attribution.output:.0f} voxels"
    headline = (f"{e.case_id} - {what}" + (f" (p = {e.probability:.2f})" if e.probability is not None else "")
                + f" - integrated gradients, {a.steps} steps, delta {a.delta:.2g} "
                f"({a.relative_delta:.1%} of the output change) - {e.model.get('name')} {e.model.get('version')}")
    fig.suptitle(headline, fontsize=10)
    if e.warnings:
        fig.supxlabel("warnings: " + " | ".join(w[:100] for w in e.warnings[:3]), fontsize=7, color="firebrick")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
