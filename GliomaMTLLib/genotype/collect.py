"""Run a bundle on phantoms and keep what its genotype path sees: the main-network crop, the soft
segmentation of that crop, its location maps, and the labels. One compressed ``.npz`` per case.

This is the data the feature path is fitted on: the model's *own* predicted segmentation, never
the reference labels (the reference label crop is stored only for diagnostics).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from GliomaMTLLib.genotype.context import crop_context
from GliomaMTLLib.inference.predictor import Predictor
from GliomaMTLLib.io.atomic import atomic_path
from GliomaMTLLib.preprocess import CropBox, crop
from GliomaMTLLib.synth.appearance import CLASSES

#: Seeds of the feature-path phantoms; far from the CNN recipes' seeds (5000 + 0/100000/200000).
SPLIT_SEEDS = {"train": 1_000_000, "train_shift": 1_050_000, "val": 1_100_000, "test": 1_200_000,
               "transfer": 1_300_000, "texture_shift": 1_400_000}
#: Rendering settings per split: ``transfer`` uses a contrast spread training never saw (1.8);
#: ``train_shift`` (optional development phantoms) one between it and the networks' training (1.4);
#: ``texture_shift`` renders every tissue with white matter's texture amplitude, so no class is
#: smoother or rougher than another (a generator without class textures; held out like ``transfer``).
SPLIT_RENDER: dict[str, dict[str, Any]] = {"train": {}, "train_shift": {"contrast_spread": 1.4}, "val": {},
                                           "test": {}, "transfer": {"contrast_spread": 1.8},
                                           "texture_shift": {"texture_like": {c: "wm" for c in CLASSES}}}


class CapturingPredictor(Predictor):
    """A :class:`Predictor` that runs only the stages the genotype needs and keeps their window.

    :meth:`genotype_window_of` preprocesses, localizes and runs the main stage (no resampling to the
    input grid, no post-processing: the genotype does not use them), and returns ``image``
    (C, z, y, x), ``probs`` (L, z, y, x), ``logits``, ``box`` (the window on the main preprocessed
    grid, :attr:`Predictor.genotype_window`), ``pre`` and ``core_lesions`` (separate tumor cores of
    the main stage, as the Predictor counts them); None when no genotype window was run.
    """

    _pending: dict[str, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The cache's ``cnn_logits_*`` are the network's own heads (the CNN comparison); a bundle's
        # fitted feature path is what a refit replaces, so its logits are not kept as "CNN" logits.
        self.task_logits.paths = type(self.task_logits.paths)()

    @property
    def wants_genotype_window(self) -> bool:
        # a segmentation-only network gets its genotype path fitted on these windows
        return True

    def genotype_window_of(self, case: Any) -> dict[str, Any] | None:
        from GliomaMTLLib.preprocess import preprocess

        pre = preprocess(case, self.sequences, self.main.preprocess)
        self.task_logits.set_context(pre=pre)
        tumor_box = None
        if self.localizer is not None:
            pre_loc = preprocess(case, self.sequences, self.localizer.preprocess)
            tumor_box = self._localize(pre_loc, pre, self.device)
        self.genotype_window = None
        self._pending = {}
        probs, *_, found = self._run_main(pre, tumor_box, self.device, False)
        pending, self._pending = self._pending, None
        box = self.genotype_window
        if not pending or box is None or not found:
            return None
        if not np.array_equal(crop(pre.image, box, 0.0), pending["image"]):
            raise RuntimeError("the captured genotype window does not match Predictor.genotype_window")
        return {**pending, "box": box, "pre": pre, "core_lesions": self._core_lesions(probs, pre)}

    def _forward(self, stage, image, device, with_genotype):  # type: ignore[override]
        probs, logits = super()._forward(stage, image, device, with_genotype)
        if stage == "main" and with_genotype and self._pending is not None:
            self._pending.update(image=image, probs=probs, logits=logits)
        return probs, logits


@dataclass(frozen=True)
class PhantomSpec:
    split: str
    index: int

    @property
    def seed(self) -> int:
        return SPLIT_SEEDS[self.split] + self.index

    @property
    def case_id(self) -> str:
        return f"{self.split}-{self.index:04d}"


def interleaved(counts: dict[str, int]) -> list[PhantomSpec]:
    """Specs of all splits, interleaved so that any prefix holds every split in proportion."""
    total = sum(counts.values())
    items = []
    for split, n in counts.items():
        items += [((i + 0.5) / n, PhantomSpec(split, i)) for i in range(n)]
    items.sort(key=lambda t: (t[0], t[1].split))
    assert len(items) == total
    return [spec for _, spec in items]


def collect_case(predictor: CapturingPredictor, spec: PhantomSpec, cohort: str, out: Path) -> dict[str, Any]:
    """Generate one phantom, predict it, write ``out`` (npz); returns a summary row."""
    from GliomaMTLLib.synth.generator import synthesize

    t0 = time.perf_counter()
    result = synthesize(spec.seed, cohort=cohort, case_id=spec.case_id, **SPLIT_RENDER[spec.split])
    case = result.case
    t_gen = time.perf_counter() - t0
    cap = predictor.genotype_window_of(case)
    t_pred = time.perf_counter() - t0 - t_gen
    row: dict[str, Any] = {"case_id": spec.case_id, "split": spec.split, "seed": spec.seed,
                           "subtype": result.subject.subtype, **{k: v for k, v in case.genotype.items()},
                           "age": round(float(result.subject.age), 2),
                           "survival_days": case.survival_days, "event": int(bool(case.event)),
                           "found": cap is not None, "gen_s": round(t_gen, 2), "predict_s": round(t_pred, 2),
                           "generator_version": _generator_version()}
    arrays: dict[str, np.ndarray] = {}
    if cap is not None:
        pre = cap["pre"]
        spacing = tuple(float(s) for s in pre.geometry.spacing[::-1])
        ctx = crop_context(pre.brain_mask, spacing, cap["box"])  # type: ignore[arg-type]
        arrays = {"image": cap["image"].astype(np.float16), "probs": cap["probs"].astype(np.float16),
                  "depth": ctx.depth.astype(np.float16), "position": ctx.position.astype(np.float16),
                  "spacing_zyx": np.asarray(spacing, np.float32),
                  **({"ref_label": _reference_crop(case, pre, cap["box"])} if case.label is not None else {}),
                  **{f"cnn_logits_{t}": np.asarray(v, np.float32) for t, v in cap["logits"].items()}}
        row["core_lesions"] = cap["core_lesions"]
        row["pred_wt_ml_window"] = float((1.0 - cap["probs"][0]).sum() * np.prod(spacing) / 1000.0)
    row["ref_wt_ml"] = float(np.count_nonzero(case.label) * case.geometry.voxel_volume_ml) if case.label is not None else None
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, meta=np.asarray(json.dumps(row)), **arrays)
    return row


def _generator_version() -> int | None:
    from GliomaMTLLib.synth import generator

    return getattr(generator, "GENERATOR_VERSION", None)


def _reference_crop(case: Any, pre: Any, box: CropBox) -> np.ndarray:
    """The reference label map on the genotype window (diagnostics only; never a fit input)."""
    from GliomaMTLLib.preprocess.pipeline import preprocess_label

    return crop(preprocess_label(case.label, pre.record), box, 0).astype(np.uint8)


def collect(model: str, cohort: str, counts: dict[str, int], cache: Path, log: Any = print,
            worker: int = 0, n_workers: int = 1) -> list[dict[str, Any]]:
    """Collect every missing case of ``counts`` into ``cache/<case_id>.npz`` (resumable);
    worker ``w`` of ``n_workers`` takes every ``n_workers``-th case."""
    import torch

    torch.set_num_threads(1)
    predictor = CapturingPredictor(model, device="cpu", num_threads=1)
    rows = []
    specs = interleaved(counts)
    for i, spec in enumerate(specs):
        out = cache / f"{spec.case_id}.npz"
        if i % n_workers != worker or out.exists():
            continue
        row = collect_case(predictor, spec, cohort, out)
        rows.append(row)
        log(json.dumps({"i": i, "n": len(specs), **row}))
    return rows


def load_meta(path: Path) -> dict[str, Any]:
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


def iter_cache(cache: Path, split: str | None = None) -> Iterable[Path]:
    for p in sorted(cache.glob("[!.]*.npz")):
        if split is None or p.name.startswith(split + "-"):
            yield p
