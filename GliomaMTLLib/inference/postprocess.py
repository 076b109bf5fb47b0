"""Post-processing of a predicted label map, region definitions and tumor volumes.

Four rules, rules 1-3 in millilitres so that they do not depend on the voxel size:

0. Nothing outside the brain: tumor labels are removed where the reference sequence (the one
   whose grid the output is written on) shows background connected to the edge of the volume
   (:func:`outside_brain`): labels in empty space around a skull-stripped brain are never written,
   whatever a misregistered or unusual input made the network do. Dark regions enclosed by the
   brain (necrosis, cysts, ventricles) count as inside.
1. Small spurious components: connected components (26-connectivity) of the whole tumor smaller
   than ``min_component_ml`` are removed (set to background), but the largest component is
   always kept, so a small solitary tumor is never erased.
2. Small enhancing tumor (paper 004, Huang et al.): "if the total number of predicted enhanced
   tumors is less than 500 [voxels, at 1 mm], we replace all enhanced tumor voxels with tumor
   cores". Here: if the predicted ET volume is below ``et_min_ml`` (default 0.5 ml = 500 voxels
   of 1 mm^3), every ET voxel becomes NCR. In BraTS scoring an empty ET prediction on a case
   without ET scores Dice 1, and a few false-positive ET voxels score 0.

3. Unsure enhancing tumor: if the ET left after rule 2 is smaller than ``et_confidence_max_ml`` and
   the network's mean ET probability over its voxels is below ``et_min_confidence``, every ET voxel
   becomes NCR. On held-out phantoms, tumors without any enhancement got 0.2-9 ml of ET at a mean
   probability of about 0.6-0.8, real enhancing tumor (small ones included) 0.75-0.98; the
   all-or-nothing case-level call is what a reader makes too ("does this tumor enhance?"). Large
   ET is never removed by it, whatever its probability.

Rules run in this order, so ET voxels in removed components do not count towards rules 2 and 3. Rules 2
and 3 apply only when the model's label set has NCR=1 and ET=3; rule 3 only when the ET probability
is given.
Probability maps are never post-processed: they are the network's output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from GliomaMTLLib.io.registration import FOREGROUND_LEVEL, background_value, subsample_step
from GliomaMTLLib.labels import ET, NCR
from GliomaMTLLib.nets import default_regions
from GliomaMTLLib.preprocess import bounding_box


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing settings (``model.json`` ``"postprocess"``; any key may be overridden).

    Attributes:
        et_min_ml: ET volume (ml) below which ET is relabelled NCR; 0 disables the rule.
        min_component_ml: whole-tumor components smaller than this (ml) are removed, except the
            largest one; 0 disables the rule.
        et_min_confidence: mean ET probability (0-1) below which ET smaller than
            ``et_confidence_max_ml`` is relabelled NCR; 0 disables the rule.
        et_confidence_max_ml: ET at least this large (ml) is kept whatever its mean probability.
    """

    et_min_ml: float = 0.5
    min_component_ml: float = 0.1
    et_min_confidence: float = 0.0
    et_confidence_max_ml: float = 10.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                unit = "a probability" if f.name == "et_min_confidence" else "ml"
                raise ValueError(f"postprocess setting {f.name} must be a number >= 0 ({unit}), got {value!r}")
            object.__setattr__(self, f.name, float(value))
        if self.et_min_confidence > 1.0:
            raise ValueError(f"postprocess setting et_min_confidence is a probability in [0, 1], got {self.et_min_confidence:g}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "PostprocessConfig":
        """Build from a ``model.json`` ``"postprocess"`` dict; missing keys take their defaults.

        Raises:
            ValueError: naming an unknown key or a bad value.
        """
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown postprocess setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def updated(self, overrides: Mapping[str, Any] | None) -> "PostprocessConfig":
        """A copy with ``overrides`` (None values ignored) applied."""
        merged = dataclasses.asdict(self)
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return PostprocessConfig.from_dict(merged)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def unsure_et(self, mean_probability: float | None, et_ml: float, confidence: float | None = None) -> bool:
        """Whether rule 3 relabels an ET of ``et_ml`` ml with this mean probability (None: no ET) as
        NCR, at ``confidence`` (default :attr:`et_min_confidence`)."""
        threshold = self.et_min_confidence if confidence is None else confidence
        return mean_probability is not None and et_ml < self.et_confidence_max_ml and mean_probability < threshold


def regions_for_labels(labels: Mapping[int, str], declared: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """Tumor regions (name -> label values summed into it) of a model's label set.

    Args:
        labels: the model's foreground labels (value -> name), ``model.json`` ``"labels"``.
        declared: ``model.json`` ``"regions"`` if the bundle declares its own.

    Returns:
        ``declared`` if given; else :func:`GliomaMTLLib.nets.default_regions`: the BraTS regions
        WT/TC/ET for the internal label set {1 NCR, 2 ED, 3 ET}, otherwise a single region ``WT`` =
        every foreground label (e.g. a pediatric whole-tumor model declaring ``{1: "tumor"}``).

    Raises:
        ValueError: if a declared region names a label the model does not have.
    """
    values = sorted(int(v) for v in labels)
    if declared:
        out = {str(name): tuple(int(v) for v in members) for name, members in declared.items()}
        for name, members in out.items():
            unknown = [v for v in members if v not in values]
            if unknown:
                raise ValueError(f"region {name} uses label(s) {unknown} that are not in the model's labels {values}")
        return out
    # Seg channel c is label c, so the label set is 1..n-1 of an n-class head.
    return default_regions(max(values, default=0) + 1)


def _largest_first_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(component id per voxel, voxel count per id with index 0 = background)."""
    components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return components, np.bincount(components.ravel())


def remove_small_components(labels: np.ndarray, min_voxels: float) -> tuple[np.ndarray, int]:
    """Set whole-tumor components with fewer than ``min_voxels`` voxels to 0, keeping the largest.

    Works on the bounding box of the tumor only. ``labels`` is modified in place.

    Returns:
        (labels, number of components removed).
    """
    tumor = labels > 0
    if min_voxels <= 0 or not tumor.any():
        return labels, 0
    box = bounding_box(tumor, 1)
    components, sizes = _largest_first_components(tumor[box])
    sizes[0] = 0
    keep = sizes >= min_voxels
    keep[int(np.argmax(sizes))] = True
    keep[0] = True  # background stays as it is
    removed = int((~keep[1:]).sum())
    if removed:
        sub = labels[box]
        sub[~keep[components]] = 0
    return labels, removed


#: Voxels of the coarse grid on which background connected to the volume's edge is found.
_OUTSIDE_SAMPLE_VOXELS = 1_000_000


def outside_brain(image: np.ndarray, box: tuple[slice, ...] | None = None) -> np.ndarray:
    """Voxels of ``image`` (of its part ``box``, default all) that are background connected to the edge of
    the volume (outside the head/brain).

    Background: at most ``FOREGROUND_LEVEL`` of the way from the background value (the most common value
    on the volume's faces) to the 99th percentile. Connectivity to the edge is found on a coarse grid
    (about a million voxels) and applied to the full-resolution background voxels, so a dark region
    enclosed by tissue (necrosis, cyst, ventricle) is inside.
    """
    box = box if box is not None else tuple(slice(0, n) for n in image.shape)
    background = background_value(image)
    step = subsample_step(image.shape, _OUTSIDE_SAMPLE_VOXELS)
    sub = (slice(None, None, step),) * 3
    top = float(np.percentile(image[sub], 99))
    part = image[box]
    if top <= background:
        return np.zeros(part.shape, dtype=bool)
    level = background + FOREGROUND_LEVEL * (top - background)
    coarse_dark = image[sub] <= level
    coarse_outside = coarse_dark & ~ndimage.binary_fill_holes(~coarse_dark)
    # each full-resolution voxel of the box takes the value of the coarse voxel it was sampled with
    index = np.ix_(*[np.arange(s.start, s.stop) // step for s in box])
    return (part <= level) & coarse_outside[index]


def restrict_to_brain(labels: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, int]:
    """Set tumor labels outside the brain of ``image`` (:func:`outside_brain`) to 0, in place; only the
    tumor's bounding box is looked at in full resolution.

    Returns:
        (labels, number of voxels removed).
    """
    tumor = labels > 0
    if not tumor.any():
        return labels, 0
    box = bounding_box(tumor)
    drop = outside_brain(image, box) & tumor[box]
    removed = int(np.count_nonzero(drop))
    if removed:
        labels[box][drop] = 0
    return labels, removed


def apply_postprocess(
    labels: np.ndarray,
    label_values: Mapping[int, str] | list[int],
    voxel_volume_ml: float,
    config: PostprocessConfig,
    brain_image: np.ndarray | None = None,
    et_probability: np.ndarray | None = None,
    et_probability_box: tuple[slice, ...] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Apply the rules (in place) to an internal label map on a grid of ``voxel_volume_ml`` voxels.

    Args:
        brain_image: the reference sequence on the same grid; when given, labels outside its brain
            are removed first (rule 0).
        et_probability: the network's ET probability on the same grid, or on its part
            ``et_probability_box`` (labels outside the box must be background); rule 3 needs it.

    Returns:
        (labels, notes): one sentence per rule that changed something.
    """
    notes: list[str] = []
    if brain_image is not None:
        labels, dropped = restrict_to_brain(labels, brain_image)
        if dropped:
            notes.append(
                f"removed {dropped * voxel_volume_ml:.2f} ml of tumor labels outside the brain (in the background of "
                "the reference sequence); if that is much, check the registration and skull stripping of the inputs"
            )
    if config.min_component_ml > 0:
        min_voxels = config.min_component_ml / voxel_volume_ml
        labels, removed = remove_small_components(labels, min_voxels)
        if removed:
            notes.append(
                f"removed {removed} small tumor component(s) under {config.min_component_ml:g} ml (kept the largest)"
            )
    values = set(int(v) for v in label_values)
    if config.et_min_ml > 0 and {NCR, ET} <= values:
        et = labels == ET
        n_et = int(np.count_nonzero(et))
        et_ml = n_et * voxel_volume_ml
        if 0 < n_et and et_ml < config.et_min_ml:
            labels[et] = NCR
            notes.append(
                f"enhancing tumor of {et_ml:.3f} ml (< {config.et_min_ml:g} ml) relabelled as necrotic core"
            )
    if config.et_min_confidence > 0 and et_probability is not None and {NCR, ET} <= values:
        confidence, et_ml = et_mean_probability(labels, et_probability, et_probability_box, voxel_volume_ml)
        if config.unsure_et(confidence, et_ml):
            labels[labels == ET] = NCR
            notes.append(
                f"enhancing tumor of {et_ml:.2f} ml with a mean probability of {confidence:.2f} "
                f"(< {config.et_min_confidence:g}) relabelled as necrotic core: the network is unsure this tumor enhances"
            )
    return labels, notes


def et_mean_probability(labels: np.ndarray, et_probability: np.ndarray, box: tuple[slice, ...] | None,
                        voxel_volume_ml: float) -> tuple[float | None, float]:
    """(mean ET probability over the ET voxels of ``labels``, or None without ET; ET volume in ml).

    ``et_probability`` lies on ``labels``' grid, or on its part ``box``; ET outside the box counts
    with probability 0.

    Raises:
        ValueError: when ``et_probability`` does not have the box's (or the grid's) shape.
    """
    box = box if box is not None else tuple(slice(0, n) for n in labels.shape)
    inside = labels[box]
    if inside.shape != et_probability.shape:
        raise ValueError(f"ET probability of shape {et_probability.shape} does not match the label box {inside.shape}")
    n_et = int(np.count_nonzero(labels == ET))
    if n_et == 0:
        return None, 0.0
    total = float(et_probability[inside == ET].sum(dtype=np.float64))
    return total / n_et, n_et * voxel_volume_ml


def volumes_ml(
    labels: np.ndarray,
    label_names: Mapping[int, str],
    regions: Mapping[str, tuple[int, ...]],
    voxel_volume_ml: float,
) -> dict[str, float]:
    """Volumes in ml: each region (``WT``, ``TC``, ``ET``) then each label by name.

    Volume = voxel count x ``voxel_volume_ml`` (the input grid's voxel volume).
    """
    # tumor voxels only: bincount of the whole uint8 map would first copy it as int64 (8 bytes a voxel)
    counts = np.bincount(labels[labels != 0], minlength=max([*label_names, 0]) + 1)
    out: dict[str, float] = {}
    for name, members in regions.items():
        out[name] = float(sum(int(counts[v]) for v in members)) * voxel_volume_ml
    for value, name in sorted(label_names.items()):
        out[name] = float(counts[value]) * voxel_volume_ml
    return out
