"""Where the networks run: device choice, CPU threads, mixed precision and out-of-memory detection."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Iterator

from GliomaMTLLib.inference.options import DEVICE_CHOICES

if TYPE_CHECKING:  # torch is imported where it is used: the command line parses its flags without it
    import torch


class DeviceError(ValueError):
    """The requested device cannot be used (e.g. ``cuda`` on a machine without a CUDA GPU)."""


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable ``torch.device``.

    ``"auto"`` is CUDA when a CUDA GPU is available, else the CPU.

    Raises:
        DeviceError: for an unknown name, or CUDA requested where torch sees no CUDA GPU.
    """
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
            raise DeviceError(
                f"device {spec!r} was requested but no CUDA GPU is available ({build}, "
                f"torch.cuda.is_available() is False); use --device cpu or auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise DeviceError(f"unknown device {spec!r}; expected one of {DEVICE_CHOICES} (or cuda:N)")


def physical_cores() -> int:
    """Number of physical CPU cores usable by this process (logical CPUs when unknown)."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        logical = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    return max(1, min(physical, logical))


def configure_cpu_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: all physical cores; hyper-threads do not help convs).

    Returns:
        the number of threads set.
    """
    import torch

    threads = int(num_threads) if num_threads else physical_cores()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision used on ``device``: bfloat16 on GPUs that support it, else float16; None on CPU.

    CPU inference stays in float32: on CPUs without AVX-512 BF16/AMX, bfloat16 convolutions are
    slower than float32 ones.
    """
    if device.type != "cuda":
        return None
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def inference_context(device: torch.device, amp: bool = True) -> Iterator[None]:
    """``torch.inference_mode`` plus, on a GPU with ``amp``, ``torch.autocast`` in reduced precision."""
    import torch

    dtype = autocast_dtype(device) if amp else None
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU out-of-memory error (``torch.cuda.OutOfMemoryError`` or its older RuntimeError form)."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def release_gpu_memory() -> None:
    """Return cached GPU memory after an out-of-memory error (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
