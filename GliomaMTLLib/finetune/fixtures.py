"""Test fixtures: a tiny bundle made from a recipe (so fine-tunes can replay that recipe's phantoms)
and phantom cases written as case folders. Never for predictions: the weights are random."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from GliomaMTLLib.bundle import ModelBundle


def make_recipe_bundle(folder: str | os.PathLike, recipe: str = "gliomamtl_adult", *, smoke: bool = True,
                       overrides: Sequence[str] = (), name: str = "tiny_cascade", version: str = "0.0.1",
                       seed: int = 0) -> ModelBundle:
    """A bundle with the architecture of ``recipe`` (its smoke variant by default) and random
    weights; ``model.json`` records the recipe so that a fine-tune replays its phantoms."""
    import torch

    from GliomaMTLLib.bundle import save_bundle
    from GliomaMTLLib.nets import build_network
    from GliomaMTLLib.train.config import load_recipe
    from GliomaMTLLib.train.export import stage_meta

    loaded = load_recipe(recipe, list(overrides), smoke=smoke)
    last = list(loaded["stages"])[-1]
    meta: dict[str, Any] = {
        "name": name,
        "version": version,
        "description": f"RANDOM WEIGHTS with the architecture of recipe {recipe} (tests only).",
        "sequences": list(loaded["sequences"]),
        "labels": {str(k): v for k, v in loaded["labels"].items()},
        "tasks": {t: list(c) for t, c in loaded["tasks"].items()},
        "stages": {s: stage_meta(conf, main=s == last) for s, conf in loaded["stages"].items()},
        "postprocess": {"et_min_ml": 0.0, "min_component_ml": 0.0},
        "calibration": {},
        "training": {"recipe": recipe, "recipe_overrides": list(overrides), "recipe_smoke": smoke,
                     "data": "none (random initialization)"},
        "metrics": {},
    }
    torch.manual_seed(seed)
    state = {s: build_network(spec["network"]).state_dict() for s, spec in meta["stages"].items()}
    card = "# Model card\n\n## Status of this version (read first)\n\nRandom weights for tests. Not a model.\n"
    return save_bundle(folder, meta, state, card=card)


def write_phantom_case(folder: str | os.PathLike, case_id: str, *, seed: int = 0,
                       size: Sequence[int] = (40, 40, 32), spacing: Sequence[float] = (3.0, 3.0, 3.0),
                       tumor_radius: float = 3.0) -> tuple[Path, Any]:
    """A phantom case (`GliomaMTLLib.inference.fixtures.phantom_case`) written as a BraTS 2023
    folder without its label map; returns (folder, case) — ``case.label`` is the truth."""
    from GliomaMTLLib.inference.fixtures import phantom_case
    from GliomaMTLLib.io import Case, Geometry, write_case

    geometry = Geometry(tuple(int(s) for s in size), tuple(float(s) for s in spacing), (0.0, 0.0, 0.0),
                        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    case = phantom_case(geometry, seed=seed, case_id=case_id, tumor_radius=tumor_radius)
    folder = Path(folder)
    write_case(Case(case_id, case.images, geometry), folder, layout="brats2023")
    return folder, case
