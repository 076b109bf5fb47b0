"""Command lines of the engine's CLI as the panel runs them in a child process.

The child is Slicer's own Python (``PythonSlicer``, found by the panel) running
``python -u -m GliomaMTLLib``: ``-u`` so that every progress line arrives when it is printed,
not when the process ends. The working folder must be :func:`engine_cwd` (the folder that holds
``GliomaMTLLib``), which ``-m`` puts on the module search path; Slicer's ``PYTHONPATH`` is left
as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from GliomaMTLLib.paths import PACKAGE_PARENT

ENGINE_MODULE = "GliomaMTLLib"  # GliomaMTLLib/__main__.py runs the CLI
DEVICES = ("auto", "cpu", "cuda")
GENOTYPE_FLAGS = {"idh": "--idh", "codel_1p19q": "--codel", "braf": "--braf"}


def engine_cwd() -> Path:
    """Folder to start the child in: the one holding ``GliomaMTLLib`` (checkout or Slicer module folder)."""
    return PACKAGE_PARENT


def engine_command(python: str | os.PathLike, *args: str) -> list[str]:
    """``[python, -u, -m, GliomaMTLLib, *args]``.

    Raises:
        ValueError: empty interpreter path.
    """
    if not str(python):
        raise ValueError("no Python interpreter given for the engine's child process")
    return [str(python), "-u", "-m", ENGINE_MODULE, *[str(a) for a in args]]


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {DEVICES}")
    return device


#: The panel's test-time flips choices -> ``--tta`` / ``--no-tta`` / nothing (the model's default).
FLIPS: dict[str, bool | None] = {"model default": None, "on": True, "off": False}


def predict_command(python: str | os.PathLike, case_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    model: str, device: str = "auto", seg_nrrd: bool = True, age: float | None = None,
                    flips: str = "model default") -> list[str]:
    """``gliomamtl predict CASE --out DIR --model M --device D --progress-json [--seg-nrrd] [--age YEARS]
    [--tta | --no-tta]``; ``flips`` is one of :data:`FLIPS`.

    Raises:
        ValueError: an age that is not a number of years between 0 and 120, or an unknown ``flips``.
    """
    args = ["predict", str(case_dir), "--out", str(out_dir), "--model", model,
            "--device", _check_device(device), "--progress-json"]
    if seg_nrrd:
        args.append("--seg-nrrd")
    return engine_command(python, *args, *_flips_args(flips), *_age_args(age))


def _flips_args(flips: str) -> list[str]:
    """``["--tta"]``, ``["--no-tta"]`` or nothing (the model's default) for a :data:`FLIPS` choice.

    Raises:
        ValueError: not one of :data:`FLIPS`.
    """
    if flips not in FLIPS:
        raise ValueError(f"test-time flips {flips!r} is not one of {list(FLIPS)}")
    return [] if FLIPS[flips] is None else ["--tta" if FLIPS[flips] else "--no-tta"]


def _age_args(age: float | None) -> list[str]:
    """``["--age", YEARS]`` (nothing when unknown).

    Raises:
        ValueError: not a number of years between 0 and 120.
    """
    if age is None:
        return []
    value = float(age)
    if not 0.0 <= value <= 120.0:
        raise ValueError(f"patient age must lie between 0 and 120 years, got {age!r}")
    return ["--age", f"{value:g}"]


def cohort_command(python: str | os.PathLike, root: str | os.PathLike, out_dir: str | os.PathLike, *,
                   model: str, device: str = "auto", flips: str = "model default") -> list[str]:
    """``gliomamtl predict --cohort ROOT --out DIR ... --progress-json --seg-nrrd [--tta | --no-tta]``.

    Raises:
        ValueError: an unknown ``flips`` (one of :data:`FLIPS`).
    """
    return engine_command(python, "predict", "--cohort", str(root), "--out", str(out_dir), "--model", model,
                          "--device", _check_device(device), "--progress-json", "--seg-nrrd", *_flips_args(flips))


def explain_command(python: str | os.PathLike, case_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    model: str, task: str, steps: int, device: str = "auto", age: float | None = None) -> list[str]:
    """``gliomamtl explain CASE --out DIR --model M --task T --steps N --progress-json [--age YEARS]``.

    Raises:
        ValueError: ``steps`` below 2, an empty task or an age outside 0-120 years.
    """
    if int(steps) < 2:
        raise ValueError(f"integrated gradients need at least 2 steps, got {steps}")
    if not task:
        raise ValueError("choose a task to explain (a genotype task or WT, TC, ET)")
    return engine_command(python, "explain", str(case_dir), "--out", str(out_dir), "--model", model,
                          "--task", task, "--steps", str(int(steps)), "--device", _check_device(device),
                          "--progress-json", *_age_args(age))


def correct_command(python: str | os.PathLike, case_dir: str | os.PathLike, labels: str | os.PathLike, *,
                    store: str | os.PathLike | None = None, genotype: Mapping[str, str] | None = None,
                    replace: bool = False, model: str | None = None, prediction: str | os.PathLike | None = None,
                    case_id: str | None = None) -> list[str]:
    """``gliomamtl correct CASE --labels L [--idh C] [--codel C] [--braf C] [--store DIR] [--model M]
    [--prediction P] [--case-id ID] [--replace]``.

    ``model`` names the version whose prediction was corrected and ``prediction`` is the label map
    it predicted (the store counts the voxels the reader changed against it).

    Empty genotype values mean "unknown" and are left out.

    Raises:
        ValueError: a genotype task the command has no flag for.
    """
    args = ["correct", str(case_dir), "--labels", str(labels)]
    for task, value in (genotype or {}).items():
        if not value:
            continue
        if task not in GENOTYPE_FLAGS:
            raise ValueError(f"no correction flag for genotype task {task!r}; known: {sorted(GENOTYPE_FLAGS)}")
        args += [GENOTYPE_FLAGS[task], value]
    if store:
        args += ["--store", str(store)]
    if model:
        args += ["--model", model]
    if prediction:
        args += ["--prediction", str(prediction)]
    if case_id:
        args += ["--case-id", case_id]
    if replace:
        args.append("--replace")
    return engine_command(python, *args)


def finetune_command(python: str | os.PathLike, *, store: str | os.PathLike | None, from_version: str,
                     iterations: int, name: str | None = None) -> list[str]:
    """``gliomamtl finetune [--store DIR] --from V --iterations N [--name NEW] --progress-json``.

    Raises:
        ValueError: fewer than one iteration.
    """
    if int(iterations) < 1:
        raise ValueError(f"fine-tuning needs at least 1 iteration, got {iterations}")
    args = ["finetune", "--from", from_version, "--iterations", str(int(iterations)), "--progress-json"]
    if store:
        args[1:1] = ["--store", str(store)]
    if name:
        args += ["--name", name]
    return engine_command(python, *args)


def models_command(python: str | os.PathLike, action: str, target: str | None = None) -> list[str]:
    """``gliomamtl models list``, ``models show|use NAME@VERSION``, ``models rollback [NAME]``.

    Raises:
        ValueError: unknown action, or a version missing for ``show``/``use``.
    """
    if action not in ("list", "show", "use", "rollback"):
        raise ValueError(f"unknown models action {action!r}; expected list, show, use or rollback")
    if action in ("show", "use") and not target:
        raise ValueError(f"'models {action}' needs a version (NAME@VERSION)")
    extra = [target] if target and action != "list" else []
    return engine_command(python, "models", action, *extra)


def child_environment(device: str) -> dict[str, str]:
    """Environment changes for the child: unbuffered output; on ``cpu`` no GPU is visible at all."""
    env = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    if _check_device(device) == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def describe(command: Sequence[str]) -> str:
    """The command as one line for logs and error details (arguments with spaces quoted)."""
    return " ".join(f'"{a}"' if " " in a else a for a in command)
