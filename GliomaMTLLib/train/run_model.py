"""A training run seen as a model bundle, in memory: what evaluation and export give the Predictor.

`GliomaMTLLib.inference.Predictor` is the only implementation of the cascade. To evaluate a run
before it is exported (and to fit its calibration), the run's recipe is turned into the
``model.json`` the export would write (:func:`bundle_meta`) and its stage weights are read from
the run folder instead of ``model.safetensors`` (:class:`RunBundle`). ``Predictor(run_dir)`` and
``Predictor(run_bundle(run_dir))`` are therefore the exported model, minus its calibration.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from GliomaMTLLib.bundle import ModelBundle
from GliomaMTLLib.inference.decoding import Decoding


def eval_mode(stage_conf: Mapping[str, Any]) -> str:
    """How a stage runs on a whole case: its ``evaluate.mode``, else from its last training input mode."""
    mode = stage_conf["evaluate"]["mode"]
    if mode:
        return str(mode)
    train_mode = stage_conf["phases"][-1]["input"]["mode"]
    return {"patch": "sliding", "tumor_crop": "crop", "whole": "whole", "resize": "whole"}[train_mode]


def stage_meta(conf: Mapping[str, Any], main: bool) -> dict[str, Any]:
    """The ``model.json`` description of one stage (``main``: the last stage, the multi-task one)."""
    from GliomaMTLLib.nets import NetConfig
    from GliomaMTLLib.preprocess import PreprocessConfig

    size = [int(s) for s in conf["phases"][-1]["input"]["size"]]
    meta: dict[str, Any] = {
        "network": NetConfig.from_dict(conf["network"]).to_dict(),
        "preprocess": PreprocessConfig.from_dict(conf["preprocess"]).to_dict(),
        "mode": eval_mode(conf),
        "input_size": size,
    }
    if main:
        # Predictor: one crop_size window on the tumor, or windows of that size over the brain
        # when there is no localizer
        meta["crop_size"] = size
        meta["overlap"] = float(conf["evaluate"]["overlap"])
    if conf["phases"][-1]["input"]["mode"] == "resize":
        meta["resize_to"] = size
    return meta


def sequence_roles(recipe: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(required, optional)`` input sequences of a recipe's model.

    ``export.required_sequences`` when the recipe sets it (the others are optional: the model was
    trained with sequence dropout and measured without them), else every sequence is required.
    """
    sequences = [str(s) for s in recipe["sequences"]]
    required = (recipe.get("export") or {}).get("required_sequences")
    if not required:
        return sequences, []
    required = [str(s) for s in required]
    unknown = [s for s in required if s not in sequences]
    if unknown:
        raise ValueError(f"export.required_sequences {unknown} are not among the recipe's sequences {sequences}")
    return required, [s for s in sequences if s not in required]


def bundle_meta(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``model.json`` that describes how to run the model (no weights, metrics, training)."""
    stages = list(recipe["stages"])
    required, optional = sequence_roles(recipe)
    return {
        "name": (recipe.get("export") or {}).get("name") or recipe["name"],
        "version": str((recipe.get("export") or {}).get("version", "0")),
        "description": (recipe.get("export") or {}).get("description") or recipe.get("description", ""),
        "sequences": list(recipe["sequences"]),
        "required_sequences": required,
        "optional_sequences": optional,
        "labels": {str(k): v for k, v in recipe["labels"].items()},
        "tasks": {t: list(c) for t, c in recipe["tasks"].items()},
        "stages": {stage: stage_meta(conf, main=stage == stages[-1]) for stage, conf in recipe["stages"].items()},
        "postprocess": dict(recipe["postprocess"]),
        "decoding": Decoding.from_dict(recipe.get("decoding")).to_dict(),
        "tta": recipe.get("tta") or False,
        "calibration": {},
    }


class RunBundle(ModelBundle):
    """A run folder as a :class:`ModelBundle`: ``meta`` from its recipe, weights from its stage files."""

    def state_dicts(self) -> dict[str, dict[str, Any]]:
        from GliomaMTLLib.train.checkpoint import load_stage_weights

        return {stage: load_stage_weights(self.folder, stage) for stage in self.stages}


def is_run_folder(path: str | os.PathLike) -> bool:
    """True for a training run folder (it holds ``recipe.yaml`` and no ``model.json``)."""
    p = Path(path)
    return (p / "recipe.yaml").is_file() and not (p / "model.json").is_file()


def run_bundle(run_dir: str | os.PathLike, recipe: Mapping[str, Any] | None = None) -> RunBundle:
    """The in-memory bundle of a run (its weights are read when the Predictor builds the networks).

    Raises:
        FileNotFoundError: ``run_dir`` is not a training run, or a stage has no finished weights.
    """
    from GliomaMTLLib.train.checkpoint import weights_path
    from GliomaMTLLib.train.config import load_recipe

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run (no recipe.yaml)")
    recipe = recipe or load_recipe(run_dir / "recipe.yaml")
    digest = hashlib.sha256()
    for stage in recipe["stages"]:
        path = weights_path(run_dir, stage)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: stage {stage!r} has no finished weights (did training finish?)")
        digest.update(path.read_bytes())
    meta = bundle_meta(recipe)
    meta["weights"] = {"file": "", "sha256": digest.hexdigest(), "run": str(run_dir)}
    return RunBundle(folder=run_dir, meta=meta)
