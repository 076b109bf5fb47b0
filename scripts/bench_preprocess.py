"""Benchmark GliomaMTLLib.preprocess on a BraTS-sized case (240x240x155, 1 mm, 4 sequences).

Prints a table of wall times (median of several runs). SimpleITK is limited to one thread by
default so the numbers are single-core; pass --threads N to change that.

    .venv/bin/python scripts/bench_preprocess.py [--threads 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.preprocess import (
    PreprocessConfig,
    labels_from_probabilities_on_input_grid,
    preprocess,
    preprocess_label,
    to_input_grid,
)


def brats_like_case(direction: tuple[float, ...]) -> Case:
    rng = np.random.default_rng(0)
    geometry = Geometry(size=(240, 240, 155), spacing=(1.0, 1.0, 1.0), origin=(0.0, -239.0, 0.0), direction=direction)
    z, y, x = np.ogrid[:155, :240, :240]
    brain = ((x - 120) / 70.0) ** 2 + ((y - 120) / 85.0) ** 2 + ((z - 75) / 65.0) ** 2 < 1
    images = {}
    for key in ("t1n", "t1c", "t2w", "t2f"):
        values = rng.normal(500, 100, size=geometry.shape).astype(np.float32)
        images[key] = np.where(brain, values, 0).astype(np.float32)
    label = np.zeros(geometry.shape, np.uint8)
    label[60:90, 100:140, 100:140] = 2
    label[70:80, 110:130, 110:130] = 3
    return Case("bench", images, geometry, label=label)


def timed(fn, repeat: int) -> tuple[tuple[float, float], object]:
    """(median wall time, median CPU time of this process) in seconds, and the last result.

    CPU time is the steadier figure on a shared machine: it does not count time spent waiting
    for a core that another process holds.
    """
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return (float(np.median(walls)), float(np.median(cpus))), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    identity = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    ras = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)
    rows = []
    for name, direction, spacing in [
        ("LPS input, native spacing", identity, None),
        ("RAS input, native spacing", ras, None),
        ("LPS input, 2 mm", identity, (2.0, 2.0, 2.0)),
        ("RAS input, 2 mm", ras, (2.0, 2.0, 2.0)),
        ("LPS input, 1 mm iso (no-op)", identity, (1.0, 1.0, 1.0)),
        ("LPS input, 1.5 mm", identity, (1.5, 1.5, 1.5)),
    ]:
        case = brats_like_case(direction)
        config = PreprocessConfig(spacing=spacing)
        t_pre, pre = timed(lambda: preprocess(case, ("t1n", "t1c", "t2w", "t2f"), config), args.repeat)
        t_lab, lab = timed(lambda: preprocess_label(case.label, pre.record), args.repeat)
        t_inv, _ = timed(lambda: to_input_grid(lab, pre.record, "label"), args.repeat)
        probs = np.stack([(lab == c).astype(np.float32) for c in range(4)])
        t_prob, _ = timed(lambda: labels_from_probabilities_on_input_grid(probs, pre.record), args.repeat)
        rows.append((name, pre.image.shape, t_pre, t_lab, t_inv, t_prob))

    print(f"SimpleITK threads: {args.threads}; median of {args.repeat} runs; 240x240x155 1 mm input, 4 sequences")
    print("times in ms, wall / CPU")
    header = (
        f"| {'case':28s} | {'preprocessed (C,z,y,x)':22s} | {'preprocess':>11s} | {'label fwd':>11s} "
        f"| {'label inv':>11s} | {'4-class probs->labels':>21s} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for name, shape, *times in rows:
        t = [f"{1000 * w:4.0f} / {1000 * c:4.0f}" for w, c in times]
        print(f"| {name:28s} | {str(shape):22s} | {t[0]:>11s} | {t[1]:>11s} | {t[2]:>11s} | {t[3]:>21s} |")


if __name__ == "__main__":
    main()
