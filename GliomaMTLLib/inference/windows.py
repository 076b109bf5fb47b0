"""Overlapping windows blended with a Gaussian weight: the result of MONAI's
``sliding_window_inference(..., mode="gaussian")`` without importing MONAI.

Why not MONAI here: ``import monai`` loads every MONAI subpackage (about 3 s on the 2-core CPU),
more than the whole sliding window costs, and a large tumor makes ``predict`` slide its main
window. Window placement (``_get_scan_interval`` / ``dense_patch_slices``), the importance map
(``compute_importance_map``: a Gaussian with sigma = 0.125 x window, floored at its smallest value)
and the zero padding of a volume smaller than the window follow MONAI 1.x, and
``Testing/test_inference_windows.py`` checks that the two agree.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

SIGMA_SCALE = 0.125  # MONAI's default for mode="gaussian"


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis of ``size`` voxels (``size >= window``): every
    ``int(window * (1 - overlap))`` voxels, the last one flush with the end."""
    if window >= size:
        return [0]
    step = max(int(window * (1.0 - overlap)), 1)
    count = next(i for i in range(size) if i * step + window >= size) + 1
    return [min(i * step, size - window) for i in range(count)]


def importance_map(window: Sequence[int]) -> torch.Tensor:
    """(z, y, x) float32 weights of one window: a separable Gaussian centred on the window's
    middle, sigma = 0.125 x window per axis, floored at its smallest value (and at 1e-3)."""
    w = np.ones(tuple(int(s) for s in window))
    for axis, length in enumerate(window):
        r = np.arange(int(length)) - (int(length) - 1) / 2.0
        shape = [1] * len(window)
        shape[axis] = int(length)
        w = w * np.exp(r**2 / (-2.0 * (length * SIGMA_SCALE) ** 2)).reshape(shape)
    return torch.from_numpy(np.maximum(w, max(float(w.min()), 1e-3)).astype(np.float32))


def sliding_window_probs(
    x: torch.Tensor,
    window: Sequence[int],
    predict: Callable[[torch.Tensor], torch.Tensor],
    overlap: float = 0.25,
    batch_size: int = 1,
) -> torch.Tensor:
    """Blend ``predict`` over overlapping windows of ``x`` (1, C, z, y, x).

    Args:
        x: one volume, batch dimension 1.
        window: (z, y, x) window size.
        predict: windows (B, C, *window) -> outputs (B, L, *window), e.g. softmax probabilities.
        overlap: fraction of a window shared with its neighbour along each axis.
        batch_size: windows per ``predict`` call.

    Returns:
        (1, L, z, y, x) float32: the Gaussian-weighted mean of the windows' outputs at each voxel.
        An axis shorter than the window is zero-padded on both sides first, then cropped back.

    Raises:
        ValueError: when ``x`` is not (1, C, z, y, x) or the window is not three positive sizes.
    """
    if x.ndim != 5 or x.shape[0] != 1:
        raise ValueError(f"sliding_window_probs: x must be (1, C, z, y, x); got {tuple(x.shape)}")
    roi = tuple(int(v) for v in window)
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"sliding_window_probs: window must be three positive sizes; got {tuple(window)}")
    size = tuple(int(v) for v in x.shape[2:])
    pad_before = [max(r - s, 0) // 2 for r, s in zip(roi, size)]
    pad_after = [max(r - s, 0) - b for r, s, b in zip(roi, size, pad_before)]
    if any(pad_before) or any(pad_after):
        # F.pad takes (x_before, x_after, y_before, y_after, z_before, z_after)
        pads = [v for axis in (2, 1, 0) for v in (pad_before[axis], pad_after[axis])]
        x = torch.nn.functional.pad(x, pads)
    padded = tuple(int(v) for v in x.shape[2:])
    starts = [(z, y, xx) for z in window_starts(padded[0], roi[0], overlap)
              for y in window_starts(padded[1], roi[1], overlap)
              for xx in window_starts(padded[2], roi[2], overlap)]
    weight = importance_map(roi).to(x.device)
    total: torch.Tensor | None = None
    norm = torch.zeros(padded, dtype=torch.float32, device=x.device)
    per_call = max(int(batch_size), 1)
    for i in range(0, len(starts), per_call):
        chunk = starts[i:i + per_call]
        batch = torch.cat([x[:, :, z:z + roi[0], y:y + roi[1], c:c + roi[2]] for z, y, c in chunk])
        out = predict(batch).float()
        if total is None:
            total = torch.zeros((1, out.shape[1], *padded), dtype=torch.float32, device=x.device)
        for j, (z, y, c) in enumerate(chunk):
            total[0, :, z:z + roi[0], y:y + roi[1], c:c + roi[2]] += out[j] * weight
            norm[z:z + roi[0], y:y + roi[1], c:c + roi[2]] += weight
    assert total is not None
    result = total / norm
    crop = tuple(slice(b, b + s) for b, s in zip(pad_before, size))
    return result[(slice(None), slice(None), *crop)]
