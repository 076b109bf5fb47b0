"""The models and versions the panel offers, read from their folders (no engine import).

Shipped bundles are found as :func:`GliomaMTLLib.bundle.model_search_path` finds them
(``$GLIOMAMTL_MODELS``, then ``Resources/Models``); fine-tuned versions in the registry
(``<registry>/<name>/<version>/model.json``, the active one last in ``active.json``'s history), as
:mod:`GliomaMTLLib.finetune.registry` lays them out. Every version is passed to the CLI as
``NAME@VERSION``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from GliomaMTLLib.labels import SEQUENCE_TITLES, SEQUENCES
from GliomaMTLLib.paths import SHIPPED_MODELS_DIR, registry_dir

ACTIVE_JSON = "active.json"


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model / version selector."""

    name: str
    version: str
    folder: Path
    shipped: bool
    sequences: tuple[str, ...]
    """Every sequence the model reads (its input channels)."""
    tasks: dict[str, tuple[str, ...]]
    labels: dict[int, str]
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    active: bool = False
    required: tuple[str, ...] | None = None
    """The sequences a case must have (``required_sequences``); None: all of ``sequences``."""

    @property
    def required_sequences(self) -> tuple[str, ...]:
        return self.sequences if self.required is None else self.required

    @property
    def id(self) -> str:
        """``NAME@VERSION``: what ``--model`` / ``--from`` / ``models use`` receive."""
        return f"{self.name}@{self.version}"

    @property
    def title(self) -> str:
        kind = "shipped" if self.shipped else f"fine-tuned from {self.parent or '?'}"
        return f"{self.id} ({kind}{', active' if self.active else ''})"


def model_dirs(extra: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """Folders holding shipped bundles: ``$GLIOMAMTL_MODELS`` entries, then ``Resources/Models``."""
    env = [Path(p) for p in os.environ.get("GLIOMAMTL_MODELS", "").split(os.pathsep) if p.strip()]
    return [*(Path(p) for p in (extra or [])), *env, SHIPPED_MODELS_DIR]


def read_choice(folder: str | os.PathLike, *, shipped: bool, name: str | None = None,
                version: str | None = None) -> ModelChoice | None:
    """A bundle folder as a choice; None when it holds no readable ``model.json``."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    finetune = meta.get("finetune") if isinstance(meta.get("finetune"), dict) else {}
    parent = finetune.get("parent")
    parent_id = parent.get("id") if isinstance(parent, dict) else (str(parent) if parent else None)
    try:
        labels = {int(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    except (TypeError, ValueError, AttributeError):
        labels = {}
    tasks = meta.get("tasks") if isinstance(meta.get("tasks"), dict) else {}
    return ModelChoice(
        name=name or str(meta.get("name") or folder.name),
        version=version or str(meta.get("version", "?")),
        folder=folder,
        shipped=shipped,
        sequences=tuple(s for s in meta.get("sequences") or SEQUENCES if s in SEQUENCES),
        required=(tuple(s for s in meta["required_sequences"] if s in SEQUENCES)
                  if isinstance(meta.get("required_sequences"), list) else None),
        tasks={str(k): tuple(str(c) for c in v) for k, v in tasks.items() if isinstance(v, (list, tuple))},
        labels=labels,
        parent=parent_id,
        metrics=_metrics(finetune),
    )


def _metrics(finetune: dict[str, Any]) -> dict[str, Any]:
    """Held-out whole-tumor Dice before / after a fine-tune, when recorded."""
    def dice(key: str) -> Any:
        block = finetune.get(key)
        if isinstance(block, dict) and isinstance(block.get("dice"), dict):
            return block["dice"].get("WT")
        return None

    out = {"wt_before": dice("metrics_before"), "wt_after": dice("metrics_after")}
    held = finetune.get("held_out")
    if isinstance(held, list):
        out["held_out"] = len(held)
    return {k: v for k, v in out.items() if v is not None}


def _active_versions(registry: Path) -> dict[str, str]:
    try:
        history = json.loads((registry / ACTIVE_JSON).read_text(encoding="utf-8")).get("history") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}
    return {str(k): str(v[-1]) for k, v in history.items() if isinstance(v, list) and v}


def list_choices(registry: str | os.PathLike | None = None,
                 extra_model_dirs: Iterable[str | os.PathLike] | None = None) -> list[ModelChoice]:
    """Shipped bundles (first of each name wins), then every registry version; one active per name
    (the registry's active version, else the shipped one)."""
    found: dict[str, ModelChoice] = {}
    for root in model_dirs(extra_model_dirs):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name not in found and (folder / "model.json").is_file():
                choice = read_choice(folder, shipped=True, name=folder.name)
                if choice:
                    found[folder.name] = choice
    choices = list(found.values())
    reg = Path(registry) if registry is not None else registry_dir()
    if reg.is_dir():
        for family in sorted(p for p in reg.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for folder in sorted(p for p in family.iterdir() if p.is_dir() and not p.name.startswith(".")):
                choice = read_choice(folder, shipped=False, name=family.name, version=folder.name)
                if choice:
                    choices.append(choice)
    active = _active_versions(reg)
    out = []
    for c in choices:
        is_active = active.get(c.name) == c.version if c.name in active else c.shipped
        out.append(replace(c, active=is_active))
    return out


def sequence_roles(choice: ModelChoice) -> dict[str, str]:
    """Sequence -> ``required`` (the case must have it), ``optional`` (read when given, filled as in
    training when absent) or ``not used`` (this model does not read it), for the input labels."""
    def role(sequence: str) -> str:
        if sequence in choice.required_sequences:
            return "required"
        return "optional" if sequence in choice.sequences else "not used"

    return {s: role(s) for s in SEQUENCES}


def sequence_label(sequence: str, role: str) -> str:
    """Text beside a volume selector, e.g. ``T1 post-contrast (t1c), required``."""
    return f"{SEQUENCE_TITLES.get(sequence, sequence)} ({sequence}), {role}"


def version_rows(choices: Iterable[ModelChoice]) -> list[list[str]]:
    """Rows of the version table: id, parent, held-out WT Dice before -> after, active mark."""
    rows = []
    for c in choices:
        before, after = c.metrics.get("wt_before"), c.metrics.get("wt_after")
        numbers = isinstance(before, (int, float)) and isinstance(after, (int, float))
        change = f"{before:.3f} -> {after:.3f}" if numbers else "-"
        rows.append([c.id, "shipped" if c.shipped else (c.parent or "?"), change, "active" if c.active else ""])
    return rows
