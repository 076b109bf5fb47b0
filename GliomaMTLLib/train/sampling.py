"""Training samples: where to cut (patch / tumor crop / whole volume) and how to augment.

Randomness is counter-based: sample ``slot`` of iteration ``it`` of phase ``(stage, phase)``
draws from ``numpy.random.default_rng([seed, stage, phase, it, slot])``, and that generator also
seeds the MONAI transforms. Consequences:

- resuming a run at iteration ``it`` replays exactly the samples an uninterrupted run would
  draw (the sampling state *is* the iteration counter stored in the checkpoint);
- DDP shards the stream by rank: with global batch ``B = world * b``, rank ``r`` computes slots
  ``r*b ... r*b+b-1`` of the same global batch a single process would draw, so 2 ranks x batch 1
  see the same samples, with the same augmentation, as 1 process x batch 2.

Cutting (nnU-Net's sampler, and the cascade's):

- ``patch``: a random patch; with probability ``fg_fraction`` (nnU-Net: 1/3) it is centred on a
  tumor voxel of a randomly chosen label present in the case, else anywhere in the volume;
- ``tumor_crop``: a crop centred on the tumor (the label's centre of mass) with uniform jitter of
  up to ``jitter_mm`` per axis: the genotype heads' input and the cascade's main stage;
- ``whole``: the whole brain-cropped volume centred in a fixed padded box (the localizer),
  jittered by up to ``jitter_mm``;
- ``resize``: the volume already resized to ``size`` during prepare (paper 001).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.utils.data

from GliomaMTLLib.preprocess import crop_around  # the cascade's inference crops with the same helper
from GliomaMTLLib.train.data import PreparedCase


def sample_rng(seed: int, stage: int, phase: int, iteration: int, slot: int) -> np.random.Generator:
    """The generator of one sample (see the module docstring)."""
    return np.random.default_rng([int(seed), int(stage), int(phase), int(iteration), int(slot)])


def _crop(array: np.ndarray, center: Sequence[float], size: Sequence[int], fill: float = 0) -> np.ndarray:
    return crop_around(np.asarray(array), tuple(float(c) for c in center), tuple(int(s) for s in size), fill=fill)[0]


def choose_center(case: PreparedCase, mode: str, size: Sequence[int], fg_fraction: float, jitter_mm: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Centre (z, y, x voxel indices) of the crop of one training sample."""
    shape = np.asarray(case.shape, dtype=float)
    size_arr = np.asarray(size, dtype=float)
    spacing_zyx = np.asarray(case.spacing[::-1], dtype=float)
    if mode == "patch":
        if case.fg and rng.random() < fg_fraction:
            value = sorted(case.fg)[int(rng.integers(len(case.fg)))]
            flat = case.fg[value][int(rng.integers(case.fg[value].size))]
            return np.asarray(np.unravel_index(flat, case.shape), dtype=float)
        lo = np.minimum(size_arr / 2, shape / 2)
        hi = np.maximum(shape - size_arr / 2, shape / 2)
        return lo + rng.random(3) * (hi - lo)
    jitter = (rng.random(3) * 2 - 1) * jitter_mm / spacing_zyx
    if mode == "tumor_crop":
        center = np.asarray(case.tumor_center, dtype=float) if case.tumor_center is not None else (shape - 1) / 2
        return center + jitter
    # whole: the volume centred in the fixed box; resize: the prepared volume already has the
    # input size, and the jitter is paper 001's random shift
    return (shape - 1) / 2 + jitter


# --------------------------------------------------------------------------------------------
# Augmentation (MONAI transforms; the few extras below are not in MONAI)
# --------------------------------------------------------------------------------------------


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor from a MONAI output (MetaTensor metadata tracking costs time on every op)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class _PerChannel:
    """Apply an independent copy of a MONAI array transform to each channel (e.g. a different gamma
    per sequence, as real scanners differ per sequence)."""

    def __init__(self, factory, channels: int) -> None:
        self.transforms = [factory() for _ in range(channels)]

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        out = []
        for c, transform in enumerate(self.transforms):
            transform.set_random_state(seed=(seed + 7919 * c) % (2**31))
            out.append(_plain(transform(image[c : c + 1])))
        return torch.cat(out)


class Augmenter:
    """Spatial (flips, small rotations/scales), intensity (scale, shift, gamma, noise, bias field,
    random monotone contrast curves) and sequence dropout for one stage: each channel zeroed with
    ``sequence_dropout``, or, with ``sequence_subset_prob``, all but one of ``sequence_subsets``
    (names of ``sequences``), so the network learns every subset a real cohort may bring.

    Intensity changes are applied inside the brain only: the background stays 0, as the
    preprocessing leaves it at inference.
    """

    def __init__(self, conf: Mapping[str, Any], channels: int, sequences: Sequence[str] | None = None) -> None:
        from monai.transforms import (
            Compose,
            RandAdjustContrast,
            RandAffined,
            RandBiasField,
            RandFlipd,
            RandGaussianNoise,
            RandHistogramShift,
            RandScaleIntensity,
            RandShiftIntensity,
        )

        self.conf = dict(conf)
        self.enabled = bool(conf["enabled"])
        self.channels = channels
        names = list(sequences) if sequences is not None else []
        self.subsets: list[list[int]] = []
        for subset in (conf.get("sequence_subsets") or []) if sequences is not None else []:  # needs the names
            unknown = [s for s in subset if s not in names]
            if unknown or not subset:
                raise ValueError(f"augment.sequence_subsets: {subset} names sequence(s) {unknown} "
                                 f"that are not inputs of this recipe ({names})")
            self.subsets.append([names.index(s) for s in subset])
        self.subset_prob = float(conf.get("sequence_subset_prob") or 0.0)
        spatial = [RandFlipd(keys=["image", "label"], prob=float(conf["flip_prob"]), spatial_axis=a) for a in range(3)]
        if float(conf["affine_prob"]) > 0:
            rot = float(np.deg2rad(conf["rotate_deg"]))
            spatial.append(
                RandAffined(
                    keys=["image", "label"], prob=float(conf["affine_prob"]), rotate_range=(rot, rot, rot),
                    scale_range=(float(conf["scale"]),) * 3, mode=("bilinear", "nearest"), padding_mode="zeros",
                )
            )
        self.spatial = Compose(spatial)
        intensity = []
        if float(conf["intensity_prob"]) > 0:
            intensity += [
                RandScaleIntensity(factors=float(conf["intensity_scale"]), prob=float(conf["intensity_prob"]), channel_wise=True),
                RandShiftIntensity(offsets=float(conf["intensity_shift"]), prob=float(conf["intensity_prob"]), channel_wise=True),
            ]
        if float(conf["noise_prob"]) > 0:
            intensity.append(RandGaussianNoise(prob=float(conf["noise_prob"]), std=float(conf["noise_std"])))
        self.intensity = Compose(intensity) if intensity else None
        gamma = tuple(float(g) for g in conf["gamma"])
        self.gamma = (_PerChannel(lambda: RandAdjustContrast(prob=float(conf["gamma_prob"]), gamma=gamma, retain_stats=True), channels)
                      if float(conf["gamma_prob"]) > 0 else None)
        self.contrast = (_PerChannel(lambda: RandHistogramShift(num_control_points=(4, 8), prob=float(conf["contrast_prob"])), channels)
                         if float(conf["contrast_prob"]) > 0 else None)
        coeff = float(conf["bias_field_coeff"])
        self.bias = (_PerChannel(lambda: RandBiasField(degree=3, coeff_range=(0.0, coeff), prob=float(conf["bias_field_prob"])), channels)
                     if float(conf["bias_field_prob"]) > 0 else None)

    def __call__(self, image: np.ndarray, labels: dict[str, np.ndarray], rng: np.random.Generator
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Augment one sample: image (C, z, y, x) and label maps (z, y, x) that move with it."""
        img = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
        lab = {k: torch.as_tensor(np.ascontiguousarray(v)).float()[None] for k, v in labels.items()}
        if not self.enabled:
            return img, {k: v[0] for k, v in lab.items()}
        seeds = rng.integers(0, 2**31 - 1, size=6)
        # spatial: the label maps ride along as channels of one "label" entry (nearest neighbour)
        keys = list(lab)
        stacked = torch.cat([lab[k] for k in keys]) if keys else torch.zeros((1,) + tuple(img.shape[1:]))
        self.spatial.set_random_state(seed=int(seeds[0]))
        out = self.spatial({"image": img, "label": stacked})
        img, moved = _plain(out["image"]), _plain(out["label"])
        lab = {k: moved[i : i + 1] for i, k in enumerate(keys)}
        brain = (img != 0).any(dim=0, keepdim=True)
        if self.contrast is not None:
            img = self.contrast(img, int(seeds[1]))
        if self.gamma is not None:
            img = self.gamma(img, int(seeds[2]))
        if self.bias is not None:  # multiplicative field on intensities shifted to be positive
            low = img.amin(dim=(1, 2, 3), keepdim=True)
            img = self.bias(img - low, int(seeds[3])) + low
        if self.intensity is not None:
            self.intensity.set_random_state(seed=int(seeds[4]))
            img = _plain(self.intensity(img))
        img = torch.where(brain, img, torch.zeros((), dtype=img.dtype))
        p_drop = float(self.conf["sequence_dropout"])
        if self.subsets and self.subset_prob > 0 and rng.random() < self.subset_prob:
            drop = np.ones(self.channels, dtype=bool)
            drop[self.subsets[int(rng.integers(len(self.subsets)))]] = False
            img[torch.as_tensor(drop)] = 0.0
        elif p_drop > 0 and self.channels > 1:
            drop = rng.random(self.channels) < p_drop
            if drop.all():
                drop[int(rng.integers(self.channels))] = False
            img[torch.as_tensor(drop)] = 0.0
        return img.float(), {k: v[0] for k, v in lab.items()}


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def balanced_case_weights(cases: Sequence[PreparedCase], task: str) -> np.ndarray:
    """Per-case drawing weights under which every known class of ``task`` is drawn equally often.

    Cases without a label for the task keep the average weight of the labelled ones (they still
    train the segmentation). Raises ValueError when no case has a label for the task.
    """
    labels = np.asarray([int(c.genotype.get(task, -1)) for c in cases])
    known = labels >= 0
    if not known.any():
        raise ValueError(f"class-balanced sampling for {task!r}: no training case has a {task} label")
    classes, counts = np.unique(labels[known], return_counts=True)
    per_class = {int(k): 1.0 / (len(classes) * n) for k, n in zip(classes, counts)}
    weights = np.asarray([per_class.get(int(y), 0.0) for y in labels])
    weights[~known] = weights[known].mean()
    return weights


class Sampler:
    """Draws training batches for one phase of one stage.

    Args:
        cases: the training cases (`GliomaMTLLib.train.data.load_dataset`).
        input_conf: the phase's ``input`` settings (mode, size, fg_fraction, jitter_mm).
        augment: an `Augmenter` (or None: no augmentation).
        tasks: genotype task names, in order.
        seed, stage_index, phase_index: parts of every sample's generator key.
        dist_regions: regions of the distance-map target (paper 004), or None.
        binary: the network predicts background vs whole tumor only (2 classes, papers 001 and
            003): labels become 1 wherever the reference has any tumor label.
        case_weights: probability of drawing each case (e.g. `balanced_case_weights`); None:
            every case equally often.
    """

    def __init__(self, cases: Sequence[PreparedCase], input_conf: Mapping[str, Any], augment: Augmenter | None,
                 tasks: Sequence[str], seed: int, stage_index: int, phase_index: int,
                 dist_regions: Mapping[str, Sequence[int]] | None = None, binary: bool = False,
                 case_weights: np.ndarray | None = None) -> None:
        if not cases:
            raise ValueError("no training cases to sample from (is the train split empty?)")
        self.cases = list(cases)
        self.case_weights = None
        if case_weights is not None:
            w = np.asarray(case_weights, dtype=np.float64)
            if w.shape != (len(self.cases),) or not np.all(w >= 0) or w.sum() <= 0:
                raise ValueError(f"case_weights must be {len(self.cases)} non-negative numbers, not all 0")
            self.case_weights = w / w.sum()
        self.conf = dict(input_conf)
        self.size = tuple(int(s) for s in input_conf["size"])
        self.augment = augment
        self.tasks = list(tasks)
        self.key = (int(seed), int(stage_index), int(phase_index))
        self.dist_regions = dist_regions
        self.binary = binary

    def sample(self, iteration: int, slot: int) -> dict[str, Any]:
        rng = sample_rng(*self.key, iteration, slot)
        if self.case_weights is None:
            case = self.cases[int(rng.integers(len(self.cases)))]
        else:
            case = self.cases[int(rng.choice(len(self.cases), p=self.case_weights))]
        center = choose_center(case, self.conf["mode"], self.size, float(self.conf["fg_fraction"]),
                               float(self.conf["jitter_mm"]), rng)
        image = _crop(case.image, center, self.size)
        labels = {}
        if case.label is not None:
            labels["label"] = _crop(case.label, center, self.size)
        if case.weak_label is not None:
            labels["weak_label"] = _crop(case.weak_label, center, self.size)
        if self.augment is not None:
            img_t, lab_t = self.augment(image, labels, rng)
        else:
            img_t = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
            lab_t = {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in labels.items()}
        zeros = torch.zeros(self.size, dtype=torch.int64)
        label = lab_t["label"].round().long() if "label" in lab_t else zeros
        if self.binary:
            label = (label > 0).long()
        weak = lab_t["weak_label"].round().long() if "weak_label" in lab_t else (label > 0).long()
        out = {
            "image": img_t,
            "label": label,
            "has_label": torch.tensor(case.label is not None),
            "weak_label": weak,
            # Only cases that really have a weak mask train the weak-label term; without this flag the
            # criterion would treat an unlabelled case's all-zero placeholder as "no tumor".
            "has_weak_label": torch.tensor(case.weak_label is not None),
            "genotype": {t: torch.tensor(case.genotype.get(t, -1), dtype=torch.int64) for t in self.tasks},
            "case_id": case.case_id,
        }
        if case.tabular is not None:
            out["tabular"] = torch.as_tensor(case.tabular, dtype=torch.float32)
        if self.dist_regions is not None:  # paper 004's regression target, on the augmented crop
            from GliomaMTLLib.losses import distance_map_target

            out["dist"] = torch.as_tensor(distance_map_target(label.numpy(), self.dist_regions,
                                                              spacing=case.spacing[::-1]))
            out["has_dist"] = torch.tensor(case.label is not None)
        return out

    def batch(self, iteration: int, slots: Sequence[int]) -> dict[str, Any]:
        return collate([self.sample(iteration, s) for s in slots])


class _IterationBatches(torch.utils.data.Dataset):
    """Batches of iterations ``start .. stop-1`` as a map-style dataset, for DataLoader workers."""

    def __init__(self, sampler: Sampler, slots: Sequence[int], start: int, stop: int) -> None:
        self.sampler, self.slots, self.start, self.stop = sampler, list(slots), int(start), int(stop)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sampler.batch(self.start + int(index), self.slots)


def _as_drawn(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def _one_thread_per_worker(_: int) -> None:
    # Each worker draws whole batches; torch's intra-op threads would only oversubscribe the cores.
    torch.set_num_threads(1)


class Prefetcher:
    """Draws the batches of iterations ``start .. stop-1`` ahead of use.

    Every batch is a pure function of its iteration (counter-based randomness, see the module
    docstring), so a run gives the same batches however they are drawn:

    - ``workers`` 0 and ``depth`` 0: in the calling thread;
    - ``workers`` 0, ``depth`` > 0: one background thread, the only user of the sampler (its MONAI
      transforms keep state). On a 2-core CPU the augmentation (numpy, MONAI, mostly outside the
      GIL) then overlaps the network's forward and backward pass;
    - ``workers`` > 0: a `torch.utils.data.DataLoader` with that many worker processes, each
      holding its own copy of the sampler, ``depth`` batches ahead per worker, in iteration
      order. For a GPU, whose step is faster than one core can augment a batch.
    """

    def __init__(self, sampler: Sampler, slots: Sequence[int], start: int, stop: int, depth: int = 2,
                 workers: int = 0, pin_memory: bool = False) -> None:
        self.sampler = sampler
        self.slots = list(slots)
        self.stop = int(stop)
        self.depth = max(int(depth), 0)
        self.workers = max(int(workers), 0)
        self.pin_memory = bool(pin_memory)
        self._pool = None
        self._loader = None
        self._pending: dict[int, Any] = {}
        self._next = int(start)
        if self.workers > 0 or self.depth > 0:
            self._start(int(start))

    def _start(self, iteration: int) -> None:
        self._next = iteration
        if self.workers > 0:
            loader = torch.utils.data.DataLoader(
                _IterationBatches(self.sampler, self.slots, iteration, self.stop), batch_size=None,
                shuffle=False, num_workers=self.workers, collate_fn=_as_drawn,
                prefetch_factor=max(self.depth, 1), pin_memory=self.pin_memory,
                worker_init_fn=_one_thread_per_worker)
            self._loader = iter(loader)
            return
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gliomamtl-prefetch")
        self._fill()

    def _fill(self) -> None:
        while self._next < self.stop and len(self._pending) < self.depth:
            self._pending[self._next] = self._pool.submit(self.sampler.batch, self._next, self.slots)
            self._next += 1

    def get(self, iteration: int) -> dict[str, Any]:
        """The batch of ``iteration`` (iterations must be asked for in increasing order)."""
        if self._loader is not None:
            if iteration != self._next:  # asked out of order: restart the workers from here
                self.close()
                self._start(iteration)
            self._next += 1
            return next(self._loader)
        if self._pool is None:
            return self.sampler.batch(iteration, self.slots)
        future = self._pending.pop(iteration, None)
        if future is None:  # asked out of order: drop the queue and restart from here
            self.close()
            self._start(iteration)
            future = self._pending.pop(iteration)
        batch = future.result()
        self._fill()
        return batch

    def close(self) -> None:
        """Stop the workers (pending batches are dropped)."""
        self._loader = None  # the last reference: the iterator shuts its worker processes down
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
            self._pending = {}

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (dicts of genotype labels stacked per task)."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], Mapping):
            out[key] = {k: torch.stack([v[k] for v in values]) for k in values[0]}
        else:
            out[key] = values
    return out


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif isinstance(value, Mapping):
            out[key] = {k: v.to(device, non_blocking=True) for k, v in value.items()}
        else:
            out[key] = value
    return out
