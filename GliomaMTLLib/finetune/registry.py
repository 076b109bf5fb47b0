"""Model registry: fine-tuned versions as bundles in a folder, never overwritten, one active per name.

Layout (default :func:`GliomaMTLLib.paths.registry_dir`, i.e. ``$GLIOMAMTL_DATA/models``)::

    <registry>/<name>/<version>/   a model bundle (model.json, model.safetensors, card.md)
    <registry>/active.json         {"history": {name: [version, ...]}}: the versions made active,
                                   in order; the last one is active, ``rollback`` drops it

A version is named ``<name>@<version>`` (e.g. ``gliomamtl_adult@0.2.0-ft.1``); a bare version
works too when only one model has it. The shipped bundles (``Resources/Models``,
``$GLIOMAMTL_MODELS``) are versions as well: ``gliomamtl_adult@0.2.0``. Naming a model without a
version (``--model gliomamtl_adult``) gives its active version, which is the shipped one until a
fine-tune or ``gliomamtl models use`` makes another one active.

A fine-tuned bundle's ``model.json`` has a ``finetune`` section: parent version, the store
entries it trained on and those held out, the recipe, and metrics before / after on the held-out
entries (see :mod:`GliomaMTLLib.finetune.job`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from GliomaMTLLib.io.atomic import write_text_atomic
from GliomaMTLLib.paths import registry_dir

ACTIVE_JSON = "active.json"
_FT = re.compile(r"^(?P<base>.*?)-ft\.(?P<n>\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegistryError(ValueError):
    """A version could not be found, made active or rolled back: the message says why."""


@dataclass(frozen=True)
class ModelVersion:
    """One version of a model: shipped (read-only) or in the registry."""

    name: str
    version: str
    folder: Path
    shipped: bool
    meta: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def parent(self) -> str | None:
        return (self.meta.get("finetune") or {}).get("parent", {}).get("id")

    def status_line(self) -> str:
        """The first sentence of the card's "Status" section (else its first bold line)."""
        card = self.folder / "card.md"
        if not card.is_file():
            return ""
        lines = card.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("#") and "status" in line.lower():
                for nxt in lines[i + 1:]:
                    if nxt.strip():
                        return _first_sentence(nxt)
        for line in lines:
            if line.startswith("**"):
                return _first_sentence(line.strip("* "))
        return ""

    def metrics_summary(self) -> dict[str, Any]:
        """Held-out store metrics before / after a fine-tune (mean WT Dice), if any."""
        ft = self.meta.get("finetune") or {}
        before = (ft.get("metrics_before") or {}).get("dice", {})
        after = (ft.get("metrics_after") or {}).get("dice", {})
        return {"held_out": len(ft.get("held_out") or []), "wt_before": before.get("WT"), "wt_after": after.get("WT")}


def _first_sentence(text: str, limit: int = 110) -> str:
    text = text.strip()
    cut = text.find(". ")
    text = text[: cut + 1] if cut > 0 else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "model.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


class ModelRegistry:
    """The registry at ``root`` (default :func:`GliomaMTLLib.paths.registry_dir`)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else registry_dir()

    # ------------------------------------------------------------------ listing

    def shipped(self) -> list[ModelVersion]:
        """Bundles found by name on the search path (the first of each name wins, as in loading)."""
        from GliomaMTLLib.bundle import model_search_path

        out: dict[str, ModelVersion] = {}
        for root in model_search_path():
            if not root.is_dir():
                continue
            for folder in sorted(root.iterdir()):
                meta = _read_meta(folder) if (folder / "model.json").is_file() else None
                if meta is None or folder.name in out:
                    continue
                out[folder.name] = ModelVersion(folder.name, str(meta.get("version", "?")), folder, True, meta)
        return list(out.values())

    def registered(self, name: str | None = None) -> list[ModelVersion]:
        """Versions in the registry (of ``name``), oldest first."""
        out = []
        if not self.root.is_dir():
            return out
        for family in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if name is not None and family.name != name:
                continue
            for folder in family.iterdir():
                if folder.name.startswith(".") or not (folder / "model.json").is_file():
                    continue  # a bundle being written (save_bundle's staging folder)
                meta = _read_meta(folder)
                if meta is not None:
                    out.append(ModelVersion(family.name, folder.name, folder, False, meta))
        return sorted(out, key=lambda v: (v.name, str(v.meta.get("finetune", {}).get("created", "")), v.version))

    def versions(self) -> list[ModelVersion]:
        """Every version: shipped ones first, then the registry's."""
        return [*self.shipped(), *self.registered()]

    def names(self) -> list[str]:
        return list(dict.fromkeys(v.name for v in self.versions()))

    # ------------------------------------------------------------------ active version

    def _history(self) -> dict[str, list[str]]:
        path = self.root / ACTIVE_JSON
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path}: not valid JSON ({exc}); delete it to make the shipped versions active") from exc
        return {str(k): [str(x) for x in v] for k, v in (data.get("history") or {}).items()}

    def _write_history(self, history: Mapping[str, list[str]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.root / ACTIVE_JSON, json.dumps({"history": dict(history)}, indent=2) + "\n")

    def active_version(self, name: str) -> str | None:
        """The active version of ``name`` set by ``use`` / a fine-tune, or None (the shipped one is used)."""
        history = self._history().get(name) or []
        return history[-1] if history else None

    def active(self, name: str) -> ModelVersion | None:
        """The version ``--model name`` gives: the active one, else the shipped one, else None."""
        version = self.active_version(name)
        if version is None:
            return next((v for v in self.shipped() if v.name == name), None)
        for v in [*self.registered(name), *self.shipped()]:
            if v.name == name and v.version == version:
                return v
        raise RegistryError(
                f"the active version of {name!r} is {version!r} (in {self.root / ACTIVE_JSON}) but no such bundle "
                f"exists; run 'gliomamtl models rollback {name}' or 'gliomamtl models use {name}@VERSION'"
            )
        return None

    def use(self, spec: str, parent: ModelVersion | None = None) -> ModelVersion:
        """Make a version active for its model name (``name@version``, a bare version or a name).

        ``parent``: the version a new fine-tune came from; when the model has no history yet it is
        recorded first, so that a rollback returns to it.
        """
        version = self.find(spec)
        if version is None:
            raise RegistryError(self._not_found(spec))
        history = self._history()
        chain = [v for v in history.get(version.name, [])]
        if not chain and parent is not None and parent.name == version.name and not parent.shipped:
            chain.append(parent.version)  # so that a rollback returns to the version it came from
        if not chain or chain[-1] != version.version:
            chain.append(version.version)
        history[version.name] = chain
        self._write_history(history)
        return version

    def rollback(self, name: str | None = None) -> tuple[str, str, ModelVersion | None]:
        """Make the previously active version of ``name`` active again.

        ``name`` may be omitted when only one model has an activation history. Returns
        ``(name, version left, version now active)``; the latter is the shipped one (or None)
        when the history becomes empty.

        Raises:
            RegistryError: nothing to roll back.
        """
        history = self._history()
        if name is None:
            names = [n for n, chain in history.items() if chain]
            if len(names) != 1:
                raise RegistryError(
                    "name the model to roll back: " + (f"several have a history ({names})" if names else
                                                        "no model has been switched or fine-tuned")
                )
            name = names[0]
        name = name.split("@")[0]
        chain = history.get(name) or []
        if not chain:
            raise RegistryError(f"nothing to roll back for {name!r}: its shipped version is active")
        left = chain.pop()
        while chain and chain[-1] == left:
            chain.pop()
        history[name] = chain
        self._write_history(history)
        return name, left, self.active(name)

    # ------------------------------------------------------------------ lookup

    def find(self, spec: str) -> ModelVersion | None:
        """The version ``spec`` names: ``name@version``, a model name (its active version) or a bare
        version held by exactly one model. None when it names nothing here.

        Raises:
            RegistryError: a bare version held by several models.
        """
        spec = str(spec).strip()
        if "@" in spec:
            name, _, version = spec.partition("@")
            for v in [*self.registered(name), *self.shipped()]:
                if v.name == name and v.version == version:
                    return v
            return None
        if _NAME.match(spec) and spec in self.names():
            return self.active(spec)
        matches = [v for v in self.registered() if v.version == spec]
        if len(matches) > 1:
            raise RegistryError(f"version {spec!r} exists for several models {[m.id for m in matches]}; write NAME@VERSION")
        return matches[0] if matches else None

    def _not_found(self, spec: str) -> str:
        known = [v.id for v in self.versions()]
        return f"no model version {spec!r}; known versions: {known or 'none'} (registry {self.root})"

    def get(self, spec: str) -> ModelVersion:
        """Like :meth:`find`, but a missing version is a `RegistryError` listing the known ones."""
        found = self.find(spec)
        if found is None:
            raise RegistryError(self._not_found(spec))
        return found

    # ------------------------------------------------------------------ adding

    def next_version(self, name: str, parent_version: str) -> str:
        """``<base>-ft.<n>``: base is the parent's version without its ``-ft.<k>``, n one more than
        any fine-tune of ``name`` so far (so versions are never reused, even after a removal)."""
        match = _FT.match(parent_version)
        base = match.group("base") if match else parent_version
        taken = [int(m.group("n")) for v in self.registered(name) if (m := _FT.match(v.version))]
        family = self.root / name
        if family.is_dir():  # folders of killed writes count too: never reuse a number
            taken += [int(m.group(1)) for p in family.iterdir() if (m := re.search(r"-ft\.(\d+)", p.name))]
        return f"{base}-ft.{max(taken, default=0) + 1}"

    def add(self, meta: Mapping[str, Any], state_dicts: Mapping[str, Mapping[str, Any]], card: str,
            activate: bool = True, parent: ModelVersion | None = None) -> ModelVersion:
        """Write a new version (``meta["name"]``, ``meta["version"]``) as a bundle; never overwrites.

        Raises:
            RegistryError: the version exists already.
        """
        from GliomaMTLLib.bundle import BundleError, save_bundle

        name, version = str(meta["name"]), str(meta["version"])
        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r} must start with a letter or digit and hold only letters, digits, '.', '_', '-'")
        folder = self.root / name / version
        try:
            save_bundle(folder, meta, state_dicts, card=card, overwrite=False)
        except BundleError as exc:
            raise RegistryError(f"{name}@{version}: {exc}") from exc
        added = ModelVersion(name, version, folder, False, _read_meta(folder) or dict(meta))
        if activate:
            self.use(added.id, parent=parent)
        return added


def resolve_registered(spec: str) -> Path | None:
    """Bundle folder of ``spec`` when it names an active or registered version; None otherwise
    (:func:`GliomaMTLLib.bundle.resolve_bundle` then searches the shipped bundles by name).

    A model name whose active version is the shipped one also gives None, so that the shipped
    lookup (and its error messages) stay as they were.
    """
    registry = ModelRegistry()
    if not (registry.root / ACTIVE_JSON).is_file() and "@" not in spec and not registry.root.is_dir():
        return None
    found = registry.find(spec)
    if found is None and "@" in spec:
        raise RegistryError(registry._not_found(spec))  # NAME@VERSION names a version, never a folder
    return found.folder if found is not None else None
