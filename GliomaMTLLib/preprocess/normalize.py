"""Intensity normalization: per-sequence z-score over brain voxels, background kept at exactly 0.

Raw MR intensities differ by orders of magnitude between sites (see ``REAL_STATS.md``), so each
sequence is standardized over its brain voxels only: the zero background of skull-stripped BraTS
scans would otherwise dominate mean and standard deviation. MONAI's ``NormalizeIntensity``
(``nonzero=True, channel_wise=True``) does the same over each channel's own non-zero voxels; here
the mask is shared by all channels (the brain), so a dark-but-brain voxel of one sequence is
still counted, and the arrays are NumPy without a torch round trip.
"""

from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("zscore", "none")


def zscore(image: np.ndarray, mask: np.ndarray, *, inplace: bool = False, eps: float = 1e-8) -> np.ndarray:
    """Standardize each channel of ``image`` (C, z, y, x) to mean 0, std 1 over ``mask``; set outside to 0.

    A channel that is constant over the mask (std at most ``eps`` times its mean magnitude, or
    ``eps`` below 1) is only centred: all its brain voxels become 0.

    Args:
        image: float array (C, z, y, x).
        mask: boolean array (z, y, x); the voxels the statistics are taken over.
        inplace: overwrite ``image`` (must be floating point) instead of returning a new float32 array.

    Returns:
        the normalized array (``image`` itself when ``inplace``).

    Raises:
        ValueError: if shapes do not match or the mask is empty.
    """
    if image.ndim != 4 or image.shape[1:] != mask.shape:
        raise ValueError(f"zscore expects image (C, z, y, x) and mask (z, y, x), got {image.shape} and {mask.shape}")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("zscore: the brain mask is empty; cannot normalize an all-background image")
    if inplace:
        if not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f"zscore(inplace=True) needs a floating point image, got {image.dtype}")
        out = image
    else:
        out = image.astype(np.float32, copy=True)
    for channel in out:
        # float64 for the statistics and the shift: with float32 alone a large offset (raw values
        # around 1e4) over a small spread would leave a visible bias in the mean.
        values = channel[mask].astype(np.float64)
        mean = values.mean()
        std = values.std()
        values -= mean
        if std > eps * max(abs(mean), 1.0):
            values /= std
        channel[...] = 0
        channel[mask] = values
    return out
