"""Are a case's sequences registered to each other? Brain-mask agreement on the reference grid.

Every sequence, once on the reference grid, is reduced to a *head mask*: the voxels clearly above
its background (:func:`foreground_mask`: above ``background + FOREGROUND_LEVEL x (p99 - background)``,
background being the most common value on the volume's faces, with interior holes filled, so dark
necrosis, cysts or ventricles count as inside). Two co-registered sequences of one patient have
nearly the same mask; a sequence that is rotated or shifted against the others does not.
Agreement is the Dice of each sequence's mask with the reference sequence's mask, counted only
where both sequences have data (a sequence with a smaller field of view is not penalised for it).

- Dice below :data:`GROSS_DICE`: refused (:class:`MisregistrationError`), because the networks
  would see the tumor at different places in different sequences and put labels outside the brain.
- Dice below :data:`MILD_DICE`: a warning naming the sequence and the Dice.
- Masks that are nested (one holds the other, :data:`NESTED_CONTAINMENT`): not misregistration but
  different skull stripping or cropping; a warning that says so, never a refusal.

Measured (rotate the FLAIR file's direction cosines about the volume's corner, a
typical wrong transform, or shift its origin, then read the case): synthetic phantoms
(:func:`GliomaMTLLib.synth.generate_case`, small grid, seeds 0-2): co-registered 1.00; rotated 3
degrees 0.91-0.92, 10 degrees 0.74-0.75, 20 degrees 0.54; shifted 4 mm 0.94, 8 mm 0.90-0.91. The
ellipsoid test phantom (:func:`GliomaMTLLib.inference.fixtures.phantom_case`, 40x44x36 voxels):
3 degrees 0.93, 5 degrees 0.88, 10 degrees 0.76. So a 10-degree error is refused and a 3-5 degree
one is a warning. See ``Testing/test_bad_input.py``.

The masks are computed on a regular subsample of about :data:`SAMPLE_VOXELS` voxels, so this takes
milliseconds on a full-size case.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from scipy import ndimage

from GliomaMTLLib.io.validation import CaseInputError

#: Fraction of the (p99 - background) range above the background that counts as head/brain.
FOREGROUND_LEVEL = 0.05
#: Dice of head masks below which a sequence is refused as misregistered.
GROSS_DICE = 0.80
#: Dice of head masks below which a warning is given.
MILD_DICE = 0.92
#: Intersection over the smaller mask above which two masks are nested (skull stripping differs), not shifted.
NESTED_CONTAINMENT = 0.97
#: Voxels of the subsample the masks are computed on.
SAMPLE_VOXELS = 300_000


class MisregistrationError(CaseInputError):
    """A sequence is not registered to the reference sequence (its head mask disagrees)."""


def subsample_step(shape: tuple[int, ...], target: int = SAMPLE_VOXELS) -> int:
    """Stride per axis giving at most about ``target`` voxels."""
    return max(1, int(np.ceil((int(np.prod(shape)) / target) ** (1.0 / 3.0))))


def background_value(array: np.ndarray) -> float:
    """The most common value on the six faces of the volume (the background of a skull-stripped or
    offset volume), else the minimum when the faces hold no repeated value (noise)."""
    faces = np.concatenate([
        array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel(),
        array[:, :, 0].ravel(), array[:, :, -1].ravel(),
    ])
    values, counts = np.unique(faces, return_counts=True)
    if counts.max() >= 0.2 * faces.size:
        return float(values[np.argmax(counts)])
    return float(np.percentile(faces, 5))


def foreground_mask(array: np.ndarray, fill_holes: bool = True) -> np.ndarray:
    """Head/brain mask of one volume: clearly above its background, interior holes filled."""
    background = background_value(array)
    top = float(np.percentile(array, 99))
    if top <= background:
        return np.zeros(array.shape, dtype=bool)
    mask = array > background + FOREGROUND_LEVEL * (top - background)
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def mask_overlaps(
    images: Mapping[str, np.ndarray],
    reference: str,
    fields_of_view: Mapping[str, np.ndarray] | None = None,
) -> dict[str, tuple[float, float]]:
    """For each sequence other than the reference: (Dice, containment) of its head mask with the reference
    sequence's, within their common field of view. Containment is the intersection over the smaller mask:
    near 1 when one mask holds the other (one sequence skull-stripped, the other not), whatever the Dice.

    Args:
        images: sequence -> array, all on the reference grid.
        reference: key of the reference sequence.
        fields_of_view: sequence -> boolean mask of the voxels that sequence's file covers (after
            resampling onto the reference grid); a sequence not listed covers the whole grid.
    """
    step = subsample_step(images[reference].shape)
    sub = (slice(None, None, step),) * 3
    ref_mask = foreground_mask(images[reference][sub])
    out: dict[str, tuple[float, float]] = {}
    for key, array in images.items():
        if key == reference:
            continue
        mask, ref = foreground_mask(array[sub]), ref_mask
        if fields_of_view is not None and key in fields_of_view:
            inside = fields_of_view[key][sub]
            mask, ref = mask & inside, ref & inside
        smaller = min(int(np.count_nonzero(mask)), int(np.count_nonzero(ref)))
        contained = 1.0 if smaller == 0 else int(np.count_nonzero(mask & ref)) / smaller
        out[key] = (dice(mask, ref), contained)
    return out


def registration_agreement(
    images: Mapping[str, np.ndarray],
    reference: str,
    fields_of_view: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Dice of each sequence's head mask with the reference sequence's, within their common field of view
    (see :func:`mask_overlaps`)."""
    return {key: d for key, (d, _) in mask_overlaps(images, reference, fields_of_view).items()}


def check_registration(
    images: Mapping[str, np.ndarray],
    reference: str,
    sources: Mapping[str, str | os.PathLike] | None = None,
    fields_of_view: Mapping[str, np.ndarray] | None = None,
) -> list[str]:
    """Refuse grossly misregistered sequences; return one warning per mildly misregistered one.

    Raises:
        MisregistrationError: naming the sequence's file, the reference file and the Dice.
    """
    sources = sources or {}
    warnings: list[str] = []
    for key, (value, contained) in mask_overlaps(images, reference, fields_of_view).items():
        what = f"{key} ({sources[key]})" if key in sources else key
        ref = f"{reference} ({sources[reference]})" if reference in sources else reference
        if value < MILD_DICE and contained >= NESTED_CONTAINMENT:
            warnings.append(
                f"{what} and {ref} cover different extents: one head mask holds the other (Dice {value:.2f}); "
                "is one skull-stripped and the other not, or one cropped? Give every sequence the same "
                "skull stripping"
            )
            continue
        if value < GROSS_DICE:
            raise MisregistrationError(
                f"{what} is not registered to {ref}: their head masks overlap with Dice {value:.2f} "
                f"(co-registered sequences give above {MILD_DICE:.2f}); register every sequence to the same "
                f"patient space (e.g. rigid registration to {reference}) and check the image orientation in "
                f"the file headers",
                [p for p in (sources.get(key), sources.get(reference)) if p is not None],
            )
        if value < MILD_DICE:
            warnings.append(
                f"{what} may be slightly misregistered to {ref} (head-mask Dice {value:.2f}, co-registered "
                f"sequences give above {MILD_DICE:.2f}); labels near the brain surface may be off"
            )
    return warnings
