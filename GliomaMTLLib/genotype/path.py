"""The radiological-feature path as a :class:`~GliomaMTLLib.inference.task_logits.GenotypePath`.

Declared in ``model.json`` as one entry of ``"genotype_paths"`` with ``"kind":
"radiological_features/1"`` (layout in :mod:`GliomaMTLLib.genotype.model`). It replaces the CNN
heads' logits of the tasks it has a regression for.

Context: the features need the window's place in the brain, which the window itself does not
show. The Predictor hands it over with ``TaskLogits.set_context(pre=<main Preprocessed>)`` once per
case and ``set_context(window=<CropBox>)`` before each genotype window; explanations run after a
prediction of the same case and reuse it. Without a context the path raises (it never guesses a
location).

After each forward, :attr:`RadiologicalPath.last_features` holds the (B, F) features and
:func:`ood_warning` compares them with the training phantoms.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from GliomaMTLLib.genotype.context import CropContext, crop_context
from GliomaMTLLib.genotype.model import KIND, FeatureGenotypePath
from GliomaMTLLib.inference.task_logits import GenotypePath, register_path

#: The warning predict shows (and the reason the genotype is withheld) when the OOD score fires.
OOD_WARNING = "input unlike the training data"


class RadiologicalPath(GenotypePath):
    """Soft segmentation + window + location -> calibrated logits (see the module docstring).

    Its logits are already calibrated (``calibrated_tasks``): :class:`TaskLogits` applies no
    temperature to them.
    """

    def __init__(self, spec: Mapping[str, Any], tasks: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        sequences = spec.get("sequences") or ("t1n", "t1c", "t2w", "t2f")
        self.model = FeatureGenotypePath(spec, sequences)
        unknown = [t for t in self.model.tasks if t not in tasks]
        if unknown:
            raise ValueError(f"genotype path of kind {KIND!r} has tasks {unknown} the model does not declare ({list(tasks)})")
        for t, reg in self.model.tasks.items():
            if tuple(reg.classes) != tuple(tasks[t]):
                raise ValueError(f"genotype path task {t!r} classes {reg.classes} differ from the model's {list(tasks[t])}")
        self.tasks = tuple(self.model.tasks)
        self.calibrated_tasks = self.tasks
        self._brain: np.ndarray | None = None
        self._spacing: tuple[float, float, float] | None = None
        self._context: CropContext | None = None
        self.last_features: torch.Tensor | None = None
        self.absent_sequences: list[str] = []
        self.age: float | None = None

    # -------------------------------------------------------------- context
    def set_context(self, pre: Any = None, window: Any = None, age: float | None = None, **_: Any) -> None:
        """``pre``: the main stage's ``Preprocessed`` of a new case (forgets the window and the age);
        ``window``: the genotype window's ``CropBox`` on that grid; ``age``: the patient's age in
        years, when known (used if the path has an age model covering it, :attr:`age_used`)."""
        if pre is not None or age is not None:
            self.age = None if age is None else float(age)
        if pre is not None:
            image = np.asarray(pre.image)
            # a sequence the case lacks is an all-zero channel (preprocess fill_missing)
            self.absent_sequences = [s for i, s in enumerate(self.model.sequences) if i < len(image) and not image[i].any()]
            self._brain = np.asarray(pre.brain_mask, bool)
            self._spacing = tuple(float(s) for s in pre.geometry.spacing[::-1])  # type: ignore[assignment]
            self._context = None
            self.last_features = None
        if window is not None:
            if self._brain is None or self._spacing is None:
                raise RuntimeError("set_context(window=...) before set_context(pre=...)")
            self._context = crop_context(self._brain, self._spacing, window)

    def set_crop_context(self, context: CropContext) -> None:
        """Use a stored context directly (fitting, tests)."""
        self._context = context

    # -------------------------------------------------------------- forward
    def features(self, x: torch.Tensor, seg_logits: torch.Tensor) -> torch.Tensor:
        """(B, F) features of windows ``x`` (B, C, z, y, x) with segmentation logits (B, L, z, y, x)."""
        ctx = self._context
        if ctx is None:
            raise RuntimeError(
                "the radiological-feature genotype path needs the window's position in the brain: "
                "call TaskLogits.set_context(pre=..., window=...) (Predictor.predict does) first"
            )
        if tuple(ctx.depth.shape) != tuple(x.shape[2:]):
            raise RuntimeError(f"context window {tuple(ctx.depth.shape)} does not match the input window {tuple(x.shape[2:])}")
        probs = torch.softmax(seg_logits.float(), dim=1)
        depth = torch.as_tensor(ctx.depth, dtype=torch.float32, device=x.device)
        position = torch.as_tensor(ctx.position, dtype=torch.float32, device=x.device)
        feats = [self.model.features(probs[b], x[b].float(), depth, position, ctx.spacing_zyx) for b in range(x.shape[0])]
        return torch.stack(feats)

    def forward(self, x: torch.Tensor, seg_logits: torch.Tensor, logits: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = self.features(x, seg_logits)
        self.last_features = feats.detach()
        return {t: v.to(x.dtype) for t, v in self.model.task_logits(feats, self.age).items()}

    @property
    def age_used(self) -> bool:
        """Whether the current case's age enters the logits."""
        return self.model.uses_age(self.age)

    def age_note(self) -> str | None:
        """Why a given age is not used (None when it is, or when no age was given)."""
        if self.age is None or self.age_used:
            return None
        if self.model.age is None:
            return f"patient age {self.age:g} not used: this model's genotype has no age input"
        return (f"patient age {self.age:g} not used: outside the training range "
                f"{self.model.age.low:g}-{self.model.age.high:g} years (genotype from the images alone)")

    def ood_distance(self) -> float:
        """Mahalanobis distance of the last window's features (first of the batch); NaN if unknown."""
        if self.last_features is None:
            return float("nan")
        return self.model.ood_distance(self.last_features[0])


@register_path(KIND)
def _build(spec: Mapping[str, Any], tasks: Mapping[str, Sequence[str]]) -> RadiologicalPath:
    return RadiologicalPath(spec, tasks)


def ood_warning(task_logits: Any, core_lesions: int | None = None) -> str | None:
    """Why the last prediction's genotype must be withheld, or None: the first radiological path of
    ``task_logits`` that lacked a sequence its features read, that sees more separate tumor cores
    (``core_lesions``, GliomaMTLLib.inference.lesions) than its limit (at most 5% of its development
    phantoms exceed it), or whose features lie beyond its training-set threshold ("input unlike the
    training data")."""
    for path in getattr(task_logits, "paths", ()):
        if isinstance(path, RadiologicalPath) and path.absent_sequences:
            return (f"genotype withheld: its features need {', '.join(path.model.sequences)}; "
                    f"missing {', '.join(path.absent_sequences)}")
        limit = path.model.max_core_lesions if isinstance(path, RadiologicalPath) else None
        if limit is not None and core_lesions is not None and core_lesions > limit:
            return (f"{OOD_WARNING} ({core_lesions} separate tumor cores; 95% of the training phantoms have at most "
                    f"{limit}, and several ring-enhancing lesions suggest metastases): genotype withheld")
        if isinstance(path, RadiologicalPath) and path.model.ood is not None:
            d = path.ood_distance()
            if np.isfinite(d) and d > path.model.ood.threshold:
                return (f"{OOD_WARNING} (genotype feature distance {d:.1f} > {path.model.ood.threshold:.1f}, "
                        "the 95th percentile of validation phantoms): genotype withheld")
    return None


def age_status(task_logits: Any, age: float | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(task -> card status of its age-aware regression, for the tasks where the case's ``age``
    was used; notes on an age given but not used) over the radiological paths of ``task_logits``."""
    status: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    paths = [p for p in getattr(task_logits, "paths", ()) if isinstance(p, RadiologicalPath)]
    if age is not None and not paths:
        notes.append(f"patient age {age:g} not used: this model's genotype has no age input")
    for path in paths:
        note = path.age_note()
        if note:
            notes.append(note)
        elif path.age_used and path.model.age is not None:
            for task in path.model.age.tasks:
                entry = dict(path.model.age.status.get(task) or {"available": True, "reason": None})
                entry["reason"] = f"with patient age {path.age:g}" + (f": {entry['reason']}" if entry.get("reason") else "")
                status[task] = entry
    return status, notes
