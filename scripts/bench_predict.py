#!/usr/bin/env python
"""Benchmark: one 240x240x155 synthetic case end to end, GliomaMTL against MONAI's BraTS SegResNet.

Prints a Markdown table (a measurement, not a test). Each pipeline runs in its own child process,
so its peak resident memory (``resource.getrusage``) is its own and not the synthesis's.

GliomaMTL: read the four NIfTI files, predict (preprocess, localizer, main crop, resample to the
input grid, post-process), write the label map, ``report.png`` and ``report.json``; with the given
bundle (default: the shipped adult bundle; if none is shipped yet, a random-weight bundle with the
intended shipped architecture, :data:`GliomaMTLLib.inference.fixtures.SHIPPED_LIKE`).

Besides the in-process stages, the real command is timed as a user meets it: ``gliomamtl --help``
and ``gliomamtl predict CASE --out DIR`` as child processes, from process start to exit (after
``report.json`` is written), with each child's own peak resident memory (``os.wait4``). The first
``predict`` may include the one-time ONNX export of the model (cached afterwards); the second is
what every later run costs. ``--large`` adds the same case resampled to 512x512x400 at 0.47 mm
(int16 NIfTI, as high-resolution scanners write it) through the same command.

Reference: the MONAI BraTS bundle's network, ``SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1),
init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2)`` with random weights, on the same
files: read, z-score (non-zero voxels, per channel), ``sliding_window_inference`` with roi
(224, 224, 144), overlap 0.5, sw_batch_size 1 under ``torch.inference_mode``, sigmoid > 0.5, write.

Usage::

    .venv/bin/python scripts/bench_predict.py                   # CPU, shipped or shipped-like bundle
    .venv/bin/python scripts/bench_predict.py --device cuda     # GPU timings (synchronized)
    .venv/bin/python scripts/bench_predict.py --model PATH --repeats 2 --skip-reference
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _truth_box_predictor(base: type) -> type:
    """A Predictor whose localizer network runs (and is timed) but whose tumor box comes from the
    synthetic truth: random weights see "tumor" everywhere, which would send the main stage over
    the whole brain, not the one window a trained model needs for this case."""
    import numpy as np

    from GliomaMTLLib.preprocess import bounding_box, preprocess_label

    class TruthBoxPredictor(base):  # type: ignore[misc, valid-type]
        truth = None

        def _localize(self, pre_loc, pre_main, device):  # noqa: ANN001
            super()._localize(pre_loc, pre_main, device)
            label = preprocess_label(self.truth, pre_main.record) > 0
            slices = bounding_box(label)
            margin_mm = float(self.localizer.option("margin_mm", 8.0)) + np.asarray(pre_loc.geometry.spacing[::-1])
            margin = margin_mm / np.asarray(pre_main.geometry.spacing[::-1])
            lo = np.array([s.start for s in slices]) - 0.5 - margin
            hi = np.array([s.stop for s in slices]) - 0.5 + margin
            return np.stack([lo, hi])

    return TruthBoxPredictor


def worker_gliomamtl(case_dir: Path, model: str, device: str, repeats: int, out: Path, threads: int | None,
                     truth_box: bool) -> dict:
    import torch

    from GliomaMTLLib.inference import Predictor, write_prediction

    t0 = time.perf_counter()
    cls = _truth_box_predictor(Predictor) if truth_box else Predictor
    predictor = cls(model, device=device, num_threads=threads)
    _sync(device)
    load_s = time.perf_counter() - t0
    runs = []
    for i in range(repeats):
        case = prediction = None  # let the previous run's arrays go before the next one
        t0 = time.perf_counter()
        case = predictor.read(case_dir)
        read_s = time.perf_counter() - t0
        if truth_box:
            import SimpleITK as sitk

            predictor.truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir.parent / "truth.nii.gz")))
        prediction = predictor.predict(case)
        _sync(device)
        prediction.timings = {"read": read_s, **prediction.timings}
        write_prediction(prediction, out / f"run{i}", images=case.images)
        runs.append({"timings": dict(prediction.timings), "total": time.perf_counter() - t0,
                     "windows": prediction.tumor.get("windows"), "warnings": prediction.warnings})
    result = {"load": load_s, "runs": runs, "peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads(),
              "device": str(predictor.device), "engine": predictor.engine_used, "model": predictor.model_info}
    if device.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def worker_segresnet(case_dir: Path, device: str, out: Path, threads: int | None) -> dict:
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SegResNet

    from GliomaMTLLib.inference.device import configure_cpu_threads, resolve_device
    from GliomaMTLLib.io.readers import read_case
    from GliomaMTLLib.io.writers import write_volume

    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_cpu_threads(threads)
    torch.manual_seed(0)
    net = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3,
                    dropout_prob=0.2).to(dev).eval()
    t0 = time.perf_counter()
    case = read_case(case_dir, required=("t1n", "t1c", "t2w", "t2f"))
    image = case.stack(("t1n", "t1c", "t2w", "t2f"))
    for channel in image:  # NormalizeIntensityd(nonzero=True, channel_wise=True)
        mask = channel != 0
        values = channel[mask]
        channel[mask] = (values - values.mean()) / max(float(values.std()), 1e-8)
    read_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    x = torch.from_numpy(image[None]).to(dev)
    with torch.inference_mode():
        logits = sliding_window_inference(x, roi_size=(224, 224, 144), sw_batch_size=1, predictor=net, overlap=0.5)
        labels = (torch.sigmoid(logits) > 0.5)[0].cpu().numpy()
    _sync(device)
    infer_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    # BraTS bundle output channels TC, WT, ET -> one label map (ET 3 > NCR 1 > ED 2), written on the input grid.
    seg = np.zeros(labels.shape[1:], dtype=np.uint8)
    seg[labels[1]] = 2
    seg[labels[0]] = 1
    seg[labels[2]] = 3
    write_volume(out / "segresnet_seg.nii.gz", seg, case.geometry, dtype=np.uint8)
    write_s = time.perf_counter() - t2
    result = {"timings": {"read": read_s, "network": infer_s, "write": write_s},
              "total": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads(),
              "device": str(dev)}
    if dev.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


TIME = Path("/usr/bin/time")


def run_command(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Run a command as a child process: (wall seconds from start to exit, its peak RSS in MB, exit code).

    The peak comes from GNU ``time`` when installed: a child forked from this (large) process
    inherits its memory high-water mark, so ``os.wait4``'s figure is only an upper bound.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        wrapped = [str(TIME), "-f", "%M", "-o", rss_file.name, *argv] if TIME.is_file() else argv
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        text = rss_file.read().strip().splitlines()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        print(f"{' '.join(argv)} failed ({proc.returncode}):\n{err[-2000:]}", file=sys.stderr)
    peak_kb = float(text[-1]) if TIME.is_file() and text and text[-1].isdigit() else usage.ru_maxrss
    return wall, peak_kb / 1024.0, proc.returncode


def gliomamtl_command() -> list[str]:
    """The installed console script, or the module form when it is not on PATH next to Python."""
    script = Path(sys.executable).with_name("gliomamtl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "GliomaMTLLib"]


def command_rows(case_dir: Path, model: str, work: Path, device: str, threads: int | None, repeats: int = 2
                 ) -> list[tuple[str, str, str, str]]:
    """Table rows for `gliomamtl --help` and the whole `gliomamtl predict` command (process start to exit)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    rows = []
    wall, rss, _ = run_command(gliomamtl_command() + ["--help"], env)
    rows.append(("`gliomamtl --help` (process)", f"{wall:.2f}", "process start to exit", f"{rss:.0f}"))
    for i in range(repeats):
        out = work / f"command{i}"
        argv = gliomamtl_command() + ["predict", str(case_dir), "--out", str(out), "--model", model, "--device", device]
        wall, rss, code = run_command(argv, env)
        report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
        stages = ", ".join(f"{k} {v:.2f}" for k, v in (report.get("timings_s") or {}).items())
        label = "first run" if i == 0 else "again"
        rows.append((f"`gliomamtl predict` {case_dir.name} ({label}; process)", f"{wall:.2f}" if code == 0 else "failed",
                     stages, f"{rss:.0f}"))
    return rows


def make_large_case(case_dir: Path, out_dir: Path, size=(512, 512, 400), spacing: float = 0.47) -> Path:
    """The case's sequences resampled (linear) onto a ``size`` grid of ``spacing`` mm about the same
    centre, written as int16 ``.nii`` (uncompressed: writing 4 x 210 MB of gzip would dominate)."""
    import numpy as np
    import SimpleITK as sitk

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(case_dir.glob("*-t*.nii.gz")):
        image = sitk.ReadImage(str(path))
        ref = sitk.Image(list(size), sitk.sitkInt16)
        ref.SetSpacing([spacing] * 3)
        ref.SetDirection(image.GetDirection())
        centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
        half = np.asarray(image.GetDirection()).reshape(3, 3) @ ((np.asarray(size) - 1) * spacing / 2)
        ref.SetOrigin(tuple(centre - half))
        resampled = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkInt16)
        sitk.WriteImage(resampled, str(out_dir / path.name.replace(".nii.gz", ".nii")))
    return out_dir


def _child(kind: str, args: argparse.Namespace, case_dir: Path, model: str, work: Path, truth_box: bool) -> dict:
    result_path = work / f"{kind}.json"
    cmd = [sys.executable, __file__, "--worker", kind, "--case", str(case_dir), "--model", model,
           "--device", args.device, "--repeats", str(args.repeats), "--work", str(work), "--result", str(result_path)]
    if truth_box:
        cmd.append("--truth-box")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True)
    return json.loads(result_path.read_text())


def _model_for_benchmark(args: argparse.Namespace, work: Path) -> tuple[str, str]:
    from GliomaMTLLib.bundle import BundleError, resolve_bundle
    from GliomaMTLLib.inference.fixtures import SHIPPED_LIKE, make_random_bundle

    try:
        return str(resolve_bundle(args.model)), "given" if args.model != "gliomamtl_adult" else "shipped"
    except BundleError:
        if args.model != "gliomamtl_adult":
            raise
    folder = work / "shipped_like_random"
    make_random_bundle(folder, name="shipped_like_random", **SHIPPED_LIKE)
    return str(folder), "random weights, shipped architecture (no shipped bundle yet)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gliomamtl_adult", help="bundle name or folder (default: shipped adult)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--seed", type=int, default=0, help="synthetic case seed")
    parser.add_argument("--repeats", type=int, default=1, help="GliomaMTL runs in the same process (first is cold)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    parser.add_argument("--skip-reference", action="store_true", help="do not run the SegResNet reference")
    parser.add_argument("--skip-command", action="store_true", help="do not time the `gliomamtl` command as a process")
    parser.add_argument("--large", action="store_true",
                        help="also run the command on the case resampled to 512x512x400 at 0.47 mm (peak memory)")
    parser.add_argument("--truth-box", action="store_true",
                        help="take the tumor box from the synthetic truth (default for random-weight bundles)")
    parser.add_argument("--worker", choices=("gliomamtl", "segresnet"), help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        work = Path(args.work)
        if args.worker == "gliomamtl":
            result = worker_gliomamtl(Path(args.case), args.model, args.device, args.repeats, work, args.threads,
                                      args.truth_box)
        else:
            result = worker_segresnet(Path(args.case), args.device, work, args.threads)
        Path(args.result).write_text(json.dumps(result))
        return 0

    from GliomaMTLLib.io.writers import write_case, write_labels
    from GliomaMTLLib.synth import generate_case

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        work = Path(tmp)
        model, origin = _model_for_benchmark(args, work)
        t0 = time.perf_counter()
        case = generate_case(args.seed)
        case_dir = work / "input" / case.case_id
        truth, case.label = case.label, None  # the input folder holds the four sequences only
        write_case(case, case_dir, layout="brats2023")
        write_labels(case_dir.parent / "truth.nii.gz", truth, case.geometry)
        print(f"synthetic case {case.case_id} {case.geometry.size} written in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        truth_box = args.truth_box or origin.startswith("random")
        ours = _child("gliomamtl", args, case_dir, model, work, truth_box)
        commands = [] if args.skip_command else command_rows(case_dir, model, work, args.device, args.threads)
        if args.large:
            t0 = time.perf_counter()
            large = make_large_case(case_dir, work / "large" / case.case_id)
            print(f"512x512x400 0.47 mm case written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            commands += [(name.replace(case.case_id, "512x512x400 at 0.47 mm"), *rest)
                         for name, *rest in command_rows(large, model, work / "large_out", args.device, args.threads, 1)]
        ref = None if args.skip_reference else _child("segresnet", args, case_dir, model, work, False)

    rows = []
    for i, run in enumerate(ours["runs"]):
        label = "cold" if i == 0 else f"warm {i}"
        stages = ", ".join(f"{k} {v:.2f}" for k, v in run["timings"].items())
        rows.append((f"GliomaMTL ({label})", f"{run['total']:.2f}", stages, f"{ours['peak_rss_mb']:.0f}"))
    rows += commands
    if ref is not None:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in ref["timings"].items())
        rows.append(("SegResNet (MONAI BraTS bundle arch.)", f"{ref['total']:.2f}", stages, f"{ref['peak_rss_mb']:.0f}"))
    print(f"\nModel: {ours['model']['name']} {ours['model']['version']} ({origin}); device {ours['device']} "
          f"({ours['engine']}), {ours['threads']} threads; bundle load {ours['load']:.2f} s (includes a one-time ONNX "
          f"export when not cached); main-stage windows {ours['runs'][0]['windows']}"
          + ("; tumor box from the synthetic truth (random weights)" if truth_box else ""))
    print("\n| pipeline | total s | stages (s) | peak RSS MB |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if "peak_gpu_mb" in ours:
        print(f"\nPeak GPU memory: GliomaMTL {ours['peak_gpu_mb']:.0f} MB"
              + (f", SegResNet {ref['peak_gpu_mb']:.0f} MB" if ref and "peak_gpu_mb" in ref else ""))
    if ref is not None:
        best = min(run["total"] for run in ours["runs"])
        print(f"\nSpeed-up (SegResNet total / GliomaMTL best total): {ref['total'] / best:.1f}x")
        process = [float(r[1]) for r in commands if r[0].startswith("`gliomamtl predict`") and "512x" not in r[0]
                   and r[1] != "failed"]
        if process:
            print(f"Speed-up (SegResNet in-process total / whole `gliomamtl predict` command, best): "
                  f"{ref['total'] / min(process):.1f}x")
    print(f"\nMachine load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"({os.cpu_count()} CPUs): timings on a busy machine are upper bounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
