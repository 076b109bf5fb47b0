"""Writing a `Prediction`: label map, optional probability maps, ``report.png`` and ``report.json``.

Files in the output folder (``<id>`` = the case id):

- ``<id>_seg.nii.gz``: uint8 label map on the input grid (BraTS 2023 values 1 NCR, 2 ED, 3 ET by
  default; ``convention="2020"`` writes ET as 4; a model with its own label set writes its values);
- ``<id>_prob_WT.nii.gz`` (``_TC``, ``_ET``; only with ``probabilities=True``): float32 region
  probabilities in [0, 1];
- ``report.png``: axial, coronal and sagittal slices through the tumor with the label overlay,
  genotype probability bars and a volume table;
- ``report.json``: written last, so its presence means the case is complete (the cohort mode
  relies on this).

Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from GliomaMTLLib.inference.prediction import Prediction
from GliomaMTLLib.io.atomic import atomic_path, write_text_atomic
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.io.writers import write_labels, write_volume
from GliomaMTLLib.labels import LABEL_COLORS, SEQUENCE_TITLES
from GliomaMTLLib.preprocess import reorientation_for

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
#: Background sequence of the report figure, first present wins.
FIGURE_SEQUENCES = ("t1c", "t2f", "t2w", "t1n")
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
) -> dict[str, Path]:
    """Write a prediction's files into ``out_dir`` (created); ``report.json`` last.

    Args:
        prediction: from :meth:`Predictor.predict`.
        out_dir: output folder.
        convention: label values of the written map, ``"2023"`` or ``"2020"`` (ET = 4).
        probabilities: also write the region probability maps.
        images: the case's sequences (key -> array on the input grid), for the figure background.
        figure: write ``report.png``.

    Returns:
        kind (``seg``, ``prob_WT``, ..., ``report_png``, ``report_json``) -> path written.
        ``prediction.timings["write"]`` is set.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["seg"] = write_labels(out / seg_filename(prediction.case_id), prediction.labels, prediction.geometry, convention)
    if probabilities:
        for region, array in prediction.probabilities.items():
            path = out / probability_filename(prediction.case_id, region)
            written[f"prob_{region}"] = write_volume(path, array, prediction.geometry)
    if figure:
        written["report_png"] = write_report_figure(prediction, out / REPORT_PNG, images)
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


def _window(image: np.ndarray) -> tuple[float, float]:
    values = image[image != 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values[:: max(1, values.size // 200_000)], [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _overlay(labels: np.ndarray, names: dict[int, str]) -> np.ndarray:
    rgba = np.zeros(labels.shape + (4,), dtype=np.float32)
    for i, value in enumerate(sorted(names)):
        color = LABEL_COLORS.get(value, _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)]) if len(names) > 1 else (1.0, 0.3, 0.1)
        rgba[labels == value] = (*color, 0.45)
    return rgba


def write_report_figure(
    prediction: Prediction, path: str | os.PathLike, images: dict[str, np.ndarray] | None = None
) -> Path:
    """``report.png``: three orthogonal slices with the labels, genotype bars, volume table.

    Slices are shown in LPS-canonical orientation in radiological convention (patient left on the
    image right), whatever the storage order of the input.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    geometry: Geometry = prediction.geometry
    reorient = reorientation_for(geometry, "LPS")
    labels = reorient.apply(prediction.labels)
    spacing = [geometry.spacing[p] for p in reorient.perm]  # x, y, z after reorientation
    key = next((k for k in FIGURE_SEQUENCES if images and k in images), None)
    background = reorient.apply(images[key]) if key else np.zeros(labels.shape, dtype=np.float32)
    vmin, vmax = _window(background)
    z, y, x = _slices_through(labels)
    views = [
        ("axial", background[z], labels[z], spacing[1] / spacing[0], "upper"),
        ("coronal", background[:, y, :], labels[:, y, :], spacing[2] / spacing[0], "lower"),
        ("sagittal", background[:, :, x], labels[:, :, x], spacing[2] / spacing[1], "lower"),
    ]
    fig = Figure(figsize=(12, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, height_ratios=[3, 2])
    for col, (title, img, lab, aspect, origin) in enumerate(views):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, origin=origin, interpolation="nearest")
        ax.imshow(_overlay(lab, prediction.label_names), aspect=aspect, origin=origin, interpolation="nearest")
        ax.set_title(f"{title}" + (f" ({SEQUENCE_TITLES.get(key, key)})" if key else ""))
        ax.set_xticks([])
        ax.set_yticks([])
        if col < 2:
            ax.text(0.01, 0.5, "R", transform=ax.transAxes, color="w", va="center")
            ax.text(0.97, 0.5, "L", transform=ax.transAxes, color="w", va="center")

    ax = fig.add_subplot(grid[1, :2])
    bars = [(f"{task}: {cls}", p) for task, probs in prediction.genotype.items() for cls, p in probs.items()]
    if bars:
        names, values = zip(*bars)
        ax.barh(range(len(values)), values, color="tab:blue")
        ax.set_yticks(range(len(values)), names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        for i, v in enumerate(values):
            ax.text(min(v + 0.01, 0.9), i, f"{v:.2f}", va="center")
        ax.set_xlabel("probability (calibrated)")
        ax.set_title("genotype")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "this model predicts no genotype", ha="center", va="center")

    ax = fig.add_subplot(grid[1, 2])
    ax.axis("off")
    rows = [[name, f"{ml:.2f}"] for name, ml in prediction.volumes_ml.items()]
    table = ax.table(cellText=rows, colLabels=["region / label", "volume (ml)"], loc="lower center")
    table.scale(1, 1.2)
    overlay = _overlay(np.array(sorted(prediction.label_names)), prediction.label_names)
    handles = [Patch(color=tuple(overlay[i, :3]), label=name) for i, name in enumerate(
        prediction.label_names[v] for v in sorted(prediction.label_names))]
    ax.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False, handlelength=1)
    model = prediction.model
    fig.suptitle(f"{prediction.case_id} - {model.get('name')} {model.get('version')}")
    if prediction.warnings:
        fig.supxlabel("warnings: " + " | ".join(w[:90] for w in prediction.warnings[:3]), fontsize=7, color="firebrick")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def read_report(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``report.json`` of an output folder."""
    return json.loads((Path(folder) / REPORT_JSON).read_text())
