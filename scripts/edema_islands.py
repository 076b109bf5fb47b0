#!/usr/bin/env python
"""Would removing edema-only islands help? Dice with and without the rule, per case.

An "edema-only island" is a connected tumor component (26-connectivity) of the final label map
that holds no necrotic core and no enhancing tumor and is not the largest component. On small
phantom tumors the adult model scatters such islands over bright grey matter and white-matter
hyperintensities (the real-scan failure mode "edema on FLAIR-bright normal tissue" of issue 11).
A real non-enhancing glioma is one such component too, but then it is the largest one and stays.

    python scripts/edema_islands.py [--model gliomamtl_adult] [--seed 105000] [--n 40] [--distances 0 5 10 20 30]

Predicts each phantom once (``synthesize(seed + i)``, full size), then scores the label map as
predicted and with the islands at least each of ``--distances`` mm from every kept component
removed (0: all islands). Prints one row per case and the
mean with a paired bootstrap interval. Choose on validation seeds (105000: the recipe's
validation split), report on test seeds (205000). It measures, it asserts nothing.

Measured with adult 0.3.1 (README, "Models"): on the 40 validation phantoms no distance helped
(removing every island cost WT 0.0014, 12 cases worse, 3 better; islands 30 mm away or more: no
change), so the rule is not part of the post-processing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from GliomaMTLLib.labels import REGIONS  # noqa: E402
from GliomaMTLLib.metrics.segmentation import region_dice  # noqa: E402


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return components, np.bincount(components.ravel())


def remove_edema_islands(labels: np.ndarray, voxel_volume_ml: float, min_distance_mm: float = 0.0,
                         spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
                         core_labels: tuple[int, ...] = (1, 3)) -> tuple[np.ndarray, float]:
    """Set to 0 every edema-only island: a whole-tumor component that holds none of
    ``core_labels``, is not the largest component, and lies at least ``min_distance_mm`` from every
    component kept (the largest and those with a core). ``labels`` is modified in place.

    Returns:
        (labels, removed volume in ml).
    """
    from scipy import ndimage

    from GliomaMTLLib.preprocess import bounding_box

    tumor = labels > 0
    if not tumor.any():
        return labels, 0.0
    box = bounding_box(tumor, 1)
    sub = labels[box]
    components, sizes = _components(tumor[box])
    has_core = np.bincount(components[np.isin(sub, core_labels)].ravel(), minlength=len(sizes)) > 0
    sizes_fg = sizes.copy()
    sizes_fg[0] = 0
    kept = has_core.copy()
    kept[int(np.argmax(sizes_fg))] = True
    kept[0] = False
    drop = ~kept
    drop[0] = False
    if not drop.any():
        return labels, 0.0
    if min_distance_mm > 0:
        distance = ndimage.distance_transform_edt(~kept[components], sampling=spacing_zyx)
        nearest = ndimage.minimum(distance, components, index=np.arange(len(sizes)))
        drop &= np.asarray(nearest) >= min_distance_mm
        if not drop.any():
            return labels, 0.0
    mask = drop[components]
    removed = float(np.count_nonzero(mask) * voxel_volume_ml)
    sub[mask] = 0
    return labels, removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gliomamtl_adult")
    parser.add_argument("--seed", type=int, default=105000)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--distances", type=float, nargs="+", default=[0.0, 5.0, 10.0, 20.0, 30.0],
                        help="variants: islands at least this far (mm) from every kept component are removed")
    args = parser.parse_args()

    from GliomaMTLLib.inference import Predictor
    from GliomaMTLLib.synth import synthesize

    predictor = Predictor(args.model, device="cpu")
    dists = list(args.distances)
    print("| case | WT | " + " | ".join(f"WT, islands >= {d:g} mm removed (ml removed)" for d in dists) + " |")
    print("|---|---|" + "---|" * len(dists))
    before, after = [], {d: [] for d in dists}
    for i in range(args.n):
        r = synthesize(args.seed + i, "adult")
        pred = predictor.predict(r.case).labels
        ref = r.case.label
        spacing = tuple(float(v) for v in r.case.geometry.spacing[::-1])
        b = [region_dice(pred, ref, m) for m in REGIONS.values()]
        before.append(b)
        cells = []
        for d in dists:
            cleaned, removed = remove_edema_islands(pred.copy(), r.case.geometry.voxel_volume_ml, d, spacing)
            a = [region_dice(cleaned, ref, m) for m in REGIONS.values()]
            after[d].append(a)
            cells.append(f"{a[0]:.3f} ({removed:.2f})")
        print(f"| {r.case.case_id} | {b[0]:.3f} | " + " | ".join(cells) + " |", flush=True)
    before = np.asarray(before)
    rng = np.random.default_rng(0)
    for d in dists:
        a = np.asarray(after[d])
        for j, name in enumerate(REGIONS):
            diff = a[:, j] - before[:, j]
            boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
            print(f"islands >= {d:g} mm: {name} {before[:, j].mean():.4f} -> {a[:, j].mean():.4f}, paired {diff.mean():+.4f} "
                  f"[{np.percentile(boot, 2.5):+.4f}, {np.percentile(boot, 97.5):+.4f}], better on {int((diff > 0).sum())}, "
                  f"worse on {int((diff < 0).sum())} of {len(diff)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
