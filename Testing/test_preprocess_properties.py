"""Property tests (hypothesis) for GliomaMTLLib.preprocess: geometry round trips on random grids.

Grids are drawn with every kind of direction a scanner or converter writes: LPS identity, RAS
diag(-1, -1, 1), single flipped axes (negative determinant), axis permutations (sagittal or coronal
acquisitions), and oblique rotations on top of those; anisotropic spacings; arbitrary origins.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.preprocess import (
    CropBox,
    PreprocessConfig,
    crop_around,
    labels_from_probabilities_on_input_grid,
    orientation_matrix,
    physical_to_continuous_index,
    preprocess,
    preprocess_label,
    to_input_grid,
    uncrop,
    zscore,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@st.composite
def directions(draw, oblique: bool = True, max_angle: float = 1.2) -> np.ndarray:
    kinds = ["lps", "ras", "signed_permutation"] + (["oblique"] if oblique else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "lps":
        return np.eye(3)
    if kind == "ras":
        return np.diag([-1.0, -1.0, 1.0])
    perm = draw(st.permutations([0, 1, 2]))
    signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3))
    matrix = np.eye(3)[:, perm] * np.asarray(signs)
    if kind == "oblique":
        # Axis components below 1e-6 are snapped to 0: values like 1e-300 make direction cosines of
        # ~1e-294, which no header holds (NIfTI stores float32) and on which ITK's resampling breaks.
        component = st.floats(-1, 1, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-6 else v)
        axis = np.asarray(draw(st.lists(component, min_size=3, max_size=3)))
        assume(np.linalg.norm(axis) > 0.1)
        # From scanner noise (1e-7 rad) to strongly oblique; no subnormal angles (1e-308), which no
        # header holds and on which ITK's SVD of the direction matrix breaks down.
        angle = draw(st.floats(1e-7, max_angle)) * draw(st.sampled_from([-1.0, 1.0]))
        matrix = rotation(axis, angle) @ matrix
    return matrix


@st.composite
def geometries(draw, oblique: bool = True, max_angle: float = 1.2) -> Geometry:
    size = tuple(draw(st.lists(st.integers(5, 20), min_size=3, max_size=3)))
    spacing = tuple(draw(st.lists(st.floats(0.4, 3.0), min_size=3, max_size=3)))
    origin = tuple(draw(st.lists(st.floats(-200, 200), min_size=3, max_size=3)))
    direction = draw(directions(oblique, max_angle))
    return Geometry(size=size, spacing=spacing, origin=origin, direction=tuple(float(v) for v in direction.ravel()))


@st.composite
def cases_with_labels(draw, oblique: bool = True, min_brain: int = 1) -> Case:
    """A case whose brain is a random box (two sequences, positive inside, 0 outside) holding labels 0..3.

    ``min_brain`` voxels per axis at least: a coarser grid can step over a smaller brain entirely.
    """
    geometry = draw(geometries(oblique))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = geometry.shape
    lo = [int(rng.integers(0, n - min_brain + 1)) for n in shape]
    hi = [int(rng.integers(a + min_brain, n + 1)) for a, n in zip(lo, shape)]
    brain = np.zeros(shape, bool)
    brain[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    images = {
        key: np.where(brain, rng.uniform(1, 1000, size=shape), 0).astype(np.float32) for key in ("t1n", "t2f")
    }
    label = np.where(brain, rng.integers(0, 4, size=shape), 0).astype(np.uint8)
    return Case("prop", images, geometry, label=label)


def canonical_spacing(case: Case) -> tuple[float, float, float]:
    """Spacing of the case's voxels in canonical (LPS) order."""
    return preprocess(case, config=PreprocessConfig(crop_to_brain=False, normalize="none")).geometry.spacing


@SETTINGS
@given(case=cases_with_labels(), crop=st.booleans(), split=st.sampled_from([None, 1, 2, 3, 4, 5]))
def test_label_round_trip_is_exact(case: Case, crop: bool, split: int | None) -> None:
    """Label map -> preprocessed grid -> input grid is the identity.

    ``split`` None keeps the native spacing (only permutation/flips/crop); an integer ``split``
    divides the spacing, so every input voxel splits into whole new voxels: with an odd split each
    input voxel centre is also a new voxel centre, with an even one it lies midway between two new
    voxels of the same input voxel. Any other spacing cannot round-trip exactly (coarser grids merge
    voxels; non-integer ratios leave some input voxels nobody's nearest neighbour), which is why it
    is not tested here.
    """
    spacing = None if split is None else tuple(s / split for s in canonical_spacing(case))
    pre = preprocess(case, ("t1n", "t2f"), PreprocessConfig(spacing=spacing, crop_to_brain=crop))
    assert pre.record.resampled == (split not in (None, 1))
    forward = preprocess_label(case.label, pre.record)
    assert forward.shape == pre.image.shape[1:] == pre.brain_mask.shape
    assert forward.dtype == np.uint8
    back = to_input_grid(forward, pre.record, kind="label")
    assert back.shape == case.geometry.shape
    np.testing.assert_array_equal(back, case.label)


@SETTINGS
@given(case=cases_with_labels(), split=st.sampled_from([None, 3]))
def test_probabilities_argmax_on_input_grid_recovers_labels(case: Case, split: int | None) -> None:
    spacing = None if split is None else tuple(s / split for s in canonical_spacing(case))
    pre = preprocess(case, config=PreprocessConfig(spacing=spacing))
    forward = preprocess_label(case.label, pre.record)
    probs = np.stack([(forward == c).astype(np.float32) for c in range(4)])
    labels = labels_from_probabilities_on_input_grid(probs, pre.record)
    np.testing.assert_array_equal(labels, case.label)
    stacked = to_input_grid(probs, pre.record, kind="scalar")
    for c in range(4):  # a channel stack is the same as one channel at a time
        np.testing.assert_array_equal(stacked[c], to_input_grid(probs[c], pre.record, kind="scalar"))


@SETTINGS
@given(geometry=geometries(), orientation=st.sampled_from(["LPS", "RAS", "LAS"]), data=st.data())
def test_reorientation_keeps_a_marker_at_its_physical_point(geometry: Geometry, orientation: str, data) -> None:
    index_zyx = tuple(data.draw(st.integers(0, n - 1)) for n in geometry.shape)
    image = np.zeros(geometry.shape, np.float32)
    image[index_zyx] = 7.0
    case = Case("marker", {"t1c": image}, geometry)
    pre = preprocess(case, config=PreprocessConfig(orientation=orientation, crop_to_brain=False, normalize="none"))
    found = np.argwhere(pre.image[0] == 7.0)
    assert len(found) == 1 and np.count_nonzero(pre.image) == 1
    moved = pre.geometry.index_to_physical(found[0][::-1].astype(float))[0]
    expected = geometry.to_image(image).TransformIndexToPhysicalPoint([int(i) for i in index_zyx[::-1]])
    np.testing.assert_allclose(moved, expected, atol=1e-6 * (1 + np.abs(expected).max()))
    # The canonical grid covers the same voxels, and its axes are the closest to the requested ones.
    assert sorted(pre.geometry.size) == sorted(geometry.size)
    assert np.allclose(sorted(pre.geometry.spacing), sorted(geometry.spacing))
    # Each new axis points along its target axis (positive cosine), and no other assignment of the
    # input axes to the target axes would be better aligned.
    target = orientation_matrix(orientation)
    cosines = np.sum(pre.geometry.direction_matrix * target, axis=0)
    assert np.all(cosines > -1e-12)
    best = max(
        sum(abs(geometry.direction_matrix[:, p[k]] @ target[:, k]) for k in range(3))
        for p in itertools.permutations(range(3))
    )
    assert cosines.sum() >= best - 1e-9


@SETTINGS
@given(
    # Obliquity up to 0.5 rad (29 degrees): every axis has one clearly closest anatomical axis, so
    # DICOMOrient's per-axis choice and our best overall assignment must agree.
    geometry=geometries(max_angle=0.5),
    orientation=st.sampled_from(["LPS", "RAS", "PIR"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_reorientation_matches_simpleitk_dicomorient(geometry: Geometry, orientation: str, seed: int) -> None:
    image = np.random.default_rng(seed).normal(size=geometry.shape).astype(np.float32)
    case = Case("orient", {"t2w": image}, geometry)
    pre = preprocess(case, config=PreprocessConfig(orientation=orientation, crop_to_brain=False, normalize="none"))
    reference = sitk.DICOMOrient(geometry.to_image(image), orientation)
    assert pre.geometry.same_grid(Geometry.from_image(reference))
    np.testing.assert_array_equal(pre.image[0], sitk.GetArrayFromImage(reference))
    assert not pre.record.resampled


@SETTINGS
@given(case=cases_with_labels(min_brain=3), factor=st.sampled_from([1 / 3, 0.5, 0.7, 1.6, 2.0]), value=st.floats(-5, 5))
def test_scalar_inverse_of_a_constant_is_that_constant_inside_the_crop(case: Case, factor: float, value: float) -> None:
    spacing = tuple(s * factor for s in canonical_spacing(case))
    pre = preprocess(case, config=PreprocessConfig(spacing=spacing))
    constant = np.full(pre.image.shape[1:], value, np.float32)
    back = to_input_grid(constant, pre.record, kind="scalar")
    assert back.shape == case.geometry.shape and back.dtype == np.float32
    # Continuous index of every input voxel centre on the preprocessed grid.
    zyx = np.indices(case.geometry.shape).reshape(3, -1).T
    points = case.geometry.index_to_physical(zyx[:, ::-1].astype(float))
    index = physical_to_continuous_index(pre.geometry, points)
    size = np.asarray(pre.geometry.size)
    inside = np.all((index >= -1e-6) & (index <= size - 1 + 1e-6), axis=1)
    far = np.any((index < -1 - 1e-6) | (index > size + 1e-6), axis=1)
    flat = back.reshape(-1)
    np.testing.assert_allclose(flat[inside], value, atol=1e-5)
    np.testing.assert_array_equal(flat[far], 0)


@SETTINGS
@given(
    shape=st.lists(st.integers(2, 12), min_size=3, max_size=3),
    channels=st.integers(1, 3),
    scale=st.floats(1e-2, 1e4),
    offset=st.floats(-1e4, 1e4),
    seed=st.integers(0, 2**32 - 1),
)
def test_zscore_standardizes_brain_and_zeroes_background(shape, channels, scale, offset, seed) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.6
    assume(mask.sum() >= 2)
    image = (rng.normal(size=[channels, *shape]) * scale + offset).astype(np.float32)
    out = zscore(image, mask)
    assert out.dtype == np.float32 and out is not image
    for c in range(channels):
        values = out[c][mask].astype(np.float64)
        assert abs(values.mean()) < 1e-3
        if np.ptp(image[c][mask]) == 0:  # constant channel: only centred
            assert np.all(values == 0)
        else:
            assert values.std() == pytest.approx(1.0, abs=1e-3)
        assert np.all(out[c][~mask] == 0)


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 12), min_size=3, max_size=3),
    size=st.lists(st.integers(1, 9), min_size=3, max_size=3),
    channels=st.sampled_from([None, 2]),
    data=st.data(),
)
def test_crop_around_then_uncrop_restores_the_box_and_pads_outside(shape, size, channels, data) -> None:
    center = [data.draw(st.floats(-4, n + 4)) for n in shape]
    full = tuple(shape) if channels is None else (channels, *shape)
    array = np.random.default_rng(0).integers(1, 100, size=full).astype(np.int16)
    cropped, box = crop_around(array, center, size, fill=-1)
    assert cropped.shape == full[:-3] + tuple(size)
    assert box.size == tuple(size)
    # The voxel nearest the centre sits at size // 2 when it is inside the volume.
    nearest = [int(np.floor(c + 0.5)) for c in center]
    if all(0 <= v < n for v, n in zip(nearest, shape)):
        np.testing.assert_array_equal(cropped[(..., *[n // 2 for n in size])], array[(..., *nearest)])
    # Padded voxels (outside the volume) carry the fill value, the others the volume's values.
    in_volume = np.ones(size, bool)
    for axis in range(3):
        coords = np.arange(size[axis]) + box.start[axis]
        inside_axis = (coords >= 0) & (coords < shape[axis])
        in_volume &= np.expand_dims(inside_axis, [a for a in range(3) if a != axis])
    assert np.all(cropped[..., ~in_volume] == -1)
    assert np.all(cropped[..., in_volume] >= 1)
    back = uncrop(cropped, box, shape, fill=0)
    assert back.shape == full
    covered = np.zeros(shape, bool)
    covered[tuple(slice(max(a, 0), max(min(a + n, m), 0)) for a, n, m in zip(box.start, box.size, shape))] = True
    np.testing.assert_array_equal(back[..., covered], array[..., covered])
    assert np.all(back[..., ~covered] == 0)


@SETTINGS
@given(case=cases_with_labels(min_brain=2))
def test_resampling_only_the_brain_region_equals_resampling_everything(case: Case) -> None:
    spacing = tuple(s * 1.7 for s in canonical_spacing(case))
    cropped = preprocess(case, config=PreprocessConfig(spacing=spacing, normalize="none"))
    whole = preprocess(case, config=PreprocessConfig(spacing=spacing, normalize="none", crop_to_brain=False))
    assert cropped.record.resampled_geometry == whole.record.resampled_geometry
    box = cropped.record.crop
    assert isinstance(box, CropBox) and box.inside(whole.image.shape)
    np.testing.assert_allclose(cropped.image, whole.image[(slice(None), *box.slices)], rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(cropped.brain_mask, whole.brain_mask[box.slices])
    outside = whole.brain_mask.copy()
    outside[box.slices] = False
    assert not outside.any()
