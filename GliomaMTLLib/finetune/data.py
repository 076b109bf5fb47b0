"""Training cases of a fine-tune: store entries on a stage's grid, and synthetic replay of the recipe.

Store entries are preprocessed exactly as the `Predictor` preprocesses a case for that stage (the
stage's ``preprocess`` in ``model.json``), so the network trains on what it will see. Replay cases
are the model's own recipe's synthetic training phantoms, prepared (and cached on disk) by the
trainer's data stage, `GliomaMTLLib.train.data.prepare`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from GliomaMTLLib.finetune.store import StoreEntry
from GliomaMTLLib.train.data import PreparedCase

_FG_SUBSAMPLE = 50_000


def held_out_split(entries: Sequence[StoreEntry], fraction: float) -> tuple[list[StoreEntry], list[StoreEntry]]:
    """(train, held out): ``round(fraction * n)`` entries (at least one when ``n >= 2`` and
    ``fraction > 0``, never all) held out, chosen by a hash of the entry id, so the choice does
    not depend on the order entries were added."""
    n = len(entries)
    k = int(round(float(fraction) * n))
    if fraction > 0 and n >= 2:
        k = max(k, 1)
    k = min(k, n - 1) if n else 0
    ranked = sorted(entries, key=lambda e: hashlib.sha256(e.entry_id.encode()).hexdigest())
    held = {e.entry_id for e in ranked[:k]}
    return [e for e in entries if e.entry_id not in held], [e for e in entries if e.entry_id in held]


def _foreground(label: np.ndarray) -> dict[int, np.ndarray]:
    flat = label.reshape(-1)
    out = {}
    for value in np.unique(flat):
        if value > 0:
            idx = np.flatnonzero(flat == value)
            if idx.size > _FG_SUBSAMPLE:
                idx = idx[:: idx.size // _FG_SUBSAMPLE + 1]
            out[int(value)] = idx
    return out


def prepare_entry(entry: StoreEntry, sequences: Sequence[str], preprocess_conf: Mapping[str, Any],
                  tasks: Mapping[str, Sequence[str]], binary: bool = False, case: Any = None) -> PreparedCase:
    """One store entry on a stage's preprocessed grid, ready for `GliomaMTLLib.train.sampling.Sampler`.

    Args:
        sequences: the model's input sequences, in channel order.
        preprocess_conf: the stage's ``preprocess`` from ``model.json``.
        tasks: the model's genotype tasks (task -> classes); the entry's known classes become indices.
        binary: the network predicts background / whole tumor only.
        case: the entry's case when already read (saves reading it again for another stage).
    """
    from GliomaMTLLib.preprocess import PreprocessConfig, preprocess, preprocess_label

    case = case if case is not None else entry.read_case(sequences)
    pre = preprocess(case, list(sequences), PreprocessConfig.from_dict(preprocess_conf))
    label = preprocess_label(case.label, pre.record).astype(np.uint8)
    if binary:
        label = (label > 0).astype(np.uint8)
    tumor = np.argwhere(label > 0)
    genotype = {t: (list(c).index(entry.genotype[t]) if entry.genotype.get(t) in c else -1) for t, c in tasks.items()}
    return PreparedCase(
        case_id=entry.entry_id, split="train", image=np.ascontiguousarray(pre.image, dtype=np.float32), label=label,
        weak_label=None, reference=None, genotype=genotype,
        genotype_names={t: entry.genotype[t] for t in tasks if t in entry.genotype},
        survival_days=None, event=None, tabular=None, spacing=tuple(pre.geometry.spacing),
        geometry=pre.geometry, input_geometry=case.geometry,
        tumor_center=tuple(float(v) for v in tumor.mean(axis=0)) if tumor.size else None, fg=_foreground(label),
    )


def recorded_recipe(bundle_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe a bundle was trained with: ``{"name", "overrides", "smoke"}`` from its
    ``finetune.recipe`` (a fine-tuned version), else from ``training`` (``recipe``, and the
    optional ``recipe_overrides`` / ``recipe_smoke`` of a bundle made from a recipe variant)."""
    recorded = (bundle_meta.get("finetune") or {}).get("recipe")
    if recorded:
        return dict(recorded)
    training = bundle_meta.get("training") or {}
    name = training.get("recipe")
    return {"name": name if isinstance(name, str) else None,
            "overrides": list(training.get("recipe_overrides") or []), "smoke": bool(training.get("recipe_smoke", False))}


def replay_recipe(bundle_meta: Mapping[str, Any], n_cases: int, cache: str | Path,
                  recipe: str | None = None, overrides: Sequence[str] = ()) -> dict[str, Any] | None:
    """The model's own training recipe, reduced to ``n_cases`` synthetic training cases (no
    validation or test cases), or None when the bundle names no recipe that can be found.

    The recipe is ``recipe`` if given, else the one the bundle records (``finetune.recipe`` of a
    fine-tuned version, else ``training.recipe`` of an exported run), with the overrides it
    was used with.
    """
    from GliomaMTLLib.train.config import ConfigError, load_recipe

    recorded = recorded_recipe(bundle_meta)
    name = recipe or recorded.get("name")
    if not name or not isinstance(name, str):
        return None
    if recipe is None:
        overrides = [*recorded.get("overrides", []), *overrides]
        smoke = bool(recorded.get("smoke", False))
    else:
        smoke = False
    try:
        loaded = load_recipe(name, [*overrides, f"data.n_train={max(int(n_cases), 1)}", "data.n_val=0",
                                    "data.n_test=0", f"data.cache_dir={cache}", "data.workers=1"], smoke=smoke)
    except ConfigError:
        return None
    if loaded["data"]["source"] != "synth":
        return None  # replay means the recipe's synthetic phantoms; a folder recipe's data may be gone
    return loaded


def replay_cases(recipe: Mapping[str, Any], stage: str, bundle_stage: Mapping[str, Any]) -> list[PreparedCase]:
    """The recipe's synthetic training cases on ``stage``'s grid; empty when the recipe's
    preprocessing of that stage differs from the bundle's (the arrays would not match)."""
    from GliomaMTLLib.preprocess import PreprocessConfig
    from GliomaMTLLib.train.data import load_dataset, prepare

    if stage not in recipe["stages"]:
        return []
    ours = PreprocessConfig.from_dict(bundle_stage.get("preprocess") or {}).to_dict()
    theirs = PreprocessConfig.from_dict(recipe["stages"][stage]["preprocess"]).to_dict()
    if json.dumps(ours, sort_keys=True) != json.dumps(theirs, sort_keys=True):
        return []
    folders = prepare(recipe).folders
    return load_dataset(recipe, folders[stage], splits=("train",))
