"""The trainer: stages x phases of a recipe, single process or DistributedDataParallel (torchrun).

One run folder (``runs/<name>``) holds::

    recipe.yaml          the resolved recipe (every default filled in)
    checkpoint.pt        the latest resumable state (atomic; see GliomaMTLLib.train.checkpoint)
    train_log.jsonl      one JSON object per logged iteration (losses, lr, time)
    weights/<stage>.safetensors   each finished stage's network
    run.json             status, iterations, time, hardware (updated at each checkpoint)

Multi-GPU / multi-node: launch the same command under ``torchrun`` (``--nproc_per_node``,
``--nnodes``, ...). Each rank draws its own slots of the global batch (GliomaMTLLib.train.sampling), DDP
averages the gradients (NCCL on GPUs, Gloo on CPUs), and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist

from GliomaMTLLib.io.atomic import write_text_atomic
from GliomaMTLLib.train import checkpoint as ckpt
from GliomaMTLLib.train.config import ConfigError, dump_recipe, fingerprint, phase_iterations, phase_loss_config, schedule_plan
from GliomaMTLLib.train.data import load_dataset, prepare
from GliomaMTLLib.train.sampling import Augmenter, Prefetcher, Sampler, balanced_case_weights, to_device

# Recipe sections that may differ when a run is resumed (how it runs, is evaluated and exported,
# not what it trains).
_RESUMABLE_CHANGES = ("train", "evaluate", "export", "postprocess", "decoding", "tta", "smoke", "description", "paper")
_DATA_RUNTIME_KEYS = ("workers", "cache_dir", "in_memory")


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None, use_cuda: bool) -> DistInfo:
    """Join the process group torchrun set up (WORLD_SIZE/RANK/LOCAL_RANK/MASTER_*), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"), rank=rank, world_size=world)
        created = True
    return DistInfo(world_size=world, rank=rank, local_rank=local, initialized_here=created)


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def hardware_summary(device: torch.device, world_size: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "world_size": world_size,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


# --------------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------------


def _matches(name: str, patterns: Any) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def build_optimizer(net: torch.nn.Module, loss: torch.nn.Module, optim_conf: Mapping[str, Any],
                    phase: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over the network's parameters in per-part learning-rate groups
    (``optim.groups``: name pattern -> lr, first match wins; paper 001) plus the loss's own
    learnable parameters (uncertainty weights, paper 000). Parameters matching ``phase.freeze``
    are frozen for the phase."""
    factor = float(phase["lr_factor"])
    base_lr = float(optim_conf["lr"]) * factor
    group_lrs = {str(p): float(lr) * factor for p, lr in (optim_conf["groups"] or {}).items()}
    buckets: dict[str, list[torch.nn.Parameter]] = {"__default__": []}
    buckets.update({p: [] for p in group_lrs})
    for name, param in net.named_parameters():
        frozen = _matches(name, phase["freeze"])
        param.requires_grad_(not frozen)
        if frozen:
            continue
        target = next((p for p in group_lrs if fnmatch.fnmatchcase(name, p)), "__default__")
        buckets[target].append(param)
    groups = [{"params": buckets["__default__"], "lr": base_lr, "name": "default"}]
    groups += [{"params": buckets[p], "lr": group_lrs[p], "name": p} for p in group_lrs if buckets[p]]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:
        loss_lr = optim_conf["loss_lr"]
        groups.append({"params": loss_params, "lr": float(loss_lr) * factor if loss_lr is not None else base_lr, "name": "loss"})
    name = str(optim_conf["name"]).lower()
    wd = float(optim_conf["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(groups, betas=tuple(optim_conf["betas"]), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, betas=tuple(optim_conf["betas"]), weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=float(optim_conf["momentum"]), nesterov=True, weight_decay=wd)
    raise ConfigError(f"optim.name {optim_conf['name']!r} is not one of adam, adamw, sgd")


def lr_lambda(schedule: Mapping[str, Any], total: int):
    """Multiplier of the initial learning rate after ``it`` iterations (LambdaLR)."""
    name = str(schedule["name"])
    warmup = int(schedule["warmup"])
    floor = float(schedule["min_lr_factor"])
    if name not in ("cosine", "constant", "step", "poly"):
        raise ConfigError(f"schedule.name {name!r} is not one of cosine, constant, step, poly")

    def factor(it: int) -> float:
        if warmup and it < warmup:
            return (it + 1) / warmup
        t = min(max(it - warmup, 0) / max(total - warmup, 1), 1.0)
        if name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        if name == "poly":
            return max((1 - t) ** float(schedule["power"]), floor)
        if name == "step":
            return float(schedule["gamma"]) ** (it // max(int(schedule["step_every"]), 1))
        return 1.0

    return factor


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class RunExistsError(ValueError):
    """The run folder already has a run and neither resume nor a new folder was asked for."""


def _comparable(recipe: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in recipe.items() if k not in _RESUMABLE_CHANGES}
    out["data"] = {k: v for k, v in recipe["data"].items() if k not in _DATA_RUNTIME_KEYS}
    return json.loads(json.dumps(out, default=str))


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = []
        for k in sorted(set(a) | set(b)):
            keys += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return keys
    return [] if a == b else [prefix.rstrip(".")]


class Trainer:
    """Train every stage of a recipe into a run folder.

    Args:
        recipe: a normalized recipe (`GliomaMTLLib.train.config.load_recipe`).
        run_dir: the run folder.
        resume: continue from ``run_dir/checkpoint.pt`` (the recipe must match the saved one
            except for the ``train`` section).
        reporter: a `GliomaMTLLib.progress.JsonLinesReporter` for ``--progress-json``, or None.
        quiet: no tqdm bar.
    """

    def __init__(self, recipe: Mapping[str, Any], run_dir: str | os.PathLike, resume: bool = False,
                 reporter: Any = None, quiet: bool = False) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.reporter = reporter
        self.quiet = quiet
        train = recipe["train"]
        want_cuda = train["device"] == "cuda" or (train["device"] == "auto" and torch.cuda.is_available())
        if train["device"] == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available")
        self.dist = init_distributed(train["backend"], want_cuda)
        if want_cuda:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest 3D convolutions once
        else:
            self.device = torch.device("cpu")
        amp = str(train["amp"])
        self.amp_dtype = None
        if self.device.type == "cuda" and amp in ("auto", "fp16"):
            self.amp_dtype = torch.float16
        elif amp == "bf16":
            self.amp_dtype = torch.bfloat16
        self.use_scaler = self.amp_dtype == torch.float16
        self.plan = schedule_plan(recipe)
        self.total_iterations = sum(n for *_, n in self.plan)
        self.log_path = self.run_dir / "train_log.jsonl"

    # ---------------------------------------------------------------- setup helpers

    def _log(self, entry: Mapping[str, Any]) -> None:
        if self.dist.is_main:
            with open(self.log_path, "a") as handle:
                handle.write(json.dumps(entry, default=float) + "\n")

    def _truncate_log(self, global_iteration: int) -> None:
        """On resume, drop log lines of iterations the checkpoint does not contain."""
        if not self.dist.is_main or not self.log_path.is_file():
            return
        keep = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if int(entry.get("iteration", 0)) <= global_iteration:
                    keep.append(line)
        write_text_atomic(self.log_path, "".join(k + "\n" for k in keep))

    def _write_run_json(self, status: str, global_iteration: int, elapsed: float, extra: Mapping[str, Any] | None = None) -> None:
        if not self.dist.is_main:
            return
        info = {
            "name": self.recipe["name"],
            "status": status,
            "iterations": global_iteration,
            "total_iterations": self.total_iterations,
            "seconds": round(elapsed, 1),
            "stages": list(self.recipe["stages"]),
            "hardware": hardware_summary(self.device, self.dist.world_size),
            "amp": str(self.amp_dtype) if self.amp_dtype else "fp32",
            **(extra or {}),
        }
        write_text_atomic(self.run_dir / "run.json", json.dumps(info, indent=2, default=str) + "\n")

    def _setup_run_dir(self) -> dict[str, Any] | None:
        """Create or check the run folder; returns the checkpoint to resume from (or None)."""
        state = None
        recipe_path = self.run_dir / "recipe.yaml"
        if self.resume:
            state = ckpt.load_checkpoint(self.run_dir)
            if recipe_path.is_file():
                from GliomaMTLLib.train.config import load_recipe

                saved = load_recipe(self.run_dir / "recipe.yaml")
                diff = _diff_keys(_comparable(saved), _comparable(self.recipe))
                if diff:
                    raise ConfigError(
                        f"--resume: the recipe differs from the one {self.run_dir} was started with at {diff}; "
                        "resume with the same recipe and overrides (only train.* may change)"
                    )
            if state is None and self.dist.is_main:
                print(f"[train] {self.run_dir}: no checkpoint yet; starting from the beginning", file=sys.stderr)
        elif (self.run_dir / ckpt.CHECKPOINT_NAME).exists() or (self.run_dir / "weights").exists():
            raise RunExistsError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or --out for a new folder"
            )
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(recipe_path, dump_recipe(self.recipe))
        _barrier(self.dist)
        return state

    # ---------------------------------------------------------------- main loop

    def run(self) -> dict[str, Any]:
        """Prepare the data (rank 0 first), then train every stage and phase; returns run.json's dict."""
        threads = torch.get_num_threads()
        if self.recipe["train"]["num_threads"]:
            torch.set_num_threads(int(self.recipe["train"]["num_threads"]))
        if self.device.type == "cpu":
            from GliomaMTLLib.nets.cpu import tune_malloc_for_large_tensors

            # 3D feature maps are freed and reallocated every iteration: keep them in the heap
            tune_malloc_for_large_tensors()
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict[str, Any]:
        from GliomaMTLLib.losses import build_loss
        from GliomaMTLLib.nets import build_network

        start_wall = time.time()
        state = self._setup_run_dir()
        if state is not None:
            self._truncate_log(int(state["global_iteration"]))
        elapsed_before = float(state["elapsed"]) if state is not None else 0.0

        if self.dist.is_main:
            report = prepare(self.recipe, self.run_dir, progress=self._prepare_progress, splits=("train",))
            if not self.quiet:
                print(f"[train] prepared data: {report.built} built, {report.reused} reused "
                      f"({report.seconds:.1f} s)", file=sys.stderr)
        _barrier(self.dist)
        folders = (prepare(self.recipe, self.run_dir, splits=("train",)).folders if not self.dist.is_main
                   else report.folders)

        seed = int(self.recipe["seed"])
        tasks = list(self.recipe["tasks"])
        global_it = 0
        done_stages = set(state["completed_stages"]) if state is not None else set()
        bar = None
        if self.dist.is_main and not self.quiet:
            from tqdm import tqdm

            bar = tqdm(total=self.total_iterations, initial=int(state["global_iteration"]) if state else 0,
                       file=sys.stderr, desc=self.recipe["name"], dynamic_ncols=True)
        status = "finished"
        try:
            for stage_index, (stage, conf) in enumerate(self.recipe["stages"].items()):
                stage_iters = sum(phase_iterations(self.recipe, p) for p in conf["phases"])
                if stage in done_stages:
                    global_it += stage_iters
                    continue
                torch.manual_seed(seed + 1000 * stage_index)
                net = build_network(conf["network"]).to(self.device)
                cases = load_dataset(self.recipe, folders[stage], splits=("train",))
                augment = Augmenter(conf["augment"], channels=len(self.recipe["sequences"]),
                                    sequences=self.recipe["sequences"])
                dist_regions = self._dist_regions(net)
                resume_here = state is not None and state["stage"] == stage
                if conf["init"] and not resume_here:
                    copied, fresh = ckpt.warm_start(net, ckpt.load_init_weights(conf["init"], stage))
                    self._log({"stage": stage, "event": "init", "from": str(conf["init"]),
                               "copied": len(copied), "fresh": fresh})
                    if not copied:
                        raise ValueError(f"stages.{stage}.init = {conf['init']!r}: no tensor matches the network "
                                         "(different architecture?)")
                if resume_here:
                    net.load_state_dict(state["model"])
                    ckpt.set_rng_state(state["rng"])  # after the seeded initialization above
                for phase_index, phase in enumerate(conf["phases"]):
                    n_iter = phase_iterations(self.recipe, phase)
                    start_it = 0
                    if resume_here:
                        if phase_index < int(state["phase_index"]):
                            global_it += n_iter
                            continue
                        if phase_index == int(state["phase_index"]):
                            start_it = int(state["iteration"])
                    loss_fn = build_loss(phase_loss_config(conf, phase), net.config.num_seg_classes).to(self.device)
                    phase_state = state if (resume_here and phase_index == int(state["phase_index"])) else None
                    if phase_state is not None and phase_state.get("loss"):
                        loss_fn.load_state_dict(phase_state["loss"])
                    phase_augment = augment
                    if phase["augment"] != conf["augment"]:
                        phase_augment = Augmenter(phase["augment"], channels=len(self.recipe["sequences"]),
                                                  sequences=self.recipe["sequences"])
                    weights = balanced_case_weights(cases, phase["balance"]) if phase["balance"] else None
                    sampler = Sampler(cases, phase["input"], phase_augment, tasks if phase["genotype"] else [],
                                      seed, stage_index, phase_index, dist_regions,
                                      binary=net.config.num_seg_classes == 2, case_weights=weights)
                    result = self._train_phase(
                        stage, stage_index, conf, phase, phase_index, n_iter, start_it, global_it, net, loss_fn,
                        sampler, phase_state, done_stages, elapsed_before, start_wall, bar,
                    )
                    if result is not None:  # stopped (train.stop_after) after `result` iterations of this phase
                        status = "stopped"
                        return self._finish(status, global_it + result, elapsed_before, start_wall)
                    global_it += n_iter
                resume_here = False
                if self.dist.is_main:
                    ckpt.save_stage_weights(self.run_dir, stage, net.state_dict(),
                                            {"stage": stage, "recipe": self.recipe["name"]})
                done_stages.add(stage)
                self._checkpoint(stage, stage_index, len(conf["phases"]) - 1, phase_iterations(self.recipe, conf["phases"][-1]),
                                 global_it, net, loss_fn, None, None, None, done_stages, elapsed_before, start_wall)
                state = None
        finally:
            if bar is not None:
                bar.close()
        return self._finish(status, global_it, elapsed_before, start_wall)

    def _finish(self, status: str, global_it: int, elapsed_before: float, start_wall: float) -> dict[str, Any]:
        elapsed = elapsed_before + time.time() - start_wall
        self._write_run_json(status, global_it, elapsed)
        _barrier(self.dist)
        info = {"status": status, "iterations": global_it, "seconds": elapsed, "run_dir": str(self.run_dir)}
        if self.reporter is not None and self.dist.is_main:
            if status == "finished":
                self.reporter.done(**info)
            else:
                self.reporter.log(f"stopped after {global_it} iterations (train.stop_after)", **info)
        if self.dist.initialized_here:
            dist.destroy_process_group()
        return info

    def _prepare_progress(self, fraction: float, message: str) -> None:
        if self.reporter is not None:
            self.reporter.log(message, stage="prepare", fraction=round(fraction, 4))

    @staticmethod
    def _dist_regions(net: torch.nn.Module) -> dict[str, tuple[int, ...]] | None:
        cfg = getattr(net, "config", None)
        if cfg is None or not getattr(cfg, "distance_decoder", False):
            return None
        from GliomaMTLLib.nets import default_regions

        regions = default_regions(cfg.num_seg_classes)
        return dict(list(regions.items())[: cfg.dist_channels])

    def _checkpoint(self, stage: str, stage_index: int, phase_index: int, iteration: int, global_it: int,
                    net: torch.nn.Module, loss_fn: torch.nn.Module, optimizer, scheduler, scaler,
                    done_stages: set[str], elapsed_before: float, start_wall: float) -> None:
        if not self.dist.is_main:
            return
        payload = {
            "stage": stage,
            "stage_index": stage_index,
            "phase_index": phase_index,
            "iteration": iteration,
            "global_iteration": global_it,
            "completed_stages": sorted(done_stages),
            "model": net.state_dict(),
            "loss": loss_fn.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": ckpt.rng_state(),
            "elapsed": elapsed_before + time.time() - start_wall,
            "recipe_fingerprint": fingerprint(_comparable(self.recipe)),
        }
        ckpt.save_checkpoint(self.run_dir, payload)
        self._write_run_json("running", global_it, payload["elapsed"])

    def _train_phase(self, stage: str, stage_index: int, conf: Mapping[str, Any], phase: Mapping[str, Any],
                     phase_index: int, n_iter: int, start_it: int, global_offset: int, net: torch.nn.Module,
                     loss_fn: torch.nn.Module, sampler: Sampler, state: Mapping[str, Any] | None,
                     done_stages: set[str], elapsed_before: float, start_wall: float, bar) -> int | None:
        """Train one phase from ``start_it``; returns None when it finished, or the number of
        iterations of this phase done when ``train.stop_after`` stopped it (checkpoint saved)."""
        train = self.recipe["train"]
        with_genotype = bool(phase["genotype"])
        optimizer = build_optimizer(net, loss_fn, conf["optim"], phase)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(conf["schedule"], n_iter))
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler) if self.device.type == "cuda" else None
        if state is not None and state.get("optimizer"):
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        model: torch.nn.Module = net
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Genotype heads can be unused in an iteration on one rank (a seg-only phase, or a batch
            # whose genotypes are all unknown, which the task weighting then leaves out entirely).
            has_heads = bool(getattr(getattr(net, "config", None), "tasks", None))
            model = DDP(net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                        find_unused_parameters=has_heads or bool(phase["freeze"]))
        local_batch = int(conf["batch_size"])
        global_batch = local_batch * self.dist.world_size
        slots = range(self.dist.rank * local_batch, (self.dist.rank + 1) * local_batch)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
        clip = float(conf["optim"]["grad_clip"] or 0)
        net.train()
        prefetch = Prefetcher(sampler, slots, start_it, n_iter, depth=int(train.get("prefetch") or 0),
                              workers=int(train.get("loader_workers") or 0), pin_memory=self.device.type == "cuda")
        try:
            return self._phase_loop(stage, stage_index, phase, phase_index, n_iter, start_it, global_offset, net,
                                    loss_fn, model, optimizer, scheduler, scaler, prefetch, params, loss_params,
                                    clip, with_genotype, global_batch, done_stages, elapsed_before, start_wall, bar)
        finally:
            prefetch.close()

    def _phase_loop(self, stage, stage_index, phase, phase_index, n_iter, start_it, global_offset, net, loss_fn,
                    model, optimizer, scheduler, scaler, prefetch, params, loss_params, clip, with_genotype,
                    global_batch, done_stages, elapsed_before, start_wall, bar) -> int | None:
        """The iterations of one phase (see `_train_phase`); logs data and compute time apart."""
        train = self.recipe["train"]
        log_every = max(int(train["log_every"]), 1)
        ckpt_every = int(train["checkpoint_every"] or 0)
        stop_after = train["stop_after"]
        t_last, since_last, cpu_last = time.time(), 0, time.process_time()
        t_data = t_compute = 0.0
        for it in range(start_it, n_iter):
            if stop_after is not None and global_offset + it >= int(stop_after):
                _barrier(self.dist)
                return it
            global_it = global_offset + it + 1
            t0 = time.perf_counter()
            batch = to_device(prefetch.get(it), self.device)
            t1 = time.perf_counter()
            autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                        else contextlib.nullcontext())
            with autocast:
                outputs = model(batch["image"], tabular=batch.get("tabular"), with_genotype=with_genotype)
            outputs = _to_float(outputs)
            if not with_genotype:
                batch = {**batch, "genotype": {}}
            total, parts = loss_fn(outputs, batch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None and self.use_scaler:
                scaler.scale(total).backward()
                self._sync_loss_grads(loss_params)
                scaler.unscale_(optimizer)
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                total.backward()
                self._sync_loss_grads(loss_params)
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
            scheduler.step()
            since_last += 1
            loss_value = float(total.detach())  # also waits for the device
            t_data += t1 - t0
            t_compute += time.perf_counter() - t1
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"{stage}/{phase['name']} iteration {it + 1}: the loss is {loss_value}")
            if bar is not None:
                bar.update(1)
                if it % log_every == 0:
                    bar.set_postfix(stage=stage, phase=phase["name"], loss=f"{loss_value:.4f}")
            if (it + 1) % log_every == 0 or it + 1 == n_iter:
                now = time.time()
                entry = {
                    "iteration": global_it, "stage": stage, "phase": phase["name"], "phase_iteration": it + 1,
                    "loss": loss_value, "parts": {k: float(v) for k, v in parts.items()},
                    "lr": [g["lr"] for g in optimizer.param_groups], "global_batch": global_batch,
                    "time": round(elapsed_before + now - start_wall, 3),
                    "sec_per_it": round((now - t_last) / since_last, 4),
                    # waiting for the batch (0 when prefetching keeps up) / forward+backward+step
                    "data_sec_per_it": round(t_data / since_last, 4),
                    "compute_sec_per_it": round(t_compute / since_last, 4),
                    # CPU seconds of the whole process (all threads): comparable on a busy machine
                    "cpu_sec_per_it": round((time.process_time() - cpu_last) / since_last, 4),
                }
                t_last, since_last, cpu_last = now, 0, time.process_time()
                t_data = t_compute = 0.0
                self._log(entry)
                if self.reporter is not None and self.dist.is_main:
                    self.reporter.progress(global_it / max(self.total_iterations, 1),
                                           f"{stage}/{phase['name']} {it + 1}/{n_iter} loss {loss_value:.4f}")
            stop = stop_after is not None and global_it >= int(stop_after)
            if (ckpt_every and (it + 1) % ckpt_every == 0) or it + 1 == n_iter or stop:
                self._checkpoint(stage, stage_index, phase_index, it + 1, global_it, net, loss_fn, optimizer,
                                 scheduler, scaler, done_stages, elapsed_before, start_wall)
        _barrier(self.dist)
        return None

    def _sync_loss_grads(self, params: list[torch.nn.Parameter]) -> None:
        """DDP averages the network's gradients; the loss's own parameters are outside it."""
        if not self.dist.enabled:
            return
        if not params:
            return
        # a task without labels in this rank's batch leaves its weight without a gradient; it is
        # averaged as 0 if another rank has one, and left untouched (as in one process) if none has
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        for p, any_grad in zip(params, has.tolist()):
            if not any_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.dist.world_size


def _to_float(outputs: Any) -> Any:
    """fp32 copies of autocast outputs, so the losses run in full precision."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, Mapping):
        return {k: _to_float(v) for k, v in outputs.items()}
    return outputs


def train(recipe: Mapping[str, Any], run_dir: str | os.PathLike, resume: bool = False, reporter: Any = None,
          quiet: bool = False) -> dict[str, Any]:
    """Train a recipe into ``run_dir`` (see `Trainer`)."""
    return Trainer(recipe, run_dir, resume=resume, reporter=reporter, quiet=quiet).run()
