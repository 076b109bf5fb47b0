"""The fine-tuning job: a model version trained further on the correction store, saved as a new version.

``gliomamtl finetune --store DIR [--from NAME|VERSION] [--name NEW] [--iterations N]``:

1. the parent version (``--from``; default the active version of the default model) and the
   store's entries; a hash-chosen part of the entries is held out (``holdout``, 20 %);
2. metrics of the parent on the held-out entries, through the same `Predictor` that ``predict`` uses;
3. each chosen stage (default every stage; ``stages=("main",)`` carries the localizer over
   byte for byte) starts from the parent's weights and trains ``iterations`` iterations on a mix
   of store entries and replayed synthetic cases of the model's own recipe (``replay_fraction``
   of the samples), with the recipe's loss, augmentation, input cutting and optimizer at a
   reduced learning rate (``lr_factor``). The genotype path trains only when the store has
   genotype labels for one of the model's tasks; otherwise it is left untouched;
4. metrics of the new weights on the same held-out entries, then the new version is written to
   the registry (atomic; never over an existing version) and made active.

Nothing is written outside the registry's new version folder and ``active.json``, both renamed into
place, so killing the job at any moment leaves the store and every earlier version intact.
SIGTERM / SIGINT stop it at the next iteration (`FinetuneCancelled`), without writing a version.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from GliomaMTLLib.finetune.data import held_out_split, prepare_entry, recorded_recipe, replay_cases, replay_recipe
from GliomaMTLLib.finetune.registry import ModelRegistry, ModelVersion
from GliomaMTLLib.finetune.store import CorrectionStore, StoreEntry

#: Used when the bundle names no recipe (e.g. a hand-made bundle): a plain Dice + CE fine-tune.
FALLBACK_STAGE: dict[str, Any] = {
    "loss": {"seg": "dicece", "weighting": "fixed"},
    "optim": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4, "betas": [0.9, 0.999], "momentum": 0.99,
              "groups": {}, "loss_lr": None, "grad_clip": 12.0},
    "batch_size": 2,
}


class FinetuneCancelled(RuntimeError):
    """The job was asked to stop (SIGTERM / SIGINT); nothing was written."""


@dataclass
class FinetuneSettings:
    """How a fine-tune runs.

    Attributes:
        iterations: optimizer steps per fine-tuned stage.
        stages: stages to train (None: every stage of the model); the others are copied unchanged.
        holdout: fraction of store entries held out for the before / after metrics.
        replay_cases: synthetic cases of the model's recipe to replay (0: none).
        replay_fraction: fraction of the training samples drawn from the replay cases.
        lr_factor: multiplies the recipe's learning rates.
        batch_size: per stage (None: the recipe's).
        seed: seeds the initialization-free parts (sampling, augmentation, dropout).
        num_threads: torch CPU threads (None: leave as is).
        recipe: recipe name or file to take settings and replay from (None: the bundle's own).
        replay_cache: folder of the replay cases' prepared arrays (None: ``<cache>/prepared``).
        activate: make the new version active.
        device: ``auto`` (a CUDA GPU when there is one, else the CPU), ``cpu`` or ``cuda``.
    """

    iterations: int = 40
    stages: tuple[str, ...] | None = None
    holdout: float = 0.2
    replay_cases: int = 8
    replay_fraction: float = 0.3
    lr_factor: float = 0.5
    batch_size: int | None = None
    seed: int = 0
    num_threads: int | None = None
    recipe: str | None = None
    replay_cache: str | None = None
    activate: bool = True
    device: str = "auto"


class StopFlag:
    """Set by SIGTERM / SIGINT inside :meth:`handle_signals`; the job checks it between iterations."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def check(self) -> None:
        if self.signal is not None:
            raise FinetuneCancelled(f"fine-tune cancelled by {signal.Signals(self.signal).name}; no version was written")

    @contextlib.contextmanager
    def handle_signals(self) -> Iterator["StopFlag"]:
        """Route SIGTERM and SIGINT to this flag (main thread only); restores the handlers after."""
        def handler(signum: int, _frame: Any) -> None:
            self.signal = signum

        previous = {}
        with contextlib.suppress(ValueError):  # not the main thread: no handlers, cancel by other means
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


# --------------------------------------------------------------------------------------------
# Metrics through the Predictor
# --------------------------------------------------------------------------------------------


def store_metrics(predictor: Any, entries: Sequence[StoreEntry]) -> dict[str, Any]:
    """Mean Dice per region, voxels a reader would change, and genotype accuracy of ``predictor``
    on ``entries`` (their corrected labels are the reference)."""
    from GliomaMTLLib.metrics.segmentation import region_metrics

    if not entries:
        return {"n": 0, "dice": {}, "changed_voxels": None, "genotype_accuracy": {}, "cases": {}}
    regions = getattr(predictor, "regions", None)
    per_case: dict[str, Any] = {}
    dice: dict[str, list[float]] = {}
    hits: dict[str, list[float]] = {}
    for entry in entries:
        case = entry.read_case(predictor.sequences)
        pred = predictor.predict(case)
        reference = case.label
        if regions is not None and len(regions) == 1:  # whole-tumor model: compare whole tumors
            reference = (reference > 0).astype(np.uint8)
        extra = {"regions": {k: tuple(v) for k, v in regions.items()}} if regions else {}
        scores = region_metrics(pred.labels, reference, case.geometry.spacing, **extra)
        row = {"dice": {r: float(s["dice"]) for r, s in scores.items()},
               "changed_voxels": int(np.count_nonzero(pred.labels != reference))}
        for region, value in row["dice"].items():
            dice.setdefault(region, []).append(value)
        for task, cls in entry.genotype.items():
            if task in pred.genotype:
                hits.setdefault(task, []).append(float(pred.genotype_prediction[task] == cls))
        per_case[entry.entry_id] = row
    return {
        "n": len(entries),
        "dice": {r: float(np.mean(v)) for r, v in dice.items()},
        "changed_voxels": float(np.mean([c["changed_voxels"] for c in per_case.values()])),
        "genotype_accuracy": {t: float(np.mean(v)) for t, v in hits.items()},
        "cases": per_case,
    }


# --------------------------------------------------------------------------------------------
# Training one stage
# --------------------------------------------------------------------------------------------


def _stage_recipe(recipe: Mapping[str, Any] | None, stage: str, bundle_stage: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's training settings: the recipe's, else fallbacks derived from ``model.json``."""
    from GliomaMTLLib.train.config import AUGMENT_DEFAULTS, INPUT_DEFAULTS, PHASE_DEFAULTS

    if recipe is not None and stage in recipe["stages"]:
        conf = copy.deepcopy(recipe["stages"][stage])
        conf["network"] = dict(bundle_stage["network"])  # the weights' architecture, not the recipe's
        return conf
    size = list(bundle_stage.get("input_size") or bundle_stage.get("crop_size"))
    mode = "whole" if stage == "localizer" else ("tumor_crop" if bundle_stage.get("mode", "crop") == "crop" else "patch")
    phase = {**PHASE_DEFAULTS, "input": {**INPUT_DEFAULTS, "mode": mode, "size": size}}
    return {**copy.deepcopy(FALLBACK_STAGE), "network": dict(bundle_stage["network"]),
            "augment": dict(AUGMENT_DEFAULTS), "input": phase["input"], "phases": [phase]}


class _MixedSampler:
    """Each slot draws from the store's sampler, or with probability ``replay_fraction`` from the
    replay sampler (counter-based randomness, as the trainer's samplers)."""

    def __init__(self, store: Any, replay: Any | None, replay_fraction: float, seed: int) -> None:
        self.store, self.replay = store, replay
        self.fraction = replay_fraction if replay is not None else 0.0
        self.seed = seed

    def batch(self, iteration: int, slots: Sequence[int]) -> dict[str, Any]:
        from GliomaMTLLib.train.sampling import collate

        samples = []
        for slot in slots:
            rng = np.random.default_rng([self.seed, 9017, iteration, slot])
            source = self.replay if rng.random() < self.fraction else self.store
            sample = source.sample(iteration, slot)
            sample.pop("tabular", None)
            samples.append(sample)
        return collate(samples)


@dataclass
class StageResult:
    stage: str
    iterations: int
    seconds: float
    sec_per_iteration: float
    losses: list[float] = field(default_factory=list)
    genotype_trained: bool = False
    cpu_seconds: float = 0.0  # CPU time of this process: the wall time of a quiet machine, on a shared one
    store_cases: int = 0
    replay_cases: int = 0


def train_stage(
    net: torch.nn.Module,
    stage: str,
    stage_index: int,
    conf: Mapping[str, Any],
    store_cases: Sequence[Any],
    replay: Sequence[Any],
    settings: FinetuneSettings,
    channels: int,
    stop: StopFlag,
    progress: Callable[[int, float], None] | None = None,
) -> StageResult:
    """Fine-tune one stage's network in place on store cases mixed with replay cases.

    Uses the trainer's parts (`build_optimizer`, `lr_lambda`, `Augmenter`, `Sampler`, `build_loss`)
    with the stage's last training phase (its input cutting and genotype setting).

    Raises:
        FinetuneCancelled: ``stop`` was set.
        FloatingPointError: the loss became NaN or infinite.
    """
    from GliomaMTLLib.losses import build_loss
    from GliomaMTLLib.train.config import phase_loss_config
    from GliomaMTLLib.train.sampling import Augmenter, Sampler, to_device
    from GliomaMTLLib.train.trainer import build_optimizer, lr_lambda

    tasks = list(net.config.tasks)
    # the genotype path trains only on a reader's genotype labels (replay alone must not move it)
    with_genotype = bool(tasks) and any(any(v >= 0 for v in c.genotype.values()) for c in store_cases)
    phase = {**conf["phases"][-1], "genotype": with_genotype, "lr_factor": float(settings.lr_factor), "freeze": []}
    device = next(net.parameters()).device
    loss_fn = build_loss(phase_loss_config(conf, phase), net.config.num_seg_classes).to(device)
    optimizer = build_optimizer(net, loss_fn, conf["optim"], phase)
    n_iter = int(settings.iterations)
    schedule = {"name": "cosine", "warmup": min(5, n_iter // 5), "min_lr_factor": 0.1, "step_every": 1000,
                "gamma": 0.5, "power": 0.9}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule, n_iter))
    augment = Augmenter(conf["augment"], channels=channels)
    binary = net.config.num_seg_classes == 2
    used_tasks = tasks if with_genotype else []
    store_sampler = Sampler(store_cases, phase["input"], augment, used_tasks, settings.seed, stage_index, 100, binary=binary)
    replay_sampler = (Sampler(replay, phase["input"], augment, used_tasks, settings.seed, stage_index, 101, binary=binary)
                      if replay and settings.replay_fraction > 0 else None)
    sampler = _MixedSampler(store_sampler, replay_sampler, float(settings.replay_fraction), settings.seed + stage_index)
    batch_size = int(settings.batch_size or conf.get("batch_size") or 2)
    clip = float(conf["optim"].get("grad_clip") or 0)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    result = StageResult(stage, n_iter, 0.0, 0.0, genotype_trained=with_genotype, store_cases=len(store_cases),
                         replay_cases=len(replay) if replay_sampler is not None else 0)
    net.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    for it in range(n_iter):
        stop.check()
        batch = to_device(sampler.batch(it, range(batch_size)), device)
        outputs = net(batch["image"], with_genotype=with_genotype)
        if not with_genotype:
            batch = {**batch, "genotype": {}}
        total, _ = loss_fn(outputs, batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        scheduler.step()
        value = float(total.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"fine-tune {stage} iteration {it + 1}: the loss is {value}")
        result.losses.append(round(value, 5))
        if progress is not None:
            progress(it + 1, value)
    net.eval()
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu_start
    result.sec_per_iteration = result.seconds / max(n_iter, 1)
    return result


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def _version_of(bundle: Any, registry: ModelRegistry) -> str:
    found = _known_version(bundle, registry)
    return found.id if found is not None else f"{bundle.name}@{bundle.version}"


def _known_version(bundle: Any, registry: ModelRegistry) -> ModelVersion | None:
    """The shipped or registered version whose folder is the bundle's, or None (a bundle folder elsewhere)."""
    return next((v for v in registry.versions() if v.folder.resolve() == bundle.folder.resolve()), None)


def _hardware(device: torch.device) -> str:
    from GliomaMTLLib.train.trainer import hardware_summary

    info = hardware_summary(device, 1)
    return info.get("gpu") or f"{info.get('cpu', 'cpu')} ({info.get('torch_threads')} torch thread(s))"


def finetune_card(meta: Mapping[str, Any]) -> str:
    """``card.md`` of a fine-tuned version: what it came from, what it saw, what it measured."""
    ft = meta["finetune"]
    before, after = ft["metrics_before"], ft["metrics_after"]

    def fmt(m: Mapping[str, Any], region: str) -> str:
        value = (m.get("dice") or {}).get(region)
        return "n/a" if value is None else f"{value:.3f}"

    regions = sorted(set(before.get("dice") or {}) | set(after.get("dice") or {}), key=["WT", "TC", "ET"].index)
    rows = "\n".join(f"| {r} | {fmt(before, r)} | {fmt(after, r)} |" for r in regions) or "| (no held-out entries) | | |"
    status = (f"Fine-tuned from {ft['parent']['id']} on {len(ft['trained_on'])} corrected case(s) of the store "
              f"{ft['store']}, with {ft['replay']['cases']} replayed synthetic case(s); "
              + (f"held-out WT Dice {fmt(before, 'WT')} before, {fmt(after, 'WT')} after."
                 if before.get("n") else "no entry was held out, so no before/after metric."))
    stages = ", ".join(f"`{s['stage']}` {s['iterations']} iterations ({s['sec_per_iteration']:.2f} s each)"
                       for s in ft["stages"]) or "none"
    return f"""# Model card: {meta['name']} {meta['version']}

## Status of this version (read first)

{status}

**Not for clinical use.** A fine-tune on a handful of corrections adapts the model to one reader's
cohort; it is checked only on the held-out corrections below.

## Lineage

- Parent: `{ft['parent']['id']}` (sha256 {ft['parent']['sha256'][:12]}...); its own card still describes the original training.
- Store entries trained on: {', '.join(ft['trained_on']) or 'none'}
- Held out (metrics below): {', '.join(ft['held_out']) or 'none'}
- Stages fine-tuned: {stages}; carried over unchanged: {', '.join(ft['carried_over']) or 'none'}
- Genotype path trained: {'yes' if ft['genotype_trained'] else 'no (no genotype labels in the store)'}
- Recipe: `{ft['recipe'].get('name')}`; replay of {ft['replay']['cases']} synthetic case(s), {ft['replay']['fraction']:.0%} of the samples
- Calibration temperatures: the parent's (not refitted on a few cases).
- Time: {ft['seconds']:.0f} s on {ft['hardware']}.

## Held-out store metrics (mean Dice, through the Predictor)

| region | before ({ft['parent']['id']}) | after |
|---|---|---|
{rows}
"""


def run_finetune(
    store: CorrectionStore | str | Path | None = None,
    source: str | Path | None = None,
    *,
    name: str | None = None,
    settings: FinetuneSettings | None = None,
    registry: ModelRegistry | str | Path | None = None,
    reporter: Any = None,
    stop: StopFlag | None = None,
) -> dict[str, Any]:
    """Fine-tune ``source`` (a model name, version or folder; default the default model's active
    version) on the correction store and add the result to the registry.

    Args:
        name: model name of the new version (default the parent's name).
        reporter: a `GliomaMTLLib.progress.JsonLinesReporter` (progress and log events; the caller
            emits ``done`` / ``error``).
        stop: a `StopFlag` checked between steps.

    Returns:
        ``{"version": id, "folder", "parent", "trained_on", "held_out", "metrics_before",
        "metrics_after", "stages", "seconds"}``.

    Raises:
        ValueError: an empty store, an unknown stage, a corrupt store entry.
        FinetuneCancelled: stopped by ``stop``.
    """
    from GliomaMTLLib.bundle import load_bundle
    from GliomaMTLLib.inference import Predictor
    from GliomaMTLLib.inference.device import resolve_device
    from GliomaMTLLib.inference.predictor import DEFAULT_MODEL
    from GliomaMTLLib.paths import cache_dir
    t0 = time.perf_counter()
    settings = settings or FinetuneSettings()
    stop = stop if stop is not None else StopFlag()
    store = store if isinstance(store, CorrectionStore) else CorrectionStore(store)
    registry = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)

    def report(fraction: float, message: str) -> None:
        if reporter is not None:
            reporter.progress(fraction, message)

    threads_before = torch.get_num_threads()
    # the Predictor would otherwise set every physical core; on a loaded CPU, more threads than
    # the caller asked for made training iterations 30x slower (oversubscription)
    threads = int(settings.num_threads or threads_before)
    torch.set_num_threads(threads)
    try:
        bundle = load_bundle(source or DEFAULT_MODEL)
        parent_id = _version_of(bundle, registry)
        entries = store.entries()
        if not entries:
            raise ValueError(f"the correction store {store.root} is empty; add corrections with 'gliomamtl correct'")
        for entry in entries:
            problems = entry.verify()
            if problems:
                raise ValueError(f"store entry {entry.entry_id} is corrupt: {problems[0]}")
        stages = list(settings.stages or bundle.stages)
        unknown = [s for s in stages if s not in bundle.stages]
        if unknown:
            raise ValueError(f"stage(s) {unknown} not in {parent_id} (stages: {list(bundle.stages)})")
        train_entries, held_out = held_out_split(entries, settings.holdout)
        report(0.02, f"{parent_id}: {len(train_entries)} store case(s) to train on, {len(held_out)} held out")

        stop.check()
        cache = settings.replay_cache or str(cache_dir() / "prepared")
        recipe = (replay_recipe(bundle.meta, settings.replay_cases, cache, settings.recipe)
                  if settings.replay_cases > 0 or settings.recipe else None)
        if recipe is None and reporter is not None and settings.replay_cases > 0:
            reporter.log("no training recipe found for this model: no synthetic replay, default settings")
        report(0.04, "measuring the parent on the held-out corrections")
        device = resolve_device(settings.device)
        predictor = Predictor(bundle, device=device, engine="torch", num_threads=threads)
        before = store_metrics(predictor, held_out)
        stop.check()

        networks = dict(predictor.networks)
        report(0.08, f"preparing {len(train_entries)} store case(s)")
        store_cases: dict[str, list[Any]] = {s: [] for s in stages}
        for entry in train_entries:  # each case read once, for every stage (full-size cases are large)
            case = entry.read_case(bundle.sequences)
            for stage in stages:
                store_cases[stage].append(prepare_entry(entry, bundle.sequences, bundle.stages[stage]["preprocess"],
                                                        bundle.tasks, case=case))
            stop.check()
        results: list[StageResult] = []
        total_iters = settings.iterations * len(stages)
        done_iters = 0
        for stage_index, stage in enumerate(bundle.stages):
            if stage not in stages:
                continue
            replay = []
            if recipe is not None and settings.replay_cases > 0 and settings.replay_fraction > 0:
                report(0.1 + 0.75 * done_iters / max(total_iters, 1), f"{stage}: preparing synthetic replay cases")
                replay = replay_cases(recipe, stage, bundle.stages[stage])
            stop.check()
            conf = _stage_recipe(recipe, stage, bundle.stages[stage])
            net = copy.deepcopy(networks[stage])
            offset = done_iters

            def on_iteration(it: int, loss: float, stage: str = stage, offset: int = offset) -> None:
                report(0.1 + 0.75 * (offset + it) / max(total_iters, 1),
                       f"{stage} {it}/{settings.iterations} loss {loss:.4f}")

            result = train_stage(net, stage, stage_index, conf, store_cases[stage], replay, settings,
                                 len(bundle.sequences), stop, on_iteration)
            results.append(result)
            networks[stage] = net
            done_iters += settings.iterations
            store_cases[stage] = []

        report(0.87, "measuring the new weights on the held-out corrections")
        after = store_metrics(Predictor(bundle, device=device, engine="torch", networks=networks, num_threads=threads),
                              held_out)
        stop.check()

        # weights: trained stages from the networks, the others byte for byte from the parent's file
        parent_tensors = bundle.state_dicts()
        state = {s: ({k: v.cpu() for k, v in networks[s].state_dict().items()} if s in stages else parent_tensors[s])
                 for s in bundle.stages}
        new_name = name or bundle.name
        version = registry.next_version(new_name, bundle.version)
        meta = {k: copy.deepcopy(v) for k, v in bundle.meta.items() if k not in ("format", "weights", "finetune")}
        recipe_info = recorded_recipe(bundle.meta) if settings.recipe is None else {
            "name": settings.recipe, "overrides": [], "smoke": False}
        meta.update({
            "name": new_name,
            "version": version,
            "description": f"{bundle.meta.get('description', '')} Fine-tuned from {parent_id} on "
                           f"{len(train_entries)} corrected case(s).".strip(),
            "metrics": {},  # the parent's synthetic test metrics do not describe these weights
            "finetune": {
                "parent": {"id": parent_id, "name": bundle.name, "version": bundle.version,
                           "sha256": str(bundle.meta["weights"].get("sha256", "")), "metrics": bundle.meta.get("metrics", {})},
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "store": str(store.root),
                "trained_on": [e.entry_id for e in train_entries],
                "held_out": [e.entry_id for e in held_out],
                "entries": {e.entry_id: e.fingerprint for e in entries},
                "recipe": recipe_info,
                "replay": {"cases": results[0].replay_cases if results else 0, "fraction": settings.replay_fraction},
                "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
                "stages": [asdict(r) | {"losses": r.losses[-5:]} for r in results],
                "carried_over": [s for s in bundle.stages if s not in stages],
                "genotype_trained": any(r.genotype_trained for r in results),
                "metrics_before": before,
                "metrics_after": after,
                "seconds": round(time.perf_counter() - t0, 1),
                "hardware": _hardware(device),
            },
        })
        report(0.95, f"writing {new_name}@{version}")
        stop.check()
        added: ModelVersion = registry.add(meta, state, finetune_card(meta), activate=settings.activate,
                                           parent=_known_version(bundle, registry))
    finally:
        torch.set_num_threads(threads_before)
    report(1.0, f"{added.id} written")
    return {
        "version": added.id,
        "folder": str(added.folder),
        "parent": parent_id,
        "active": settings.activate,
        "trained_on": meta["finetune"]["trained_on"],
        "held_out": meta["finetune"]["held_out"],
        "metrics_before": {k: before[k] for k in ("n", "dice", "changed_voxels", "genotype_accuracy")},
        "metrics_after": {k: after[k] for k in ("n", "dice", "changed_voxels", "genotype_accuracy")},
        "stages": [{"stage": r.stage, "iterations": r.iterations, "seconds": round(r.seconds, 2),
                    "sec_per_iteration": round(r.sec_per_iteration, 3), "cpu_seconds": round(r.cpu_seconds, 2),
                    "genotype_trained": r.genotype_trained,
                    "replay_cases": r.replay_cases} for r in results],
        "seconds": round(time.perf_counter() - t0, 1),
    }
