"""Checkpoints of a training run (resumable) and the finished weights of each stage.

``<run>/checkpoint.pt`` (written atomically: temporary file, then rename) holds everything a
killed run needs to continue exactly where it stopped: model, loss (learnable task weights),
optimizer, scheduler and GradScaler states, the torch / numpy / python RNG states, and the
position (stage, phase, iteration). The training samples need no stored state: they are a
function of (seed, stage, phase, iteration, slot), see `GliomaMTLLib.train.sampling`.

It is a ``torch.save`` file (optimizer states are nested dicts of tensors) read back with
``weights_only=True``, so loading never runs pickled code. The weights that leave the run
(``<run>/weights/<stage>.safetensors``, then the model bundle) are safetensors.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from GliomaMTLLib.io.atomic import atomic_path

CHECKPOINT_FORMAT = "gliomamtl-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy's global generator and python's ``random``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": list(random.getstate()[1]) + [random.getstate()[0], repr(random.getstate()[2])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    gauss = py[-1]
    random.setstate((py[-2], tuple(py[:-2]), None if gauss == "None" else float(gauss)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``<run>/checkpoint.pt`` atomically (a killed write leaves the previous one intact)."""
    final = Path(run_dir) / CHECKPOINT_NAME
    with atomic_path(final) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    return final


def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's checkpoint, or None if it has none.

    Raises:
        ValueError: if the file is not a checkpoint of this format.
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return data


def weights_path(run_dir: str | os.PathLike, stage: str) -> Path:
    return Path(run_dir) / "weights" / f"{stage}.safetensors"


def save_stage_weights(run_dir: str | os.PathLike, stage: str, state_dict: Mapping[str, torch.Tensor],
                       metadata: Mapping[str, str] | None = None) -> Path:
    """Write a finished stage's network weights (safetensors, atomic)."""
    from safetensors.torch import save_file

    final = weights_path(run_dir, stage)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(final) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata or {}))
    return final


def load_stage_weights(run_dir: str | os.PathLike, stage: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = weights_path(run_dir, stage)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: stage {stage!r} has no finished weights (did training finish?)")
    return load_file(str(path))


def load_init_weights(source: str | os.PathLike, stage: str) -> dict[str, torch.Tensor]:
    """The ``stage`` network's tensors from a run folder, a bundle folder or a .safetensors file.

    Raises:
        FileNotFoundError: ``source`` is none of those, or holds no tensors of ``stage``.
    """
    from safetensors.torch import load_file

    path = Path(source)
    if path.is_dir() and weights_path(path, stage).is_file():
        return load_file(str(weights_path(path, stage)))
    if path.is_dir() and (path / "model.safetensors").is_file():
        flat = load_file(str(path / "model.safetensors"))
        prefix = f"{stage}."
        tensors = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        if not tensors:
            raise FileNotFoundError(f"{path / 'model.safetensors'}: no tensors of stage {stage!r} (keys start with "
                                    f"{sorted({k.split('.')[0] for k in flat})})")
        return tensors
    if path.is_file() and path.suffix == ".safetensors":
        return load_file(str(path))
    raise FileNotFoundError(
        f"stages.{stage}.init = {str(source)!r}: not a run folder with weights/{stage}.safetensors, "
        "a bundle folder with model.safetensors, or a .safetensors file"
    )


def warm_start(net: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``tensors`` whose name and shape match ``net``'s state.

    Returns:
        (names copied, names of ``net`` left at their initialization).
    """
    own = net.state_dict()
    matched = {k: v for k, v in tensors.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    net.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in matched.items()}})
    return sorted(matched), sorted(k for k in own if k not in matched)
