"""Execution engines for a stage's network: PyTorch, or ONNX Runtime on the CPU.

Measured on the 2-core AVX2 CPU of the development machine (``scripts/bench_predict.py`` and the
notes of issue 4): ONNX Runtime runs the same networks markedly faster than PyTorch eager mode
(the 128^3 main crop about 1.5x, the small-channel low-resolution localizer about 3x, where
PyTorch falls back to its slow native 3D convolution for small inputs), with logits equal to
within 1e-4. ``channels_last_3d`` (2.4x slower), ``torch.compile`` (over a minute of compilation
per process, no faster afterwards) and TorchScript freezing + ``optimize_for_inference`` (no
faster) were measured and not kept.

``engine="auto"`` therefore uses ONNX Runtime on the CPU when the ``onnx`` and ``onnxruntime``
packages are installed (extra ``gliomamtl[onnx]``), and PyTorch otherwise (always on a GPU). The
network is exported once per model (traced on a small input with dynamic batch and spatial axes,
a few seconds) into a cache folder, keyed by the weights' sha256 and the torch version, and
reused by every later run: ``$GLIOMAMTL_CACHE`` or ``~/.cache/gliomamtl`` (``$XDG_CACHE_HOME``).
A failed export or load falls back to PyTorch.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from GliomaMTLLib.inference.options import ENGINES

if TYPE_CHECKING:  # torch and numpy are imported where they are used (fast `--help`)
    import torch

logger = logging.getLogger(__name__)
ONNX_OPSET = 17


def onnx_available() -> bool:
    """True if both ``onnx`` (export) and ``onnxruntime`` (inference) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


from GliomaMTLLib.paths import cache_dir  # noqa: E402  (re-exported)


class TorchRunner:
    """Runs a network in PyTorch: ``runner(x, with_genotype) -> (seg logits, {task: logits})``."""

    engine = "torch"

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net

    def __call__(self, x: torch.Tensor, with_genotype: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.net(x, with_genotype=with_genotype, with_dist=False)
        return out["seg"], dict(out.get("genotype", {}))


def _export_wrapper(net: "torch.nn.Module", tasks: list[str]) -> "torch.nn.Module":
    """``net`` with tuple outputs (seg, one logit tensor per task) for the ONNX exporter."""
    import torch

    class ExportWrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.tasks = net, tasks

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.net(x, with_genotype=bool(self.tasks), with_dist=False)
            return (out["seg"], *(out["genotype"][t] for t in self.tasks))

    return ExportWrapper()


def export_onnx(net: "torch.nn.Module", path: Path, in_channels: int, size_multiple: int, tasks: list[str]) -> Path:
    """Export ``net`` (eval mode, on the CPU) to ``path`` with dynamic batch and spatial axes (atomic write)."""
    import torch

    from GliomaMTLLib.io.atomic import atomic_path

    side = max(2 * size_multiple, 16)
    example = torch.zeros(1, in_channels, side, side, side)
    names = ["seg", *tasks]
    axes = {"x": {0: "batch", 2: "z", 3: "y", 4: "x"}, "seg": {0: "batch", 2: "z", 3: "y", 4: "x"}}
    axes.update({t: {0: "batch"} for t in tasks})
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the input checks
        torch.onnx.export(
            _export_wrapper(net, tasks).eval(),
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["x"],
            output_names=names,
            dynamic_axes=axes,
        )
    return path


class OnnxRunner:
    """Runs an exported network with ONNX Runtime on the CPU; same call as :class:`TorchRunner`."""

    engine = "onnx"

    def __init__(self, path: Path, tasks: list[str], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No memory arena: the arena keeps the peak of every window size alive (about 250 MB more
        # for a 128^3 crop) and measured no faster.
        options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tasks = tasks

    def __call__(self, x: torch.Tensor, with_genotype: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import numpy as np
        import torch

        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        wanted = ["seg", *self.tasks] if with_genotype else ["seg"]
        outputs = self.session.run(wanted, {"x": array})
        seg = torch.from_numpy(outputs[0])
        return seg, {t: torch.from_numpy(v) for t, v in zip(self.tasks, outputs[1:])}


def onnx_runner(net: "torch.nn.Module | Callable[[], torch.nn.Module]", key: str, in_channels: int,
                size_multiple: int, tasks: list[str], threads: int) -> OnnxRunner:
    """An :class:`OnnxRunner` for ``net``, exporting it into the cache on first use.

    Args:
        net: the network, or a function building it: called only when the cache holds no export,
            so a cached model runs without building the PyTorch network (nor importing MONAI).
        key: unique name of these weights (e.g. ``<sha256>-<stage>``).

    Raises:
        whatever the export or ONNX Runtime raise; callers fall back to PyTorch.
    """
    import torch

    path = cache_dir() / "onnx" / f"{key}-torch{torch.__version__.split('+')[0]}-opset{ONNX_OPSET}.onnx"
    if path.is_file():
        try:
            return OnnxRunner(path, tasks, threads)
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is re-exported
            logger.warning("cached ONNX export %s unusable (%s); exporting again", path, exc)
    logger.info("exporting %s to ONNX Runtime (once per model): %s", key, path)
    if not isinstance(net, torch.nn.Module):
        net = net()
    export_onnx(net, path, in_channels, size_multiple, tasks)
    return OnnxRunner(path, tasks, threads)


def resolve_engine(engine: str, device: torch.device) -> str:
    """``"torch"`` or ``"onnx"`` for a requested engine on ``device``.

    Raises:
        ValueError: unknown engine, or ``"onnx"`` on a GPU or without the packages.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    if engine == "auto":
        return "onnx" if device.type == "cpu" and onnx_available() else "torch"
    if engine == "onnx":
        if device.type != "cpu":
            raise ValueError("engine 'onnx' runs on the CPU only; use engine 'torch' (or 'auto') on a GPU")
        if not onnx_available():
            raise ValueError("engine 'onnx' needs the packages onnx and onnxruntime (pip install 'gliomamtl[onnx]')")
    return engine

