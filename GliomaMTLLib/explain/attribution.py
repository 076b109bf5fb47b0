"""Integrated gradients of one scalar model output with respect to the input window (captum).

Baseline: the same window blurred, per sequence, inside the brain (a Gaussian of
:data:`DEFAULT_BLUR_MM` mm, normalized by the blurred brain mask so that the brain's edge stays
where it is; zero outside the brain). Why not zero (the brain's mean intensity in z-score space)?
Every convolution of the networks is followed by instance normalization, which rescales its
feature maps to unit variance: the networks are blind to the overall scale of the input, so
``f(a * x)`` hardly changes with ``a`` except near ``a = 0``, where a constant image makes every
normalization divide by its epsilon. On the straight path from zero nearly all of
``f(x) - f(0)`` then happens in a sliver next to ``a = 0`` that no quadrature with tens of steps
resolves (measured: relative delta 0.37-0.8 at 8-32 steps on a trained test network;
``scripts/bench_explain.py`` prints the same for the shipped model). A reference with the
image's own coarse contrast keeps every normalization well defined along the whole path, so the
integral converges in a few steps, and what it removes is what a reader asks about: the local
detail (the tumor's rim, core, edema border, mismatch, calcifications) at scales below the blur.
Outside the brain the input equals the baseline (both zero), so the attribution there is exactly
zero; so is that of a sequence missing from the case (filled with zeros). ``baseline="zero"``
remains available for comparison.

Completeness: the attributions of all voxels and sequences add up to ``f(x) - f(baseline)``; the
remainder, ``delta = sum(attributions) - (f(x) - f(baseline))`` (captum's convergence delta), is
the error of the path integral's quadrature and is reported with every explanation. Captum's
default Gauss-Legendre rule is used; ``scripts/bench_explain.py`` prints delta against the number
of steps, which justifies :data:`DEFAULT_STEPS`: on a full-size phantom with the shipped adult
model, 8 steps leave 0.7 % of the WT soft-volume change and 0.95 % of the idh probability change
(0.2.1, radiological-feature path) unexplained; 16 steps 0.4 % and 1.9 %, for twice the time;
32 steps 0.03 % and 0.15 %. Ask for more steps when the reported delta matters.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

#: Number of points on the path integral (Gauss-Legendre); see scripts/bench_explain.py.
DEFAULT_STEPS = 8
#: Points of the path run through the network together (captum's ``internal_batch_size``).
DEFAULT_BATCH = 4
#: Gaussian sigma (mm) of the default, blurred baseline.
DEFAULT_BLUR_MM = 6.0
#: Baselines offered: the blurred window (default) or zero in z-score space.
BASELINES = ("blur", "zero")
#: Above this ``|delta| / |f(x) - f(baseline)|`` the explanation carries a warning: the maps no
#: longer add up to the change they explain (seen for pediatric BRAF at 8 steps, README).
MAX_RELATIVE_DELTA = 0.25


def describe_baseline(kind: str, sigma_mm: float = DEFAULT_BLUR_MM) -> str:
    """Plain-words description of a baseline, for reports."""
    if kind == "zero":
        return "zero in z-score space (every sequence at the brain's mean intensity)"
    return (f"the window blurred inside the brain (Gaussian sigma {sigma_mm:g} mm per sequence, normalized by the "
            "blurred brain mask; zero outside the brain)")


def blurred_baseline(image: np.ndarray, brain: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """Normalized Gaussian blur of ``image`` (C, z, y, x) inside ``brain`` (z, y, x, bool); zero outside.

    Blurs ``image * brain`` and divides by the blurred mask, so voxels near the brain's edge average
    brain voxels only (scipy.ndimage.gaussian_filter, nearest-edge mode).
    """
    mask = brain.astype(np.float32)
    sigma = tuple(float(s) for s in sigma_vox)
    weight = ndimage.gaussian_filter(mask, sigma, mode="nearest")
    out = np.zeros(image.shape, dtype=np.float32)
    inside = brain & (weight > 1e-6)
    for c in range(image.shape[0]):
        blurred = ndimage.gaussian_filter(image[c] * mask, sigma, mode="nearest")
        out[c][inside] = blurred[inside] / weight[inside]
    return out


ProgressCallback = Callable[[float, str], None]


@dataclass
class Attribution:
    """Integrated gradients of one output on one input.

    Attributes:
        values: float32 (C, z, y, x), one map per input channel.
        output: f(x).
        baseline_output: f(baseline).
        delta: ``values.sum() - (output - baseline_output)``.
        steps: points on the path.
        baseline: float32 (C, z, y, x), the reference input.
    """

    values: np.ndarray
    output: float
    baseline_output: float
    delta: float
    steps: int
    baseline: np.ndarray

    @property
    def relative_delta(self) -> float:
        """``|delta| / |f(x) - f(baseline)|`` (inf when the output did not change)."""
        change = abs(self.output - self.baseline_output)
        return abs(self.delta) / change if change > 0 else float("inf") if self.delta else 0.0

    def completeness_warning(self) -> str | None:
        """A warning for the reader when the maps do not add up to the output change within
        :data:`MAX_RELATIVE_DELTA` (too few steps for this output), else None."""
        if self.relative_delta <= MAX_RELATIVE_DELTA:
            return None
        return (f"the heatmap's sum misses the explained change by {self.relative_delta:.0%} of it (convergence "
                f"delta {self.delta:.3g} at {self.steps} steps): read it with care, or rerun with --steps "
                f"{min(4 * self.steps, 256)}")


@contextmanager
def input_gradients_only(module: nn.Module) -> Iterator[None]:
    """Within the block the module's parameters need no gradient (only the input's is computed,
    which saves the weight-gradient work of the backward pass); restored afterwards."""
    params = list(module.parameters())
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def integrated_gradients(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    baseline: torch.Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    internal_batch_size: int = DEFAULT_BATCH,
    progress: ProgressCallback | None = None,
) -> Attribution:
    """Integrated gradients of ``fn`` (a (B, ...) -> (B,) scalar output) at ``x`` (1, C, z, y, x).

    Args:
        fn: differentiable in its input; evaluated on batches of up to ``internal_batch_size``
            points of the straight path from ``baseline`` to ``x``.
        x: the input, batch of one.
        baseline: the reference input, same shape (see the module docstring).
        steps: number of points (captum ``n_steps``, Gauss-Legendre).
        internal_batch_size: points per forward/backward pass.
        progress: ``(fraction, message)`` after each batch of points.

    Raises:
        ValueError: ``x`` is not a batch of one, or bad ``steps`` / ``internal_batch_size``.
    """
    from captum.attr import IntegratedGradients

    if x.ndim < 2 or x.shape[0] != 1:
        raise ValueError(f"integrated_gradients explains one input (batch of 1), got shape {tuple(x.shape)}")
    if steps < 1 or internal_batch_size < 1:
        raise ValueError(f"steps and internal_batch_size must be >= 1, got {steps} and {internal_batch_size}")
    if baseline.shape != x.shape:
        raise ValueError(f"baseline shape {tuple(baseline.shape)} differs from the input's {tuple(x.shape)}")
    baseline = baseline.to(x)
    n_batches = -(-steps // internal_batch_size)
    done = [0]

    def counted(batch: torch.Tensor) -> torch.Tensor:
        out = fn(batch)
        if out.ndim != 1 or out.shape[0] != batch.shape[0]:
            raise ValueError(f"the explained function must return one value per input, got shape {tuple(out.shape)}")
        if torch.is_grad_enabled() and batch.requires_grad:
            done[0] += 1
            if progress is not None:
                progress(min(done[0] / n_batches, 1.0), f"integrated gradients {min(done[0], n_batches)}/{n_batches}")
        return out

    ig = IntegratedGradients(counted)
    values = ig.attribute(x, baselines=baseline, n_steps=steps, internal_batch_size=internal_batch_size)
    with torch.no_grad():  # f(baseline), f(x) in one pass, for the delta and the report
        ends = counted(torch.cat([baseline, x])).double().cpu().numpy()
    values_np = values.detach().float().cpu().numpy()[0]
    total = float(values_np.astype(np.float64).sum())
    baseline_output, output = float(ends[0]), float(ends[1])
    return Attribution(values_np, output, baseline_output, total - (output - baseline_output), steps,
                       baseline.detach().float().cpu().numpy()[0])
