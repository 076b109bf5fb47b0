"""The composed preprocessing of a case, and its exact inverse back to the input grid.

Forward (:func:`preprocess`): reorient to a canonical axis order (lossless) -> resample to the
model's spacing (linear, skipped when the spacing already matches) -> crop to the brain's bounding
box -> z-score each sequence over brain voxels. What is needed to undo the spatial part is kept in
a :class:`SpatialRecord`; :func:`preprocess_label` sends a label map on the case grid the same way
(nearest neighbour) for training, and :func:`to_input_grid` brings any output of the network
(labels, probabilities, heatmaps) back onto the exact grid of the input sequences.

Like TorchIO's invertible transforms, the inverse is recorded rather than guessed; unlike MONAI's
``Invertd`` it needs no metadata dictionaries or torch tensors, which keeps the Slicer side and
the CLI free of MONAI's transform machinery.

Note on exactness: a label map sent forward and back is unchanged when no resampling happens (any
direction, any spacing: reorientation and cropping are lossless) and when each input voxel splits
into a whole number of new voxels per axis (spacing = input spacing / integer): every new voxel
then takes the label of the input voxel it lies in, and each input voxel centre is a new voxel
centre (odd split) or lies midway between two new voxels of that same input voxel (even split, a
rounding tie that cannot go wrong). With any other spacing it cannot be exact: going to a coarser
grid merges several input voxels into one, and with a non-integer ratio some input voxels are the
nearest neighbour of no new voxel at all, so their label is gone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.preprocess.crop import CropBox, bounding_box, crop, crop_geometry, uncrop
from GliomaMTLLib.preprocess.normalize import NORMALIZATIONS, zscore
from GliomaMTLLib.preprocess.spatial import (
    Kind,
    Reorientation,
    orientation_matrix,
    physical_to_continuous_index,
    reorient_geometry,
    reorientation_for,
    resample,
    resampled_geometry,
)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a model wants its input (stored in ``model.json`` under ``preprocessing``).

    Attributes:
        spacing: target voxel size in mm along the canonical x, y, z axes; None keeps the native
            spacing (no resampling at all).
        orientation: canonical axis order as a DICOM-style code; "LPS" = identity direction cosines.
        crop_to_brain: crop to the bounding box of the brain (voxels where any sequence is non-zero).
        crop_margin_mm: extra margin around the brain box, in mm.
        normalize: "zscore" (per sequence over brain voxels, background 0) or "none".
    """

    spacing: tuple[float, float, float] | None = None
    orientation: str = "LPS"
    crop_to_brain: bool = True
    crop_margin_mm: float = 0.0
    normalize: str = "zscore"

    def __post_init__(self) -> None:
        if self.spacing is not None:
            spacing = tuple(float(s) for s in self.spacing)
            if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
                raise ValueError(
                    f"preprocessing spacing must be 3 positive numbers (x, y, z) in mm, got {self.spacing!r}"
                )
            object.__setattr__(self, "spacing", spacing)
        orientation_matrix(self.orientation)  # validates
        object.__setattr__(self, "orientation", self.orientation.upper())
        if not (math.isfinite(self.crop_margin_mm) and self.crop_margin_mm >= 0):
            raise ValueError(f"crop_margin_mm must be >= 0, got {self.crop_margin_mm!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``model.json``)."""
        out = asdict(self)
        out["spacing"] = list(self.spacing) if self.spacing is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessConfig":
        """Inverse of :meth:`to_dict`; missing keys take their defaults.

        Raises:
            ValueError: on an unknown key or an invalid value.
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown preprocessing setting(s) {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**dict(data))


@dataclass(frozen=True)
class SpatialRecord:
    """Everything needed to map arrays between the case grid and the preprocessed grid.

    Attributes:
        input_geometry: grid of the case (of every input sequence).
        reorientation: axis permutation/flips from the case grid to the canonical order.
        reoriented_geometry: the case's voxels in canonical order (same physical points).
        resampled_geometry: the grid after resampling; equal to ``reoriented_geometry`` when no
            resampling was needed.
        crop: the brain box on ``resampled_geometry`` (always inside it).
    """

    input_geometry: Geometry
    reorientation: Reorientation
    reoriented_geometry: Geometry
    resampled_geometry: Geometry
    crop: CropBox

    @property
    def resampled(self) -> bool:
        """True if the voxels were interpolated (otherwise only permuted, flipped and cropped)."""
        return self.resampled_geometry != self.reoriented_geometry

    @property
    def geometry(self) -> Geometry:
        """The preprocessed grid (the crop of ``resampled_geometry``)."""
        return crop_geometry(self.resampled_geometry, self.crop)


@dataclass
class Preprocessed:
    """A case ready for a network.

    Attributes:
        image: float32 (C, z, y, x), channels in the order of ``sequences``.
        brain_mask: bool (z, y, x), the voxels the normalization statistics came from.
        record: how to go back to the input grid (:func:`to_input_grid`).
        sequences: sequence keys of the channels.
    """

    image: np.ndarray
    brain_mask: np.ndarray
    record: SpatialRecord
    sequences: tuple[str, ...] = field(default=())

    @property
    def geometry(self) -> Geometry:
        """Grid of ``image`` and ``brain_mask``."""
        return self.record.geometry


# Relative magnitude below which an interpolated voxel counts as background (see _nonzero).
_DUST = 1e-6


def _nonzero(arrays: Sequence[np.ndarray], rtol: float = 0.0) -> np.ndarray:
    """Voxels where any of the arrays is non-zero (above ``rtol`` times the array's largest magnitude).

    Interpolated arrays need ``rtol > 0``: a new voxel centre that falls (up to rounding) on a
    background voxel next to the brain picks up a weight of 1e-16 from the brain, and such dust must
    not count as brain, or the mask would depend on floating point noise.
    """
    mask = np.zeros(arrays[0].shape, dtype=bool)
    for array in arrays:
        threshold = rtol * float(np.abs(array).max(initial=0.0)) if rtol else 0.0
        mask |= np.abs(array) > threshold if threshold else array != 0
    return mask


def _covering_box(grid: Geometry, other: Geometry) -> CropBox | None:
    """The box of ``grid``'s voxels that covers ``other``'s field of view (None if they do not meet).

    One voxel more on each side than strictly needed, so floating point never drops a voxel that
    an interpolator would reach.
    """
    corners = physical_to_continuous_index(grid, other.corners())
    lo = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, np.asarray(grid.size) - 1)
    if np.any(hi < lo):
        return None
    start = tuple(int(v) for v in lo[::-1])
    size = tuple(int(v) for v in (hi - lo + 1)[::-1])
    return CropBox(start=start, size=size)  # type: ignore[arg-type]


def _canonical_grid(geometry: Geometry, config: PreprocessConfig) -> tuple[Reorientation, Geometry, Geometry]:
    reorientation = reorientation_for(geometry, config.orientation)
    reoriented = reorient_geometry(geometry, reorientation)
    target = reoriented if config.spacing is None else resampled_geometry(reoriented, config.spacing)
    return reorientation, reoriented, target


def preprocess(
    case: Case,
    sequences: Sequence[str] | None = None,
    config: PreprocessConfig | None = None,
    fill_missing: Sequence[str] = (),
) -> Preprocessed:
    """Reorient, resample, brain-crop and normalize the given sequences of a case.

    Args:
        case: the patient's co-registered sequences.
        sequences: sequence keys in channel order (the model's input sequences); None = all
            sequences the case has, in canonical order.
        config: preprocessing settings; None = defaults (native spacing, LPS, brain crop, z-score).
        fill_missing: sequences of ``sequences`` the case may lack: their channel is all zeros,
            which after z-scoring is what training's sequence dropout feeds the network (the
            brain mask then comes from the sequences present). At least one must be present.

    Returns:
        :class:`Preprocessed`.

    Raises:
        KeyError: naming sequences the case lacks.
        ValueError: if every voxel of every requested sequence is 0 (no brain to crop or normalize).
    """
    config = config or PreprocessConfig()
    wanted = tuple(sequences) if sequences is not None else case.sequences
    if not wanted:
        raise ValueError(f"case {case.case_id}: no sequences requested")
    missing = [s for s in wanted if s not in case.images and s not in fill_missing]
    present = [s for s in wanted if s in case.images]
    if missing or not present:
        raise KeyError(
            f"case {case.case_id} lacks required sequence(s) {missing or list(wanted)}; it has {list(case.sequences)}"
        )

    source = case.geometry
    reorientation, reoriented, target = _canonical_grid(source, config)
    arrays = [np.asarray(case.images[s]) for s in present]
    brain = _nonzero(arrays)
    if not brain.any():
        if config.crop_to_brain or config.normalize == "zscore":
            raise ValueError(
                f"case {case.case_id}: every voxel of {list(wanted)} is 0; there is no brain to crop or normalize"
            )
    if target == reoriented:
        # Lossless: views of the input arrays, copied only once, after cropping.
        channels = [reorientation.apply(a) for a in arrays]
        brain = reorientation.apply(brain)
        region = CropBox.full(target.shape)
    elif config.crop_to_brain:
        # Resample only the part of the target grid that can see the brain: the input's brain box
        # grown by one voxel of zeros. Outside it linear interpolation only ever sees zeros, so
        # this gives exactly the values of resampling everything, at a fraction of the cost.
        grown = CropBox.from_slices(bounding_box(brain, 1))
        cropped_source = crop_geometry(source, grown)
        region = _covering_box(target, cropped_source)
        assert region is not None  # the brain box lies inside the target's field of view
        region_grid = crop_geometry(target, region)
        channels = [resample(a[grown.slices], cropped_source, region_grid, "scalar") for a in arrays]
        brain = _nonzero(channels, _DUST)
    else:
        region = CropBox.full(target.shape)
        channels = [resample(a, source, target, "scalar") for a in arrays]
        brain = _nonzero(channels, _DUST)

    if config.crop_to_brain:
        if not brain.any():  # only after resampling: a coarse grid can miss a tiny input "brain"
            raise ValueError(
                f"case {case.case_id}: the non-zero part of {list(wanted)} vanishes at spacing {config.spacing}"
            )
        # The margin may reach beyond the resampled region: bound it by the whole target grid.
        margin = [math.ceil(config.crop_margin_mm / s - 1e-9) for s in target.spacing[::-1]]
        box = CropBox.from_slices(
            [
                slice(max(sl.start + r - m, 0), min(sl.stop + r + m, n))
                for sl, r, m, n in zip(bounding_box(brain), region.start, margin, target.shape)
            ]
        )
    else:
        box = CropBox.full(target.shape)
    # The box on the region's arrays; crop() pads with zeros (background) where the margin leaves it.
    local = CropBox(tuple(a - r for a, r in zip(box.start, region.start)), box.size)  # type: ignore[arg-type]
    image = np.zeros((len(wanted),) + box.size, dtype=np.float32)  # absent sequences stay 0
    for s, channel in zip(present, channels):
        crop(channel, local, out=image[wanted.index(s)])
    del channels
    mask = crop(brain, local)
    if config.normalize == "zscore":
        for c, s in enumerate(wanted):
            if s in case.images:
                zscore(image[c : c + 1], mask, inplace=True)

    record = SpatialRecord(source, reorientation, reoriented, target, box)
    return Preprocessed(image=image, brain_mask=mask, record=record, sequences=wanted)


def preprocess_label(label: np.ndarray, record: SpatialRecord) -> np.ndarray:
    """Map a label map on the case grid onto the preprocessed grid (nearest neighbour; dtype kept).

    Raises:
        ValueError: if ``label`` is not on the case grid.
    """
    label = np.asarray(label)
    if label.shape != record.input_geometry.shape:
        raise ValueError(
            f"label of shape {label.shape} is not on the case grid (z, y, x) {record.input_geometry.shape}"
        )
    if record.resampled:
        return resample(label, record.input_geometry, record.geometry, "label")
    return np.ascontiguousarray(record.reorientation.apply(label)[record.crop.slices])


def _check_on_preprocessed_grid(volume: np.ndarray, record: SpatialRecord, kind: str) -> np.ndarray:
    if kind not in ("label", "scalar"):
        raise ValueError(f"kind must be 'label' or 'scalar', got {kind!r}")
    volume = np.asarray(volume)
    if volume.ndim not in (3, 4) or volume.shape[-3:] != record.crop.size:
        raise ValueError(
            f"volume of shape {volume.shape} is not on the preprocessed grid (z, y, x) {record.crop.size}"
        )
    if kind == "scalar" and not np.issubdtype(volume.dtype, np.floating):
        volume = volume.astype(np.float32)
    return volume


def _resample_to_input(
    volume: np.ndarray, record: SpatialRecord, kind: Kind, fill: float
) -> tuple[np.ndarray, CropBox] | None:
    """Resample ``volume`` (on the preprocessed grid of a resampled record) onto the part of the
    input grid it covers: (values, box of the input grid), or None if it covers no input voxel."""
    # Pad the crop with one voxel of `fill` on each side that is inside the resampled grid, so that
    # linear interpolation across the crop's border sees the background exactly as if the whole
    # resampled grid had been rebuilt first (at the grid's own border ITK clamps, in both cases).
    crop_box = record.crop
    pad_lo = [1 if a > 0 else 0 for a in crop_box.start]
    pad_hi = [1 if b < n else 0 for b, n in zip(crop_box.stop, record.resampled_geometry.shape)]
    padded = np.pad(volume, [(0, 0)] * (volume.ndim - 3) + list(zip(pad_lo, pad_hi)), constant_values=fill)
    padded_box = CropBox(
        start=tuple(a - p for a, p in zip(crop_box.start, pad_lo)),  # type: ignore[arg-type]
        size=padded.shape[-3:],  # type: ignore[arg-type]
    )
    source = crop_geometry(record.resampled_geometry, padded_box)
    # Input voxels outside the source's field of view get `fill`: interpolate only the others.
    box = _covering_box(record.input_geometry, source)
    if box is None:
        return None
    return resample(padded, source, crop_geometry(record.input_geometry, box), kind, fill), box



def window_record(record: SpatialRecord, box: CropBox) -> tuple[SpatialRecord, tuple[slice, ...]] | None:
    """The record of the part of the preprocessed grid inside ``box`` (a box on that grid that may
    leave it), and the slices of ``box``'s array holding that part; None when they do not meet.

    With it, values computed on a window (a network crop, a heatmap) go back to the input grid
    through :func:`to_input_grid` exactly as whole-grid values do.
    """
    inner, local = [], []
    for a, b, n in zip(box.start, box.stop, record.crop.size):
        lo, hi = max(a, 0), min(b, n)
        if lo >= hi:
            return None
        inner.append((lo, hi))
        local.append(slice(lo - a, hi - a))
    start = tuple(s + lo for s, (lo, _) in zip(record.crop.start, inner))
    size = tuple(hi - lo for lo, hi in inner)
    sub = SpatialRecord(record.input_geometry, record.reorientation, record.reoriented_geometry,
                        record.resampled_geometry, CropBox(start, size))  # type: ignore[arg-type]
    return sub, tuple(local)

def to_input_grid(
    volume: np.ndarray, record: SpatialRecord, kind: Kind = "label", fill: float = 0
) -> np.ndarray:
    """Bring an array on the preprocessed grid back onto the case's input grid.

    Equivalent to: un-crop (pad with ``fill``), resample onto the reoriented case grid (nearest
    neighbour for ``kind="label"``, linear for ``kind="scalar"``), undo the reorientation. Without
    resampling this is exact (pure indexing). With resampling only the part of the input grid that
    the crop covers is interpolated; the rest is ``fill``.

    Args:
        volume: (z, y, x) or channels-first (C, z, y, x) on ``record.geometry``.
        record: from :func:`preprocess`.
        kind: "label" (dtype kept) or "scalar" (probabilities, heatmaps; float output).
        fill: value outside the crop (background label, probability 0).

    Returns:
        array of shape ``[C,] + record.input_geometry.shape``.

    Raises:
        ValueError: if ``volume`` is not on the preprocessed grid or ``kind`` is unknown.
    """
    volume = _check_on_preprocessed_grid(volume, record, kind)
    shape = volume.shape[:-3] + record.input_geometry.shape
    if not record.resampled:
        out = np.full(shape, fill, dtype=volume.dtype)
        slices = record.reorientation.source_slices(record.crop.slices, shape)
        out[(..., *slices)] = record.reorientation.inverse().apply(volume)
        return out
    resampled = _resample_to_input(volume, record, kind, fill)
    if resampled is None:
        return np.full(shape, fill, dtype=volume.dtype)
    return uncrop(resampled[0], resampled[1], shape, fill)


def to_input_box(
    volume: np.ndarray, record: SpatialRecord, kind: Kind = "label", fill: float = 0
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """:func:`to_input_grid` restricted to the part of the input grid the crop covers.

    Returns:
        ``(values, slices)``: ``values`` (``[C,]`` + box shape) are what :func:`to_input_grid`
        gives at ``[..., *slices]`` of the input grid; everywhere else it gives ``fill``. A large
        input grid is then never allocated in full (a 512x512x400 volume is 420 MB per float32
        channel).
    """
    volume = _check_on_preprocessed_grid(volume, record, kind)
    shape = volume.shape[:-3] + record.input_geometry.shape
    if not record.resampled:
        slices = record.reorientation.source_slices(record.crop.slices, shape)
        return np.ascontiguousarray(record.reorientation.inverse().apply(volume)), slices
    resampled = _resample_to_input(volume, record, kind, fill)
    if resampled is None:
        empty = (slice(0, 0),) * 3
        return np.full(volume.shape[:-3] + (0, 0, 0), fill, dtype=volume.dtype), empty  # type: ignore[return-value]
    values, box = resampled
    return values, box.slices  # type: ignore[return-value]


def labels_from_probabilities_on_input_grid(
    probabilities: np.ndarray, record: SpatialRecord, dtype: np.dtype | type = np.uint8
) -> np.ndarray:
    """Label map on the input grid from class probabilities (C, z, y, x) on the preprocessed grid.

    Interpolates each class probability linearly onto the input grid, then takes the argmax, which
    gives smoother, more faithful borders than resampling an argmax label map with nearest
    neighbour. Channel ``c`` becomes label ``c``; voxels outside the crop get label 0 (every
    probability is 0 there), so channel 0 must be the background.
    """
    probabilities = _check_on_preprocessed_grid(probabilities, record, "scalar")
    if probabilities.ndim != 4:
        raise ValueError(f"probabilities must be (C, z, y, x), got shape {probabilities.shape}")
    if not record.resampled:  # no interpolation: argmax commutes with the pure re-indexing
        return to_input_grid(np.argmax(probabilities, axis=0).astype(dtype), record, "label")
    resampled = _resample_to_input(probabilities, record, "scalar", 0)
    if resampled is None:
        return np.zeros(record.input_geometry.shape, dtype=dtype)
    return uncrop(np.argmax(resampled[0], axis=0).astype(dtype), resampled[1], record.input_geometry.shape)
