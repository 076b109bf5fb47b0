"""Writing a `Prediction`: label map, optional probability maps, ``report.png`` and ``report.json``.

Files in the output folder (``<id>`` = the case id):

- ``<id>_seg.nii.gz``: uint8 label map on the input grid (BraTS 2023 values 1 NCR, 2 ED, 3 ET by
  default; ``convention="2020"`` writes ET as 4; a model with its own label set writes its values);
- ``<id>_prob_WT.nii.gz`` (``_TC``, ``_ET``; only with ``probabilities=True``): float32 region
  probabilities in [0, 1];
- ``report.png``: T1 post-contrast beside FLAIR, axial, coronal and sagittal slices through the tumor
  with a translucent label overlay, slice positions and R/L, A/P, S/I markers on every view; genotype
  (probability bars, or "not available" with the model card's reason), a volume table, every warning
  in full, the model's name and version and "research use only, trained on synthetic data";
- ``report.json``: written last, so its presence means the case is complete (the cohort mode
  relies on this). Its ``labels`` is the key of the label map *as written* (``--labels 2020``: ET
  is 4 there too; a whole-tumor model's label 1 is spelled out as the whole tumor), its
  ``genotype`` the calls of :mod:`GliomaMTLLib.inference.genotype_call`.

Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from GliomaMTLLib.inference.prediction import Prediction
from GliomaMTLLib.io.atomic import atomic_path, write_text_atomic
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.output_folder import REPORT_JSON, REPORT_PNG
from GliomaMTLLib.io.writers import write_labels, write_volume
from GliomaMTLLib.labels import LABEL_COLORS, SEQUENCE_TITLES
from GliomaMTLLib.preprocess import reorientation_for

#: Sequences shown in the report figure, one row each: T1c beside FLAIR (edema is judged on FLAIR);
#: when one is missing, the next present sequence takes its place (at most two rows).
FIGURE_SEQUENCES = ("t1c", "t2f", "t2w", "t1n")
#: Opacity of the label overlay: the image stays visible beneath every label, necrotic core included.
OVERLAY_ALPHA = 0.4
#: Printed on every report sheet.
DISCLAIMER = "research use only, trained on synthetic data"
_FALLBACK_COLORS = [(0.2, 0.5, 1.0), (1.0, 0.5, 0.0), (0.7, 0.2, 0.9)]


def seg_filename(case_id: str) -> str:
    return f"{case_id}_seg.nii.gz"


def probability_filename(case_id: str, region: str) -> str:
    return f"{case_id}_prob_{region}.nii.gz"


def write_prediction(
    prediction: Prediction,
    out_dir: str | os.PathLike,
    *,
    convention: str = "2023",
    probabilities: bool = False,
    images: dict[str, np.ndarray] | None = None,
    figure: bool = True,
    stale: Iterable[Path] = (),
    extra: dict[str, Path] | None = None,
) -> dict[str, Path]:
    """Write a prediction's files into ``out_dir`` (created); ``report.json`` last.

    An existing ``report.json`` is removed first, so that the folder never claims a finished case while
    it holds a mix of old and new files.

    Args:
        prediction: from :meth:`Predictor.predict`.
        out_dir: output folder.
        convention: label values of the written map, ``"2023"`` or ``"2020"`` (ET = 4).
        probabilities: also write the region probability maps.
        images: the case's sequences (key -> array on the input grid), for the figure background.
        figure: write ``report.png``.
        stale: earlier files of this case (or of a replaced case) to remove before ``report.json`` is
            written, unless this run rewrote them (:func:`GliomaMTLLib.io.output_folder.plan_case_outputs`).
        extra: other files of this case already written by the caller (kind -> path), listed in the
            report and kept.

    Returns:
        kind (``seg``, ``prob_WT``, ..., ``report_png``, ``report_json``) -> path written.
        ``prediction.timings["write"]`` is set.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).unlink(missing_ok=True)
    written: dict[str, Path] = dict(extra or {})
    written["seg"] = write_labels(out / seg_filename(prediction.case_id), prediction.labels, prediction.geometry, convention)
    if probabilities:
        for region, array in prediction.probabilities.items():
            path = out / probability_filename(prediction.case_id, region)
            written[f"prob_{region}"] = write_volume(path, array, prediction.geometry)
    if figure:
        written["report_png"] = write_report_figure(prediction, out / REPORT_PNG, images)
    for path in stale:
        if path.name != REPORT_JSON and path.resolve() not in {p.resolve() for p in written.values()}:
            path.unlink(missing_ok=True)
    written["report_json"] = out / REPORT_JSON
    prediction.timings["write"] = time.perf_counter() - t0
    report = prediction.report(written, label_convention=convention)
    write_text_atomic(out / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    return written


def _slices_through(labels: np.ndarray) -> tuple[int, int, int]:
    """(z, y, x) voxel through the tumor's centre of mass (the volume centre without tumor)."""
    if labels.any():
        return tuple(int(round(v)) for v in np.argwhere(labels > 0).mean(axis=0))  # type: ignore[return-value]
    return tuple(n // 2 for n in labels.shape)  # type: ignore[return-value]


def display_window(image: np.ndarray) -> tuple[float, float]:
    """Grey-level range (1st to 99.5th percentile of the non-zero voxels) for showing an MR image."""
    values = image[image != 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values[:: max(1, values.size // 200_000)], [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _label_color(value: int, index: int, n_labels: int) -> tuple[float, float, float]:
    if n_labels == 1:
        return (1.0, 0.3, 0.1)
    return LABEL_COLORS.get(value, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


def _overlay(labels: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """RGBA overlay: every label translucent (alpha :data:`OVERLAY_ALPHA`), the image visible beneath."""
    rgba = np.zeros(labels.shape + (4,), dtype=np.float32)
    for i, value in enumerate(sorted(names)):
        rgba[labels == value] = (*_label_color(value, i, len(names)), OVERLAY_ALPHA)
    return rgba


def _signed(value: float, positive: str, negative: str) -> str:
    return f"{positive if value >= 0 else negative} {abs(value):.1f} mm"


def _wrapped(lines: list[str], width: int) -> str:
    return "\n".join(textwrap.fill(line, width=width, subsequent_indent="   ") for line in lines)


def build_report_figure(prediction: Prediction, images: dict[str, np.ndarray] | None = None) -> Any:
    """The ``report.png`` sheet as a matplotlib ``Figure`` (see :func:`write_report_figure`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from GliomaMTLLib.inference.genotype_call import describe_call
    from GliomaMTLLib.preprocess import reorient_geometry

    geometry: Geometry = prediction.geometry
    reorient = reorientation_for(geometry, "LPS")
    canonical = reorient_geometry(geometry, reorient)
    labels = reorient.apply(prediction.labels)
    spacing = [geometry.spacing[p] for p in reorient.perm]  # x, y, z after reorientation
    z, y, x = _slices_through(labels)
    centre = canonical.index_to_physical(np.array([x, y, z], dtype=float))[0]  # LPS mm
    shape = labels.shape
    # (title, position, slicer, aspect, origin, (left, right, top, bottom) markers), radiological convention
    views = [
        ("axial", f"{_signed(centre[2], 'S', 'I')}, slice {z + 1}/{shape[0]}", lambda a: a[z],
         spacing[1] / spacing[0], "upper", ("R", "L", "A", "P")),
        ("coronal", f"{_signed(-centre[1], 'A', 'P')}, slice {y + 1}/{shape[1]}", lambda a: a[:, y, :],
         spacing[2] / spacing[0], "lower", ("R", "L", "S", "I")),
        ("sagittal", f"{_signed(-centre[0], 'R', 'L')}, slice {x + 1}/{shape[2]}", lambda a: a[:, :, x],
         spacing[2] / spacing[1], "lower", ("A", "P", "S", "I")),
    ]
    rows = [k for k in FIGURE_SEQUENCES if images and k in images][:2] or [None]
    height = 4.2 * len(rows) + 5.2
    # Fixed margins, not layout="constrained": its solver was ~0.3 s of every predict.
    fig = Figure(figsize=(12, height), dpi=100)
    FigureCanvasAgg(fig)
    lower = 4.6 / height  # share of the height below the image rows
    image_grid = fig.add_gridspec(len(rows), 3, left=0.01, right=0.99, top=1.0 - 0.75 / height, bottom=lower + 0.2 / height,
                                  hspace=0.12, wspace=0.04)
    grid = fig.add_gridspec(2, 3, height_ratios=[2.6, 1.6], left=0.17, right=0.99, top=lower, bottom=0.01,
                            hspace=0.35, wspace=0.1)
    for row, key in enumerate(rows):
        background = reorient.apply(images[key]) if key and images else np.zeros(shape, dtype=np.float32)
        vmin, vmax = display_window(background)
        for col, (title, position, cut, aspect, origin, marks) in enumerate(views):
            ax = fig.add_subplot(image_grid[row, col])
            ax.imshow(cut(background), cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, origin=origin,
                      interpolation="nearest")
            ax.imshow(_overlay(cut(labels), prediction.label_names), aspect=aspect, origin=origin,
                      interpolation="nearest")
            name = SEQUENCE_TITLES.get(key, key) if key else "no image"
            ax.set_title(f"{name}: {title}, {position}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            style = dict(transform=ax.transAxes, color="yellow", fontsize=10, fontweight="bold")
            left, right, top, bottom = marks
            ax.text(0.02, 0.5, left, ha="left", va="center", **style)
            ax.text(0.98, 0.5, right, ha="right", va="center", **style)
            ax.text(0.5, 0.98, top, ha="center", va="top", **style)
            ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)

    calls = prediction.calls()
    ax = fig.add_subplot(grid[0, :2])
    bars = [(f"{task}: {cls}", p) for task, entry in calls.items() if entry["available"]
            for cls, p in (entry["probabilities"] or {}).items()]
    withheld = [f"{task}: {describe_call(entry)}" for task, entry in calls.items() if not entry["available"]]
    if bars:
        names, values = zip(*bars)
        ax.barh(range(len(values)), values, color="tab:blue")
        ax.set_yticks(range(len(values)), names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        for i, v in enumerate(values):
            ax.text(min(v + 0.01, 0.9), i, f"{v:.2f}", va="center")
        ax.set_xlabel("probability (calibrated)")
    else:
        ax.axis("off")
    if withheld or not calls:
        text = _wrapped(withheld, 80) if withheld else "this model predicts no genotype"
        ax.text(0.0 if bars else 0.5, -0.35 if bars else 0.5, text, transform=ax.transAxes, fontsize=9,
                ha="left" if bars else "center", va="top" if bars else "center")
    ax.set_title("genotype", fontsize=10)

    ax = fig.add_subplot(grid[0, 2])
    ax.axis("off")
    table_rows = [[name, f"{ml:.2f}"] for name, ml in prediction.volumes_ml.items()]
    table = ax.table(cellText=table_rows, colLabels=["region / label", "volume (ml)"], loc="lower center")
    table.scale(1, 1.2)
    values = sorted(prediction.label_names)
    handles = [Patch(facecolor=_label_color(v, i, len(values)), alpha=OVERLAY_ALPHA, label=prediction.label_names[v])
               for i, v in enumerate(values)]
    ax.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False, handlelength=1)

    ax = fig.add_subplot(grid[1, :])
    ax.axis("off")
    warnings = [f"- {w}" for w in prediction.warnings] or ["- none"]
    ax.text(0.0, 1.0, "warnings:\n" + _wrapped(warnings, 150), transform=ax.transAxes, va="top", ha="left",
            fontsize=8 if len(warnings) <= 6 else 7, color="firebrick" if prediction.warnings else "black")
    model = prediction.model
    fig.suptitle(
        f"{prediction.case_id}  |  model {model.get('name')} {model.get('version')}  |  {DISCLAIMER}", fontsize=11
    )
    return fig


def write_report_figure(
    prediction: Prediction, path: str | os.PathLike, images: dict[str, np.ndarray] | None = None
) -> Path:
    """``report.png``: for T1 post-contrast and FLAIR side by side (rows; other sequences when those are
    missing), axial, coronal and sagittal slices through the tumor with a translucent label overlay, the
    slice positions (mm and index) and the anatomical directions (R/L, A/P, S/I) on every view;
    genotype probabilities (or "not available" with the reason), a volume table, every warning
    wrapped in full, and the model's name and version with :data:`DISCLAIMER`.

    Slices are shown in LPS-canonical orientation in radiological convention (patient left on the
    image right), whatever the storage order of the input.
    """
    fig = build_report_figure(prediction, images)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def read_report(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``report.json`` of an output folder."""
    return json.loads((Path(folder) / REPORT_JSON).read_text())
