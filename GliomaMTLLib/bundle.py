"""Model bundles: ``<folder>/model.safetensors`` + ``model.json`` (+ ``card.md``).

``model.json`` (format ``gliomamtl-bundle/1``) holds everything needed to run the weights:

- ``name``, ``version``, ``description``
- ``sequences``: input channels in order (e.g. ``["t1n", "t1c", "t2w", "t2f"]`` or ``["t2f"]``)
- ``labels``: label value (string) -> name of the label set the model predicts
- ``tasks``: genotype task -> class names
- ``stages``: stage name (``localizer``, ``main``) -> ``{"network": NetConfig dict,
  "preprocess": PreprocessConfig dict, ...stage options such as "input_size" or "crop_size"}``
- ``postprocess``, ``calibration`` (per-task temperature), ``training``, ``metrics``
- ``weights``: ``{"file": "model.safetensors", "sha256": ...}``; tensors are keyed
  ``<stage>.<parameter name>``.

Weights are never pickled; loading verifies the sha256 before reading a single tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from GliomaMTLLib.io.atomic import apply_default_permissions

BUNDLE_FORMAT = "gliomamtl-bundle/1"
REQUIRED_KEYS = ("name", "version", "sequences", "labels", "tasks", "stages", "weights")
from GliomaMTLLib.paths import SHIPPED_MODELS_DIR  # noqa: E402  (re-exported)


class BundleError(ValueError):
    """A model bundle is missing, corrupt or does not match its description."""


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_search_path() -> list[Path]:
    """Folders searched for bundles by name: ``$GLIOMAMTL_MODELS`` (os.pathsep list), then the shipped ones."""
    extra = [Path(p) for p in os.environ.get("GLIOMAMTL_MODELS", "").split(os.pathsep) if p]
    return [*extra, SHIPPED_MODELS_DIR]


def available_models() -> list[str]:
    """Names of the bundles found on the search path."""
    names: list[str] = []
    for root in model_search_path():
        if root.is_dir():
            names += sorted(p.name for p in root.iterdir() if (p / "model.json").is_file())
    return list(dict.fromkeys(names))


def resolve_bundle(name_or_path: str | os.PathLike) -> Path:
    """Folder of a bundle given its folder path, a version (``name@version`` or a fine-tuned
    version in the model registry, see `GliomaMTLLib.finetune.registry`) or its name: the name's
    active version in the registry, else the bundle of that name on the search path.

    Raises:
        BundleError: naming what was looked for and what is available.
    """
    candidate = Path(name_or_path)
    if (candidate / "model.json").is_file():
        return candidate
    from GliomaMTLLib.finetune.registry import RegistryError, resolve_registered

    try:
        registered = resolve_registered(str(name_or_path))
    except RegistryError as exc:
        raise BundleError(str(exc)) from exc
    if registered is not None:
        return registered
    for root in model_search_path():
        if (root / str(name_or_path) / "model.json").is_file():
            return root / str(name_or_path)
    raise BundleError(
        f"model {str(name_or_path)!r} not found: no model.json there or in {[str(p) for p in model_search_path()]}; "
        f"available models: {available_models() or 'none'}"
    )


@dataclass
class ModelBundle:
    """A verified bundle: its folder and parsed ``model.json``."""

    folder: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def sequences(self) -> tuple[str, ...]:
        return tuple(self.meta["sequences"])

    @property
    def tasks(self) -> dict[str, tuple[str, ...]]:
        return {task: tuple(classes) for task, classes in self.meta["tasks"].items()}

    @property
    def labels(self) -> dict[int, str]:
        return {int(value): name for value, name in self.meta["labels"].items()}

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.meta["stages"]

    @property
    def weights_path(self) -> Path:
        return self.folder / self.meta["weights"]["file"]

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Tensors grouped by stage (``main.conv.weight`` -> ``{"main": {"conv.weight": ...}}``)."""
        from safetensors.torch import load_file

        try:
            flat = load_file(str(self.weights_path))
        except Exception as exc:  # safetensors raises its own error types
            raise BundleError(f"{self.weights_path}: cannot read weights ({exc})") from exc
        grouped: dict[str, dict[str, torch.Tensor]] = {stage: {} for stage in self.stages}
        for key, tensor in flat.items():
            stage, _, param = key.partition(".")
            if stage not in grouped:
                raise BundleError(f"{self.weights_path}: tensor {key!r} belongs to no declared stage {list(self.stages)}")
            grouped[stage][param] = tensor
        return grouped

    def build_networks(self, device: str | torch.device = "cpu") -> dict[str, torch.nn.Module]:
        """Instantiate every stage's network, load its weights (strictly) and put it in eval mode.

        Raises:
            BundleError: if the weights do not fit the declared architecture.
        """
        from GliomaMTLLib.nets import build_network

        networks: dict[str, torch.nn.Module] = {}
        for stage, tensors in self.state_dicts().items():
            net = build_network(self.stages[stage]["network"])
            try:
                net.load_state_dict(tensors, strict=True)
            except RuntimeError as exc:
                raise BundleError(
                    f"{self.weights_path}: weights of stage {stage!r} do not match the architecture in "
                    f"{self.folder / 'model.json'}: {str(exc).splitlines()[0]}"
                ) from exc
            networks[stage] = net.to(device).eval()
        return networks


def load_bundle(name_or_path: str | os.PathLike, verify: bool = True) -> ModelBundle:
    """Read and check a bundle: required keys, weights present, sha256 matching ``model.json``.

    Raises:
        BundleError: naming the file and the problem.
    """
    folder = resolve_bundle(name_or_path)
    meta_path = folder / "model.json"
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc})") from exc
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise BundleError(f"{meta_path}: missing required key(s) {missing}")
    if meta.get("format", BUNDLE_FORMAT) != BUNDLE_FORMAT:
        raise BundleError(f"{meta_path}: format {meta.get('format')!r} is not {BUNDLE_FORMAT!r}")
    bundle = ModelBundle(folder=folder, meta=meta)
    if not bundle.weights_path.is_file():
        raise BundleError(f"{meta_path}: weights file {bundle.weights_path} is missing")
    if verify:
        expected = str(meta["weights"].get("sha256", ""))
        actual = sha256_of(bundle.weights_path)
        if actual != expected:
            raise BundleError(
                f"{bundle.weights_path}: sha256 {actual[:12]}... does not match model.json ({expected[:12] or 'none'}...); "
                "the weights are corrupt or belong to another model"
            )
    return bundle


def save_bundle(
    folder: str | os.PathLike,
    meta: Mapping[str, Any],
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    card: str | None = None,
    overwrite: bool = False,
) -> ModelBundle:
    """Write a bundle atomically (a temporary folder renamed into place) and return it loaded.

    Fills ``format`` and ``weights`` (file, sha256, size) in ``model.json``.

    Raises:
        BundleError: if ``folder`` exists and ``overwrite`` is False (model versions are never
            silently replaced), or if a stage of ``state_dicts`` is not declared in ``meta``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise BundleError(f"{folder} already exists; refusing to overwrite a model bundle (pass overwrite=True)")
    undeclared = set(state_dicts) - set(meta.get("stages", {}))
    if undeclared:
        raise BundleError(f"stages {sorted(undeclared)} have weights but are not declared in meta['stages']")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        flat = {
            f"{stage}.{key}": tensor.detach().to("cpu").contiguous()
            for stage, tensors in state_dicts.items()
            for key, tensor in tensors.items()
        }
        save_file(flat, str(staging / "model.safetensors"))
        full_meta = {"format": BUNDLE_FORMAT, **dict(meta)}
        full_meta["weights"] = {
            "file": "model.safetensors",
            "sha256": sha256_of(staging / "model.safetensors"),
            "size_bytes": (staging / "model.safetensors").stat().st_size,
        }
        (staging / "model.json").write_text(json.dumps(full_meta, indent=2) + "\n")
        if card is not None:
            (staging / "card.md").write_text(card)
        apply_default_permissions(staging)  # mkdtemp made it 0700: a shared model folder must be readable
        if folder.exists():
            backup = folder.with_name(f".{folder.name}.replaced")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(folder, backup)
            os.replace(staging, folder)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(folder)
