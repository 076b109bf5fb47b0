"""Training recipes: YAML files in ``training/configs/``, merged over defaults, with dotted overrides.

A recipe is a data file (nnU-Net's habit: settings live in files, not in flags). Its sections:

- ``name``, ``paper``, ``description``, ``seed``, ``sequences``, ``labels``, ``tasks``
- ``data``: where the cases come from (``synth`` in-process or a ``folder`` + clinical CSV), splits,
  label availability (papers 002: unknown genotypes and weak masks), the prepared-array cache
- ``stages``: one entry per network of the model, trained in order (``localizer`` then ``main`` for
  the shipped cascades, ``main`` alone for the papers). Each stage has ``network`` (a
  `GliomaMTLLib.nets.NetConfig` dict), ``preprocess`` (a `GliomaMTLLib.preprocess.PreprocessConfig`
  dict), ``input`` (how training samples are cut), ``loss`` (`GliomaMTLLib.losses.build_loss`),
  ``optim``, ``schedule``, ``augment``, ``batch_size`` and ``phases`` (e.g. seg pre-training, then
  joint fine-tuning: paper 000)
- ``postprocess``, ``decoding`` (argmax or region thresholds), ``train`` (checkpointing, logging, AMP),
  ``evaluate``, ``export``
- ``reported``: the paper's own numbers (shown beside ours in the evaluation tables)
- ``smoke``: dotted overrides that make the recipe run in seconds on a CPU (``--smoke``)

Every key a recipe or an override may set has a default below; a key that has none is an error
naming it, so a typo never silently trains something else.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from GliomaMTLLib.paths import recipes_dir


class ConfigError(ValueError):
    """A recipe or an override is malformed; the message names the key and the file."""


# --------------------------------------------------------------------------------------------
# Defaults. ``OPEN`` marks sections whose keys are checked by the library that consumes them
# (NetConfig, PreprocessConfig, build_loss) or that are free-form (reported, smoke).
# --------------------------------------------------------------------------------------------

OPEN = "__open__"

INPUT_DEFAULTS: dict[str, Any] = {
    # patch: random patches, ``fg_fraction`` of them centred on tumor (nnU-Net oversampling);
    # tumor_crop: a crop centred on the tumor with random jitter (genotype heads, cascade main stage);
    # whole: the whole (brain-cropped) volume, centre-cropped/padded to ``size`` (localizer);
    # resize: the brain-cropped volume resized to ``size`` (paper 001).
    "mode": "patch",
    "size": [64, 64, 64],
    "fg_fraction": 0.33,
    "jitter_mm": 8.0,
}

AUGMENT_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "flip_prob": 0.5,  # per axis
    "affine_prob": 0.0,  # small rotations / scales (grid resampling: costly on a CPU)
    "rotate_deg": 10.0,
    "scale": 0.1,
    "intensity_scale": 0.1,  # per-channel multiplicative jitter, probability ``intensity_prob``
    "intensity_shift": 0.1,
    "intensity_prob": 0.5,
    "gamma_prob": 0.0,
    "gamma": [0.7, 1.5],
    "noise_prob": 0.0,
    "noise_std": 0.1,
    "bias_field_prob": 0.0,
    "bias_field_coeff": 0.3,
    "contrast_prob": 0.0,  # per-channel random monotone contrast curve (domain randomization)
    "sequence_dropout": 0.0,  # probability of zeroing each input channel (at least one kept)
    # with this probability the sample keeps only one of these sequence subsets (the others are
    # zeroed, as a missing sequence is filled at inference), e.g. [[t1c, t2f], [t2w, t2f], [t2f]]
    "sequence_subsets": [],
    "sequence_subset_prob": 0.0,
}

OPTIM_DEFAULTS: dict[str, Any] = {
    "name": "adam",  # adam | adamw | sgd
    "lr": 1.0e-3,
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "momentum": 0.99,  # sgd only
    # Per-part learning rates (paper 001): parameter-name patterns (fnmatch) -> learning rate.
    # Parameters matching none of them use ``lr``; the loss's own parameters (uncertainty sigmas)
    # use ``loss_lr`` (None: ``lr``).
    "groups": {},
    "loss_lr": None,
    "grad_clip": 12.0,
}

SCHEDULE_DEFAULTS: dict[str, Any] = {
    "name": "cosine",  # cosine | constant | step | poly
    "warmup": 0,  # iterations of linear warm-up
    "min_lr_factor": 0.0,  # cosine floor as a fraction of the initial lr
    "step_every": 1000,  # step: multiply by ``gamma`` every ``step_every`` iterations
    "gamma": 0.5,
    "power": 0.9,  # poly
}

PHASE_DEFAULTS: dict[str, Any] = {
    "name": "train",
    "iterations": 100,
    "genotype": True,  # False: segmentation only (paper 000's pre-training)
    "input": {},  # override of the stage's ``input`` for this phase (normalized: the merged result)
    "lr_factor": 1.0,  # multiplies every group's learning rate in this phase
    "freeze": [],  # parameter-name patterns kept fixed in this phase
    # override of the stage's ``augment`` for this phase (normalized: the merged result), e.g. a
    # genotype phase without sequence dropout or contrast curves, which blur the genotype cues
    "augment": {},
    # a genotype task name: draw training cases class-balanced for that task (each known class
    # equally often); None: uniformly
    "balance": None,
}

EVAL_STAGE_DEFAULTS: dict[str, Any] = {
    # How the stage is run on a held-out case: ``sliding`` (patch-trained networks), ``whole``
    # (one forward on the padded volume), ``crop`` (a fixed crop centred by ``crop_center``).
    "mode": None,  # None: derived from the training input mode
    "crop_center": "localizer",  # localizer | label | predicted
    "overlap": 0.25,
    "genotype_input": "crop",  # crop (tumor-centred crop of the input size) | whole
}

STAGE_DEFAULTS: dict[str, Any] = {
    "network": OPEN,
    "preprocess": OPEN,
    "loss": OPEN,
    "input": INPUT_DEFAULTS,
    "augment": AUGMENT_DEFAULTS,
    "optim": OPTIM_DEFAULTS,
    "schedule": SCHEDULE_DEFAULTS,
    "batch_size": 2,
    # Warm start: a run folder (its weights/<stage>.safetensors), a bundle folder (its
    # model.safetensors, keys "<stage>.*") or a .safetensors file. Tensors whose name and shape
    # match are copied; the rest keep their fresh initialization (e.g. a widened head).
    "init": None,
    "phases": [PHASE_DEFAULTS],
    "evaluate": EVAL_STAGE_DEFAULTS,
}

DATA_DEFAULTS: dict[str, Any] = {
    "source": "synth",  # synth | folder
    # synth: cases made in-process by GliomaMTLLib.synth.generate_case(seed, cohort, small)
    "cohort": "adult",
    "small": False,
    "n_train": 40,
    "n_val": 8,
    "n_test": 16,
    "seed": 1000,
    # folder: a BraTS-style folder (GliomaMTLLib.io.list_case_folders) and a clinical CSV
    "root": None,
    "clinical_csv": None,  # None: <root>/labels.csv if present
    "id_map": {"csv": None, "case_column": None, "clinical_column": None},
    "split": {"val": 0.1, "test": 0.2, "seed": 0, "csv": None},
    "max_cases": None,
    # label availability (paper 002): keep genotypes / expert masks of only a fraction of the
    # training cases; the others train the segmentation from weak whole-tumor masks (the reference
    # whole tumor eroded or dilated by 1-2 voxels, standing in for a pretrained model's output;
    # the loss section's ``weak`` entry sets how they are weighed).
    "genotype_fraction": 1.0,
    "expert_label_fraction": 1.0,
    # tabular vector (paper 002's SCNA PCA embedding): CSV case_id + columns, or synthetic
    "tabular": {"csv": None, "dim": 0, "synthetic": False},
    "workers": 1,
    "cache_dir": None,  # None: $GLIOMAMTL_CACHE, else <run folder>/../_cache
    "in_memory": True,
}

TRAIN_DEFAULTS: dict[str, Any] = {
    "iterations": None,  # if set: every phase runs this many iterations (smoke runs)
    "checkpoint_every": 200,
    "log_every": 10,
    "amp": "auto",  # auto (fp16 + GradScaler on CUDA, fp32 on CPU) | off | bf16
    "num_threads": None,  # torch.set_num_threads; None: leave as is
    "prefetch": 2,  # batches drawn ahead in a background thread (0: in the training loop)
    "loader_workers": 0,  # > 0: batches drawn by that many worker processes instead (a GPU's pace)
    "stop_after": None,  # stop (as if killed) after this many global iterations: resume tests
    "backend": None,  # DDP backend; None: nccl on CUDA, gloo on CPU
    "device": "auto",  # auto | cpu | cuda
}

EVALUATE_DEFAULTS: dict[str, Any] = {
    "split": "test",
    "max_cases": None,
    "cox_penalizer": 0.1,
}

EXPORT_DEFAULTS: dict[str, Any] = {
    "name": None,  # None: the recipe name
    "version": "1.0.0",
    "description": None,
    "calibrate": True,
    # Temperatures fitted on fewer known labels than this are noise (a T < 1 fitted on a dozen
    # cases sharpens chance-level logits): such tasks keep T = 1 and model.json says why.
    "calibration_min_cases": 30,
    # model.json required_sequences (the rest optional, filled as sequence dropout does); None: all
    "required_sequences": None,
}

# GliomaMTLLib.inference.postprocess.PostprocessConfig (volumes in ml, so independent of spacing)
POSTPROCESS_DEFAULTS: dict[str, Any] = {
    "et_min_ml": 0.0,  # paper 004: predicted ET below this volume becomes NCR (500 voxels at 1 mm = 0.5 ml)
    "min_component_ml": 0.0,  # whole-tumor components below this are removed (the largest is kept)
    "et_min_confidence": 0.0,  # ET under et_confidence_max_ml whose mean probability is below this becomes NCR
    "et_confidence_max_ml": 10.0,
}

# GliomaMTLLib.inference.decoding.Decoding: the argmax, or nested region thresholds
DECODING_DEFAULTS: dict[str, Any] = {"mode": "argmax", "wt": 0.5, "tc": 0.5, "et": 0.5}

TOP_DEFAULTS: dict[str, Any] = {
    "name": None,
    "paper": None,
    "description": "",
    "seed": 0,
    "sequences": ["t1n", "t1c", "t2w", "t2f"],
    "labels": {"1": "necrotic core", "2": "edema", "3": "enhancing tumor"},
    "tasks": {},
    "data": DATA_DEFAULTS,
    "stages": OPEN,  # checked per stage against STAGE_DEFAULTS
    "postprocess": POSTPROCESS_DEFAULTS,
    "decoding": DECODING_DEFAULTS,
    "tta": None,  # model.json "tta": test-time flips, true, false (None: false) or "gpu" (on a GPU only)
    "train": TRAIN_DEFAULTS,
    "evaluate": EVALUATE_DEFAULTS,
    "export": EXPORT_DEFAULTS,
    "reported": OPEN,
    "smoke": OPEN,
    "base": None,  # another recipe (file name in configs/) this one starts from
}

# Sections holding free-form dicts whose keys are checked elsewhere or not at all.
_FREE_FORM_KEYS = {"groups", "labels", "tasks", "reported", "smoke"}


# --------------------------------------------------------------------------------------------
# YAML loading (1e-4 is a float here: PyYAML's YAML 1.1 resolver reads it as a string)
# --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """A YAML scalar or flow value from an override (``5``, ``true``, ``1e-4``, ``[96, 96, 96]``)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse override value {text!r}: {exc}") from exc


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------
# Merging and checking
# --------------------------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into a copy of ``base``: dicts recursively, everything else replaced.

    Free-form dicts (``labels``, ``tasks``, ``optim.groups``, ``reported``, ``smoke``) are replaced
    whole: a recipe declaring ``labels: {"1": tumor}`` predicts that one label, not the defaults' three.
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in _FREE_FORM_KEYS:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_free_form(path: str) -> bool:
    return path.split(".")[-1] in _FREE_FORM_KEYS


def _check_keys(data: Mapping[str, Any], defaults: Mapping[str, Any], where: str, source: str) -> None:
    """Raise on the first key of ``data`` that ``defaults`` does not know (recursively)."""
    for key in data:
        if key not in defaults:
            raise ConfigError(f"{source}: unknown key {where + str(key)!r}; known keys there: {sorted(defaults)}")
        default, path = defaults[key], f"{where}{key}"
        if isinstance(default, Mapping) and isinstance(data[key], Mapping) and not _is_free_form(path):
            _check_keys(data[key], default, path + ".", source)


def _check_stage(stage: Mapping[str, Any], where: str, source: str) -> None:
    """Let the engine check what it consumes: NetConfig, PreprocessConfig and every phase's loss.

    Raises:
        ConfigError: naming the recipe, the section and the engine's message.
    """
    from GliomaMTLLib.losses import build_loss
    from GliomaMTLLib.nets import NetConfig
    from GliomaMTLLib.preprocess import PreprocessConfig

    checks = [("network", lambda: NetConfig.from_dict(stage["network"])),
              ("preprocess", lambda: PreprocessConfig.from_dict(stage["preprocess"]))]
    if not stage["loss"]:
        raise ConfigError(f"{source}: {where}loss is missing (e.g. {{seg: dicece, weighting: fixed}})")
    for i, phase in enumerate(stage["phases"]):
        checks.append((f"loss (phase {i})", lambda phase=phase: build_loss(
            phase_loss_config(stage, phase), int(stage["network"].get("num_seg_classes", 4)))))
    for what, check in checks:
        try:
            check()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {where}{what}: {exc}") from None


def phase_loss_config(stage: Mapping[str, Any], phase: Mapping[str, Any]) -> dict[str, Any]:
    """The loss recipe of one phase for `GliomaMTLLib.losses.build_loss`.

    Genotype terms: the loss section's own ``genotype`` entry if it has one (class weights, label
    smoothing), else every task of the network; none in a segmentation-only phase (paper 000's
    pre-training), whose network runs without its genotype branch (fixed weights of those tasks
    are dropped too).
    """
    loss = dict(stage["loss"])
    tasks = list((stage["network"].get("tasks") or {}))
    if not phase["genotype"] or not tasks:
        loss.pop("genotype", None)
        weighting = loss.get("weighting")
        if isinstance(weighting, Mapping) and isinstance(weighting.get("weights"), Mapping):
            loss["weighting"] = {**weighting, "weights": {k: v for k, v in weighting["weights"].items() if k not in tasks}}
    elif not loss.get("genotype"):
        loss["genotype"] = tasks
    return loss


def normalize_recipe(raw: Mapping[str, Any], source: str = "recipe", validate: bool = True) -> dict[str, Any]:
    """Merge a raw recipe over the defaults and check every key.

    Raises:
        ConfigError: naming the first unknown key and the keys allowed there.
    """
    _check_keys(raw, TOP_DEFAULTS, "", source)
    recipe = {k: copy.deepcopy(v) for k, v in TOP_DEFAULTS.items() if v is not OPEN}
    recipe["reported"] = {}
    recipe["smoke"] = {}
    recipe = deep_merge(recipe, {k: v for k, v in raw.items() if k != "stages"})
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, Mapping) or not stages_raw:
        raise ConfigError(f"{source}: 'stages' must map stage names (e.g. main, localizer) to stage settings")
    if list(stages_raw) not in (["main"], ["localizer", "main"]):
        raise ConfigError(
            f"{source}: stages must be 'main' alone or 'localizer' then 'main' (the cascade a model bundle "
            f"holds), got {list(stages_raw)}"
        )
    stages: dict[str, Any] = {}
    for name, stage_raw in stages_raw.items():
        if not isinstance(stage_raw, Mapping):
            raise ConfigError(f"{source}: stages.{name} must be a mapping")
        where = f"stages.{name}."
        _check_keys(stage_raw, STAGE_DEFAULTS, where, source)
        stage = {k: copy.deepcopy(v) for k, v in STAGE_DEFAULTS.items() if v is not OPEN and k != "phases"}
        stage.update({"network": {}, "preprocess": {}, "loss": {}})
        stage = deep_merge(stage, {k: v for k, v in stage_raw.items() if k != "phases"})
        phases_raw = stage_raw.get("phases") or [{}]
        if not isinstance(phases_raw, list):
            raise ConfigError(f"{source}: {where}phases must be a list of phases")
        phases = []
        for i, phase_raw in enumerate(phases_raw):
            if not isinstance(phase_raw, Mapping):
                raise ConfigError(f"{source}: {where}phases.{i} must be a mapping")
            for key in phase_raw:
                if key not in PHASE_DEFAULTS:
                    raise ConfigError(
                        f"{source}: unknown key {where}phases.{i}.{key!r}; known keys there: {sorted(PHASE_DEFAULTS)}"
                    )
            _check_keys(phase_raw.get("input") or {}, INPUT_DEFAULTS, f"{where}phases.{i}.input.", source)
            _check_keys(phase_raw.get("augment") or {}, AUGMENT_DEFAULTS, f"{where}phases.{i}.augment.", source)
            phase = deep_merge(PHASE_DEFAULTS, phase_raw)
            phase["input"] = deep_merge(stage["input"], phase_raw.get("input") or {})
            phase["augment"] = deep_merge(stage["augment"], phase_raw.get("augment") or {})
            phases.append(phase)
        stage["phases"] = phases
        stages[str(name)] = stage
    recipe["stages"] = stages
    if validate:
        _validate_values(recipe, source)
        for name, stage in stages.items():
            _check_stage(stage, f"stages.{name}.", source)
    return recipe


_INPUT_MODES = ("patch", "tumor_crop", "whole", "resize")


def _validate_values(recipe: Mapping[str, Any], source: str) -> None:
    if recipe["data"]["source"] not in ("synth", "folder"):
        raise ConfigError(f"{source}: data.source must be 'synth' or 'folder', got {recipe['data']['source']!r}")
    if recipe["data"]["source"] == "folder" and not recipe["data"]["root"]:
        raise ConfigError(f"{source}: data.source is 'folder' but data.root is not set")
    for name, stage in recipe["stages"].items():
        for i, phase in enumerate(stage["phases"]):
            mode = phase["input"]["mode"]
            if mode not in _INPUT_MODES:
                raise ConfigError(
                    f"{source}: stages.{name}.phases.{i}: input mode {mode!r} is not one of {_INPUT_MODES}"
                )
            if not isinstance(phase["iterations"], int) or phase["iterations"] < 0:
                raise ConfigError(f"{source}: stages.{name}.phases.{i}.iterations must be an integer >= 0")
            balance = phase["balance"]
            if balance is not None and (balance not in (recipe.get("tasks") or {}) or not phase["genotype"]):
                raise ConfigError(
                    f"{source}: stages.{name}.phases.{i}.balance = {balance!r}: must name a genotype task of the "
                    f"recipe ({sorted(recipe.get('tasks') or {})}) in a phase with genotype: true"
                )
        size = stage["input"]["size"]
        if not (isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
            raise ConfigError(f"{source}: stages.{name}.input.size must be three positive integers (z, y, x), got {size!r}")
        if not isinstance(stage["batch_size"], int) or stage["batch_size"] < 1:
            raise ConfigError(f"{source}: stages.{name}.batch_size must be a positive integer")
    from GliomaMTLLib.inference.decoding import Decoding
    from GliomaMTLLib.inference.options import check_tta

    try:
        if recipe["tta"] is not None:
            check_tta(recipe["tta"])
        Decoding.from_dict(recipe["decoding"])
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    main = list(recipe["stages"].values())[-1]
    n_classes = int(main["network"].get("num_seg_classes", 4))
    if sorted(int(k) for k in recipe["labels"]) != list(range(1, n_classes)):
        raise ConfigError(
            f"{source}: labels {sorted(recipe['labels'])} do not match the last stage's network "
            f"({n_classes} seg classes: labels 1..{n_classes - 1})"
        )


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any]]:
    """``["train.iterations=5", "data.small=true"]`` -> ``[("train.iterations", 5), ...]``."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like dotted.key=value")
        key, _, value = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has no key")
        out.append((key, parse_value(value)))
    return out


def _open_section(parts: list[str]) -> bool:
    """True if the dotted path lies in a section whose new keys are checked elsewhere."""
    if parts[0] in ("reported", "smoke", "labels", "tasks"):
        return True
    if parts[0] == "stages" and len(parts) >= 3 and parts[2] in ("network", "preprocess", "loss"):
        return True
    if parts[0] == "stages" and len(parts) >= 4 and parts[2] == "optim" and parts[3] == "groups":
        return True
    return False


def apply_override(raw: dict[str, Any], key: str, value: Any, defaults_view: Mapping[str, Any], source: str) -> None:
    """Set one dotted key in the raw recipe (before normalization).

    ``defaults_view`` is the normalized recipe: a key must exist there (or lie in an open section),
    so ``--set train.iteratons=5`` fails with a message naming ``train.iteratons``.
    """
    parts = key.split(".")
    node_raw: Any = raw
    node_known: Any = defaults_view
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        is_index = isinstance(node_known, list)
        if is_index:
            if not part.isdigit() or int(part) >= len(node_known):
                raise ConfigError(
                    f"{source}: override {key!r}: {'.'.join(parts[:depth]) or 'recipe'} is a list of "
                    f"{len(node_known)}; {part!r} is not a valid index"
                )
            idx = int(part)
            while len(node_raw) <= idx:
                node_raw.append({})
            if last:
                node_raw[idx] = value
                return
            node_known = node_known[idx]
            if not isinstance(node_raw[idx], (dict, list)):
                node_raw[idx] = {}
            node_raw = node_raw[idx]
            continue
        if not isinstance(node_known, Mapping):
            raise ConfigError(f"{source}: override {key!r}: {'.'.join(parts[:depth])} is not a section")
        if part not in node_known and not _open_section(parts[: depth + 1]):
            where = ".".join(parts[:depth])
            raise ConfigError(
                f"{source}: unknown key {key!r} in override ({part!r} is not a key of "
                f"{where or 'the recipe'}; known keys there: {sorted(node_known)})"
            )
        if last:
            _check_type(key, node_known.get(part) if isinstance(node_known, Mapping) else None, value, source)
            node_raw[part] = value
            return
        child_known = node_known.get(part, {})
        if part not in node_raw or not isinstance(node_raw[part], (dict, list)):
            # a list (phases) not in the raw recipe: as many empty entries, which normalize to the defaults
            node_raw[part] = [{} for _ in child_known] if isinstance(child_known, list) else {}
        node_raw = node_raw[part]
        node_known = child_known


def _check_type(key: str, default: Any, value: Any, source: str) -> None:
    if default is None or value is None:
        return
    numeric = (int, float)
    ok = (
        (isinstance(default, bool) and isinstance(value, bool))
        or (not isinstance(default, bool) and isinstance(default, numeric) and isinstance(value, numeric) and not isinstance(value, bool))
        or (isinstance(default, str) and isinstance(value, str))
        or (isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)))
        or (isinstance(default, Mapping) and isinstance(value, Mapping))
    )
    if not ok:
        raise ConfigError(
            f"{source}: override {key!r}: expected a value like {default!r} ({type(default).__name__}), got {value!r}"
        )
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and not float(value).is_integer():
        raise ConfigError(f"{source}: override {key!r}: expected an integer, got {value!r}")


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file given its path, its file name or its bare name (``shi2023``) in ``configs/``."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    for option in (recipes_dir() / candidate.name, recipes_dir() / f"{candidate.name}.yaml"):
        if option.is_file():
            return option
    raise ConfigError(f"recipe {str(name_or_path)!r} not found; available recipes: {available_recipes()}")


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml") if not p.stem.startswith("_"))


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    raw = load_yaml(path)
    base = raw.pop("base", None)
    if base:
        base_path = resolve_recipe_path(base if Path(base).suffix else f"{base}.yaml")
        if base_path in seen:
            raise ConfigError(f"{path}: recipe inheritance loops through {base_path}")
        raw = deep_merge(_load_raw(base_path, seen + (path,)), raw)
    return raw


def load_recipe(
    name_or_path: str | Path | Mapping[str, Any],
    overrides: Iterable[str] | Iterable[tuple[str, Any]] = (),
    smoke: bool = False,
) -> dict[str, Any]:
    """Read a recipe, apply its ``smoke`` overrides (if asked) and then ``overrides``, and check it.

    Args:
        name_or_path: recipe name (``shi2023``), YAML path, or an already-loaded dict.
        overrides: ``"dotted.key=value"`` strings or ``(key, value)`` pairs, applied in order.
        smoke: apply the recipe's own ``smoke`` section first (tiny data, tiny network, few iterations).

    Returns:
        the normalized recipe (every default filled in).

    Raises:
        ConfigError: unknown keys, bad values, missing recipe.
    """
    if isinstance(name_or_path, Mapping):
        raw = copy.deepcopy(dict(name_or_path))
        raw.pop("base", None)
        source = str(raw.get("name") or "recipe")
    else:
        path = resolve_recipe_path(name_or_path)
        raw = _load_raw(path)
        source = str(path)
    pairs: list[tuple[str, Any]] = []
    if smoke:
        pairs += list(dict(raw.get("smoke") or {}).items())
    for item in overrides:
        pairs += parse_overrides([item]) if isinstance(item, str) else [tuple(item)]  # type: ignore[list-item]
    # every key is checked against the recipe as it stands; values are validated once, at the end
    # (one override may need another: data.source=folder with data.root=...)
    view = normalize_recipe(raw, source, validate=not pairs)
    for key, value in pairs:
        apply_override(raw, key, value, view, source)
        view = normalize_recipe(raw, source, validate=False)
    normalized = normalize_recipe(raw, source) if pairs else view
    if not normalized["name"]:
        normalized["name"] = Path(source).stem
    return normalized


def phase_iterations(recipe: Mapping[str, Any], phase: Mapping[str, Any]) -> int:
    """Iterations of a phase, after the global ``train.iterations`` override."""
    forced = recipe["train"]["iterations"]
    return int(forced) if forced is not None else int(phase["iterations"])


def schedule_plan(recipe: Mapping[str, Any]) -> list[tuple[str, int, str, int]]:
    """Every phase in training order: (stage, phase index, phase name, iterations)."""
    return [
        (stage, i, phase["name"], phase_iterations(recipe, phase))
        for stage, conf in recipe["stages"].items()
        for i, phase in enumerate(conf["phases"])
    ]


def fingerprint(obj: Any, length: int = 12) -> str:
    """Short stable hash of a JSON-able object (cache keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dump_recipe(recipe: Mapping[str, Any]) -> str:
    """YAML text of a normalized recipe (written into each run folder as ``recipe.yaml``)."""
    return yaml.safe_dump(json.loads(json.dumps(recipe, default=str)), sort_keys=False)
