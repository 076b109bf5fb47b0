"""Which Python packages the engine needs inside Slicer, and which it must never replace.

Slicer's Python ships its own numpy, SimpleITK and VTK, built for Slicer: replacing them (a pip
install that upgrades numpy, say) can break Slicer itself. So the first-use install:

1. asks once, listing every missing package;
2. installs torch through the SlicerPyTorch extension's ``PyTorchUtils`` when it is present
   (it picks the CPU or CUDA build for the machine), else pip with the build chosen explicitly
   (:func:`torch_pip_args`);
3. installs the rest with a constraints file that pins Slicer's own packages at the installed
   versions (:func:`constraints_text`), so pip can never upgrade them.

:data:`ENGINE_REQUIREMENTS` mirrors ``pyproject.toml`` (a test keeps them in step).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

#: torch floor (the engine's pyproject floor); installed first and separately.
TORCH_REQUIREMENT = "torch>=2.2"
#: Everything else the engine imports in Slicer: core dependencies, ONNX Runtime (fast CPU
#: inference), captum (explanations), psutil (cancel kills the process tree), slicerio (.seg.nrrd).
ENGINE_REQUIREMENTS: tuple[str, ...] = (
    "monai>=1.4",
    "safetensors>=0.4",
    "nibabel>=5",
    "pyyaml>=6",
    "scipy>=1.10",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "platformdirs>=3",
    "captum>=0.7",
    "onnx>=1.15",
    "onnxruntime>=1.17",
    "psutil>=5",
    "slicerio>=1.4",
)
#: Packages Slicer provides and that an install must never replace (distribution names).
SLICER_OWNED: tuple[str, ...] = ("numpy", "SimpleITK", "vtk")
#: pip index of the official PyTorch wheels per compute backend.
TORCH_INDEX = "https://download.pytorch.org/whl/{backend}"
TORCH_BACKENDS = ("cpu", "cu118", "cu121", "cu124", "cu126", "cu128")

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*$")


def parse_requirement(requirement: str) -> tuple[str, str | None]:
    """``"monai>=1.4"`` -> ``("monai", "1.4")``; only a name with an optional ``>=`` floor.

    Raises:
        ValueError: any other requirement syntax.
    """
    match = _REQ.match(requirement)
    if not match:
        raise ValueError(f"requirement {requirement!r} is not NAME or NAME>=VERSION")
    return match.group(1), match.group(2)


def version_tuple(version: str) -> tuple[int, ...]:
    """Leading numeric parts of a version (``"2.13.0+cpu"`` -> ``(2, 13, 0)``)."""
    parts = []
    for piece in re.split(r"[.+-]", version):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def is_satisfied(installed: str | None, floor: str | None) -> bool:
    """True when a version is installed and not below ``floor``."""
    if installed is None:
        return False
    return floor is None or version_tuple(installed) >= version_tuple(floor)


def missing_requirements(requirements: Iterable[str], version_of: Callable[[str], str | None]) -> list[str]:
    """The requirements not satisfied, given ``version_of(distribution) -> version or None``."""
    missing = []
    for req in requirements:
        name, floor = parse_requirement(req)
        if not is_satisfied(version_of(name), floor):
            missing.append(req)
    return missing


def installed_version(distribution: str) -> str | None:
    """Installed version of a distribution in this Python, or None."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def constraints_text(version_of: Callable[[str], str | None] | None = None) -> str:
    """A pip constraints file pinning every Slicer-owned package that is installed
    (``version_of`` defaults to :func:`installed_version`)."""
    version_of = version_of or installed_version
    lines = [f"{name}=={v}" for name in SLICER_OWNED if (v := version_of(name))]
    return "\n".join(lines) + ("\n" if lines else "")


def pip_install_args(requirements: Iterable[str], constraints_file: str | None) -> list[str]:
    """Arguments after ``pip install``: ``-c FILE`` (when given) then the requirements."""
    reqs = list(requirements)
    for req in reqs:
        name, _ = parse_requirement(req)
        if name.lower() in {s.lower() for s in SLICER_OWNED}:
            raise ValueError(f"refusing to install {name}: Slicer provides it and it must not be replaced")
    return ([*["-c", constraints_file]] if constraints_file else []) + reqs


def torch_pip_args(backend: str) -> list[str]:
    """Arguments after ``pip install`` for torch from the official index of ``backend`` (cpu, cu126, ...).

    Raises:
        ValueError: unknown backend.
    """
    if backend not in TORCH_BACKENDS:
        raise ValueError(f"unknown torch backend {backend!r}; expected one of {TORCH_BACKENDS}")
    return [TORCH_REQUIREMENT, "--index-url", TORCH_INDEX.format(backend=backend)]


def confirmation_text(missing: list[str], torch_missing: bool, via_pytorch_utils: bool) -> str:
    """The one question asked before installing anything."""
    how = "through the PyTorch extension" if via_pytorch_utils else "pip, build chosen below"
    items = ([f"{TORCH_REQUIREMENT} ({how})"] if torch_missing else []) + missing
    return ("GliomaMTL needs these Python packages in Slicer's Python, which will now be installed "
            "(several minutes, several GB for torch):\n  " + "\n  ".join(items)
            + "\nSlicer's own " + ", ".join(SLICER_OWNED) + " stay as they are.")
