"""`TaskLogits`: the one differentiable function "main-network input window -> task logits".

Every genotype probability the product shows and every explanation of it go through this module:
:class:`~GliomaMTLLib.inference.predictor.Predictor` turns the main stage's outputs into genotype
probabilities with :meth:`TaskLogits.combine` and :meth:`TaskLogits.probabilities`, and
:mod:`GliomaMTLLib.explain` differentiates :meth:`TaskLogits.forward` (or
:meth:`TaskLogits.region_scores`) with integrated gradients. A new way of computing a genotype
(a "path") is therefore added here once and is explained without touching ``explain``.

Contract
--------
Input ``x``: float tensor (B, C, z, y, x), the main network's input window exactly as the
Predictor feeds it: the model's sequences in ``model.json`` order, each z-scored over the brain
(0 = the brain's mean intensity, also the value outside the brain and in padding), on the main
stage's preprocessed grid, a ``crop_size`` window centred on the tumor.

Outputs:

- ``forward(x) -> {task: (B, K) logits}``: **raw logits, temperature not applied**.
  ``probabilities(logits) -> {task: (B, K)}`` applies the calibration, ``softmax(logits / T)``
  with the bundle's per-task temperature ``T`` (1 when the bundle has none); that is the shipped
  genotype probability.
- ``region_scores(x) -> {region: (B,)}``: the region's soft volume in the window, i.e. the sum over
  the window's voxels of P(region) (softmax label probabilities summed over the region's labels:
  WT = NCR+ED+ET, TC = NCR+ET, ET), in voxels of the main grid.

Genotype paths (how to extend)
------------------------------
The network's own heads give the first logits. Each :class:`GenotypePath` in ``paths`` then runs
in order as ``path(x, seg_logits, logits) -> {task: (B, K) logits}`` and its result replaces (or
adds) those tasks' logits; it sees the input window, the main network's segmentation logits
(B, L, z, y, x) and the logits so far, so it may, e.g., compute radiological features from the soft
segmentation and apply a logistic regression, or blend its logits with the head's. A path must be
an ``nn.Module`` differentiable in ``x`` and ``seg_logits`` (anything non-differentiable, such as
the window's position in the brain, is a constant of the window: pass it through the path's own
state). A path declared in ``model.json`` as ``"genotype_paths": [{"kind": KIND, ...}]`` is built by
the builder registered with :func:`register_path` under ``KIND``.

The Predictor may compute the network part with ONNX Runtime (no gradients) and hands its outputs
to :meth:`TaskLogits.combine`; explanations always run the PyTorch network (:meth:`forward`), whose
outputs equal ONNX Runtime's to about 1e-4.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

Logits = dict[str, torch.Tensor]

#: ``model.json`` key listing the genotype paths applied after the network's heads.
PATHS_KEY = "genotype_paths"


class GenotypePath(nn.Module):
    """A source of task logits on top of the network's heads (see the module docstring).

    Subclasses set ``tasks`` (the tasks they produce) and implement :meth:`forward`.
    """

    tasks: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor, seg_logits: torch.Tensor, logits: Mapping[str, torch.Tensor]) -> Logits:
        """Logits (B, K) for some of ``self.tasks``, from the window ``x``, the segmentation logits and
        the logits so far (do not modify ``logits`` in place)."""
        raise NotImplementedError


PathBuilder = Callable[[Mapping[str, Any], Mapping[str, Sequence[str]]], GenotypePath]
_PATH_BUILDERS: dict[str, PathBuilder] = {}


def register_path(kind: str) -> Callable[[PathBuilder], PathBuilder]:
    """Decorator registering ``builder(spec, tasks) -> GenotypePath`` for ``model.json`` paths of ``kind``
    (``spec`` is the path's ``model.json`` entry, ``tasks`` the bundle's task -> class names)."""

    def decorate(builder: PathBuilder) -> PathBuilder:
        _PATH_BUILDERS[kind] = builder
        return builder

    return decorate


@contextmanager
def exact_gradients(net: nn.Module) -> Iterator[None]:
    """Within the block, gradients flow through the training-time gradient stops of ``net``
    (``MultiTaskNet.detach_summaries``: the seg-summary and seg-gate inputs of the genotype heads),
    so that they are the true gradients of its outputs; the outputs themselves do not change."""
    before = getattr(net, "detach_summaries", None)
    if before is None:
        yield
        return
    net.detach_summaries = False  # type: ignore[assignment]
    try:
        yield
    finally:
        net.detach_summaries = before  # type: ignore[assignment]


class TaskLogits(nn.Module):
    """The main network plus the model's genotype paths: window -> task logits / region scores.

    Args:
        net: the main stage's network (``MultiTaskNet``: ``net(x, with_genotype=, with_dist=)``
            returns ``{"seg": (B, L, ...), "genotype": {task: (B, K)}}``), or a function building it
            on first use.
        tasks: task -> class names (``model.json`` ``"tasks"``).
        temperatures: task -> calibration temperature (missing tasks: 1).
        regions: region name -> label values summed into it (e.g. ``{"WT": (1, 2, 3), ...}``).
        paths: genotype paths applied in order after the network's heads.
    """

    def __init__(
        self,
        net: nn.Module | Callable[[], nn.Module],
        tasks: Mapping[str, Sequence[str]],
        temperatures: Mapping[str, float] | None = None,
        regions: Mapping[str, Sequence[int]] | None = None,
        paths: Sequence[GenotypePath] = (),
    ) -> None:
        super().__init__()
        # A factory defers building the network until a gradient is needed: the Predictor's ONNX
        # path only calls combine() and probabilities(), which do not use it.
        self._net_factory = None if isinstance(net, nn.Module) else net
        self.net: nn.Module | None = net if isinstance(net, nn.Module) else None
        self.tasks = {str(t): tuple(c) for t, c in tasks.items()}
        self.temperatures = {t: float((temperatures or {}).get(t, 1.0)) for t in self.tasks}
        self.regions = {str(r): tuple(int(v) for v in m) for r, m in (regions or {}).items()}
        self.paths = nn.ModuleList(paths)
        #: tasks whose logits a path calibrates itself: never re-scaled by a temperature (engineer G)
        self.path_calibrated = {t for path in self.paths for t in getattr(path, "calibrated_tasks", ()) if t in self.tasks}
        for t in self.path_calibrated:
            self.temperatures[t] = 1.0

    def set_context(self, **context: Any) -> None:
        """Hand the non-differentiable context of a case or window to every path that takes it
        (``path.set_context(**context)``), e.g. ``pre=`` the main stage's ``Preprocessed`` and
        ``window=`` the genotype window's ``CropBox`` (the radiological-feature path needs both)."""
        for path in self.paths:
            if hasattr(path, "set_context"):
                path.set_context(**context)

    @property
    def network(self) -> nn.Module:
        """The main network (built now if it was given as a factory)."""
        if self.net is None:
            assert self._net_factory is not None
            self.net = self._net_factory()
        return self.net

    def combine(self, x: torch.Tensor, seg_logits: torch.Tensor, head_logits: Mapping[str, torch.Tensor]) -> Logits:
        """Task logits from the network's outputs on ``x``: the heads' logits, then each path in order."""
        logits: Logits = dict(head_logits)
        for path in self.paths:
            logits.update(path(x, seg_logits, logits))
        return {t: logits[t] for t in self.tasks if t in logits}

    def forward(self, x: torch.Tensor) -> Logits:
        """``{task: (B, K) raw logits}`` (temperature not applied) of the window ``x`` (B, C, z, y, x)."""
        net = self.network
        with exact_gradients(net):
            out = net(x, with_genotype=bool(self.tasks), with_dist=False)
        return self.combine(x, out["seg"], out.get("genotype", {}))

    def probabilities(self, logits: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
        """The shipped genotype probabilities: ``softmax(logits / T)`` per task, (B, K) each."""
        return {
            t: torch.softmax(torch.as_tensor(v).float() / self.temperatures.get(t, 1.0), dim=-1)
            for t, v in logits.items()
        }

    def region_scores(self, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``{region: (B,)}``: sum over the window of P(region) (its soft volume in main-grid voxels).

        Raises:
            KeyError: a requested region the model does not have.
        """
        names = list(self.regions) if names is None else list(names)
        unknown = [n for n in names if n not in self.regions]
        if unknown:
            raise KeyError(f"unknown region(s) {unknown}; this model has {list(self.regions)}")
        net = self.network
        with exact_gradients(net):
            seg = net(x, with_genotype=False, with_dist=False)["seg"]
        probs = torch.softmax(seg.float(), dim=1)
        return {n: probs[:, list(self.regions[n])].sum(dim=1).flatten(1).sum(dim=1) for n in names}


def build_task_logits(
    meta: Mapping[str, Any],
    net: nn.Module | Callable[[], nn.Module],
    tasks: Mapping[str, Sequence[str]],
    temperatures: Mapping[str, float] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
) -> TaskLogits:
    """The :class:`TaskLogits` of a bundle: its main network plus the paths of ``meta[PATHS_KEY]``.

    Raises:
        ValueError: a path of an unknown kind, naming the known ones.
    """
    paths = []
    if meta.get(PATHS_KEY):
        import GliomaMTLLib.genotype.path  # noqa: F401  (registers "radiological_features/1")
    for i, spec in enumerate(meta.get(PATHS_KEY) or []):
        kind = spec.get("kind") if isinstance(spec, Mapping) else None
        if kind not in _PATH_BUILDERS:
            raise ValueError(
                f"model.json {PATHS_KEY}[{i}]: unknown kind {kind!r}; known kinds: {sorted(_PATH_BUILDERS) or 'none'}"
            )
        paths.append(_PATH_BUILDERS[kind](spec, tasks))
    return TaskLogits(net, tasks, temperatures, regions, paths)
