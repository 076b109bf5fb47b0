"""Unit tests for GliomaMTLLib.preprocess on worked examples.

The properties over random grids (round trips, physical positions) are in test_preprocess_properties.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from GliomaMTLLib.io.case import Case
from GliomaMTLLib.io.geometry import Geometry
from GliomaMTLLib.preprocess import (
    CropBox,
    PreprocessConfig,
    Reorientation,
    bounding_box,
    crop,
    crop_around,
    crop_geometry,
    labels_from_probabilities_on_input_grid,
    preprocess,
    preprocess_label,
    reorientation_for,
    resampled_geometry,
    to_input_box,
    to_input_grid,
    uncrop,
    zscore,
)

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def make_case(shape_zyx=(10, 12, 14), direction=IDENTITY, spacing=(1.0, 1.0, 1.0), seed=0, dtype=np.float32) -> Case:
    """Two sequences with a box-shaped brain (z 2..7, y 3..9, x 4..11) of positive values."""
    rng = np.random.default_rng(seed)
    geometry = Geometry(size=tuple(shape_zyx[::-1]), spacing=spacing, origin=(10.0, -20.0, 30.0), direction=direction)
    brain = np.zeros(shape_zyx, bool)
    brain[2:8, 3:10, 4:12] = True
    images = {
        "t1n": np.where(brain, rng.uniform(100, 900, shape_zyx), 0).astype(dtype),
        "t2f": np.where(brain, rng.uniform(10, 20, shape_zyx), 0).astype(dtype),
    }
    label = np.zeros(shape_zyx, np.uint8)
    label[4:6, 5:8, 6:10] = 2
    label[5, 6, 7:9] = 3
    return Case("unit", images, geometry, label=label)


# --------------------------------------------------------------------------------------------
# preprocess


def test_native_lps_case_is_only_cropped_and_normalized() -> None:
    case = make_case()
    pre = preprocess(case, ("t1n", "t2f"))
    assert not pre.record.resampled and pre.record.reorientation.is_identity
    assert pre.record.crop == CropBox(start=(2, 3, 4), size=(6, 7, 8))
    assert pre.image.shape == (2, 6, 7, 8) and pre.image.dtype == np.float32
    assert pre.brain_mask.all()
    expected = zscore(np.stack([case.images[s][2:8, 3:10, 4:12] for s in ("t1n", "t2f")]), pre.brain_mask)
    np.testing.assert_array_equal(pre.image, expected)
    # The cropped grid starts at voxel (x, y, z) = (4, 3, 2) of the input grid.
    np.testing.assert_allclose(pre.geometry.origin, case.geometry.index_to_physical([4, 3, 2])[0])
    assert pre.geometry.spacing == case.geometry.spacing and pre.geometry.direction == case.geometry.direction


def test_channels_follow_the_requested_order_and_inputs_are_not_modified() -> None:
    case = make_case()
    before = {k: v.copy() for k, v in case.images.items()}
    pre = preprocess(case, ("t2f", "t1n"), PreprocessConfig(normalize="none"))
    np.testing.assert_array_equal(pre.image[0], case.images["t2f"][2:8, 3:10, 4:12])
    np.testing.assert_array_equal(pre.image[1], case.images["t1n"][2:8, 3:10, 4:12])
    assert pre.sequences == ("t2f", "t1n")
    for key, value in before.items():
        np.testing.assert_array_equal(case.images[key], value)


@pytest.mark.parametrize("dtype", [np.int16, np.float64])
def test_integer_and_double_inputs_give_float32(dtype) -> None:
    pre = preprocess(make_case(dtype=dtype), config=PreprocessConfig(spacing=(2.0, 2.0, 2.0)))
    assert pre.image.dtype == np.float32
    assert abs(pre.image[0][pre.brain_mask].mean()) < 1e-5


def test_ras_input_is_reoriented_to_identity_directions() -> None:
    case = make_case(direction=RAS)
    pre = preprocess(case, config=PreprocessConfig(crop_to_brain=False, normalize="none"))
    assert pre.geometry.direction == IDENTITY
    # x and y are reversed: the last input column/row is the first output one.
    np.testing.assert_array_equal(pre.image[0], case.images["t1n"][:, ::-1, ::-1])
    np.testing.assert_allclose(pre.geometry.corners().min(axis=0), case.geometry.corners().min(axis=0))


def test_downsampling_by_two_averages_voxel_blocks_over_the_same_field_of_view() -> None:
    case = make_case(shape_zyx=(10, 12, 14))
    pre = preprocess(case, config=PreprocessConfig(spacing=(2.0, 2.0, 2.0), crop_to_brain=False, normalize="none"))
    assert pre.image.shape == (2, 5, 6, 7)
    np.testing.assert_allclose(pre.geometry.corners(), case.geometry.corners(), atol=1e-9)
    blocks = case.images["t1n"].reshape(5, 2, 6, 2, 7, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(pre.image[0], blocks, rtol=1e-5)


def test_target_spacing_equal_to_native_does_not_resample() -> None:
    case = make_case(spacing=(0.5, 1.0, 2.5))
    pre = preprocess(case, config=PreprocessConfig(spacing=(0.5, 1.0, 2.5)))
    assert not pre.record.resampled
    # Axis-permuted input: the target spacing is along the canonical axes.
    permuted = make_case(direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0), spacing=(0.5, 1.0, 2.5))
    assert not preprocess(permuted, config=PreprocessConfig(spacing=(1.0, 0.5, 2.5))).record.resampled
    assert preprocess(permuted, config=PreprocessConfig(spacing=(0.5, 1.0, 2.5))).record.resampled


def test_crop_margin_grows_the_box_and_stops_at_the_volume() -> None:
    case = make_case()
    pre = preprocess(case, config=PreprocessConfig(crop_margin_mm=3.0))
    assert pre.record.crop == CropBox(start=(0, 0, 1), size=(10, 12, 13))
    assert pre.brain_mask.sum() == 6 * 7 * 8
    assert np.all(pre.image[:, ~pre.brain_mask] == 0)
    # With resampling the margin may reach beyond the resampled brain region: padded with zeros.
    config = PreprocessConfig(spacing=(1.5, 1.5, 1.5), crop_margin_mm=3.0, normalize="none")
    cropped = preprocess(case, config=config)
    whole = preprocess(case, config=PreprocessConfig(spacing=(1.5, 1.5, 1.5), normalize="none", crop_to_brain=False))
    np.testing.assert_allclose(cropped.image, whole.image[(slice(None), *cropped.record.crop.slices)], atol=1e-4)


def test_label_forward_and_back_with_upsampling_by_three_is_exact() -> None:
    case = make_case(direction=RAS, spacing=(0.9, 1.2, 3.0))
    pre = preprocess(case, config=PreprocessConfig(spacing=(0.3, 0.4, 1.0)))
    # The brain box (6, 7, 8) splits into 3 per axis, plus one new voxel on each side that linear
    # interpolation touches with a third of a brain voxel.
    assert pre.record.resampled and pre.image.shape[1:] == (20, 23, 26)
    forward = preprocess_label(case.label, pre.record)
    assert forward.shape == pre.brain_mask.shape and forward.dtype == np.uint8
    assert (forward == 3).sum() == 2 * 27
    np.testing.assert_array_equal(to_input_grid(forward, pre.record), case.label)


def test_labels_from_probabilities_take_the_argmax_after_interpolation() -> None:
    case = make_case()
    pre = preprocess(case, config=PreprocessConfig(spacing=(2.0, 2.0, 2.0)))
    probs = np.zeros((2,) + pre.image.shape[1:], np.float32)
    probs[0] = 1.0
    probs[:, 1:3, 1:3, 1:3] = np.array([0.0, 1.0]).reshape(2, 1, 1, 1)
    labels = labels_from_probabilities_on_input_grid(probs, pre.record)
    assert labels.shape == case.geometry.shape and labels.dtype == np.uint8
    scalar = to_input_grid(probs, pre.record, kind="scalar")
    np.testing.assert_array_equal(labels, np.argmax(scalar, axis=0))
    assert 0 < labels.sum() < case.label.size
    # Input voxels farther than one voxel from the crop are background: all probabilities are 0 there.
    assert labels[0].sum() == 0 and scalar[:, 0].max() == 0


@pytest.mark.parametrize("direction, spacing", [(IDENTITY, None), (RAS, None), (RAS, (2.0, 1.5, 2.5))])
def test_to_input_box_is_to_input_grid_inside_its_box_and_fill_outside(direction, spacing) -> None:
    case = make_case(direction=direction)
    pre = preprocess(case, config=PreprocessConfig(spacing=spacing))
    rng = np.random.default_rng(1)
    volume = rng.uniform(0, 1, (2,) + pre.brain_mask.shape).astype(np.float32)
    full = to_input_grid(volume, pre.record, kind="scalar", fill=0.0)
    values, slices = to_input_box(volume, pre.record, kind="scalar", fill=0.0)
    assert values.shape == full[(slice(None), *slices)].shape
    np.testing.assert_allclose(values, full[(slice(None), *slices)], atol=1e-6)
    outside = np.ones(full.shape[1:], bool)
    outside[slices] = False
    assert not full[:, outside].any()
    if spacing is None:  # no interpolation: exactly the brain box
        assert values.shape[1:] == pre.brain_mask.shape and values[0].size < full[0].size


def test_missing_sequences_can_be_filled_with_zeros_as_sequence_dropout() -> None:
    case = make_case(direction=RAS)
    full = preprocess(case, ("t1n", "t2f"), PreprocessConfig(spacing=(2.0, 2.0, 2.0)))
    del case.images["t1n"]
    with pytest.raises(KeyError, match=r"lacks required sequence\(s\) \['t1n'\]"):
        preprocess(case, ("t1n", "t2f"), PreprocessConfig(spacing=(2.0, 2.0, 2.0)))
    part = preprocess(case, ("t1n", "t2f"), PreprocessConfig(spacing=(2.0, 2.0, 2.0)), fill_missing=("t1n",))
    assert part.image.shape == full.image.shape and part.sequences == ("t1n", "t2f")
    assert not part.image[0].any()  # zeros in z-score space, what training's sequence dropout feeds
    np.testing.assert_allclose(part.image[1], full.image[1], atol=1e-6)  # same brain from the sequence present
    assert part.record == full.record
    with pytest.raises(KeyError, match="lacks"):  # at least one sequence must be present
        preprocess(case, ("t1n",), fill_missing=("t1n",))


def test_to_input_grid_of_integers_as_scalar_gives_float32() -> None:
    pre = preprocess(make_case(direction=RAS))
    out = to_input_grid(np.ones(pre.brain_mask.shape, np.int64), pre.record, kind="scalar", fill=-1)
    assert out.dtype == np.float32 and out.min() == -1 and out.max() == 1
    assert (out == 1).sum() == pre.brain_mask.size


def test_errors_name_the_problem() -> None:
    case = make_case()
    with pytest.raises(KeyError, match="t1c"):
        preprocess(case, ("t1n", "t1c"))
    grid = Geometry((5, 5, 5), (1.0,) * 3, (0.0,) * 3, IDENTITY)
    empty = Case("empty", {"t1n": np.zeros((5, 5, 5), np.float32)}, grid)
    with pytest.raises(ValueError, match="every voxel"):
        preprocess(empty)
    assert preprocess(empty, config=PreprocessConfig(crop_to_brain=False, normalize="none")).image.shape == (1, 5, 5, 5)
    pre = preprocess(case)
    with pytest.raises(ValueError, match="preprocessed grid"):
        to_input_grid(np.zeros((3, 3, 3)), pre.record)
    with pytest.raises(ValueError, match="kind"):
        to_input_grid(np.zeros(pre.brain_mask.shape), pre.record, kind="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="case grid"):
        preprocess_label(np.zeros((3, 3, 3), np.uint8), pre.record)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"orientation": "LLS"}, "twice"),
        ({"orientation": "XYZ"}, "orientation"),
        ({"normalize": "minmax"}, "normalize"),
        ({"crop_margin_mm": -1.0}, "crop_margin_mm"),
    ],
)
def test_config_rejects_invalid_settings(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PreprocessConfig(**kwargs)


def test_config_round_trips_through_a_dict() -> None:
    config = PreprocessConfig(spacing=(2, 2, 2), orientation="ras", crop_margin_mm=4)
    assert config.spacing == (2.0, 2.0, 2.0) and config.orientation == "RAS"
    data = config.to_dict()
    assert data["spacing"] == [2.0, 2.0, 2.0]
    assert PreprocessConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown preprocessing setting"):
        PreprocessConfig.from_dict({"spacing": None, "resize": 144})


# --------------------------------------------------------------------------------------------
# spatial


def test_reorientation_inverse_undoes_it_on_channel_stacks() -> None:
    geometry = Geometry((4, 5, 6), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    reorientation = reorientation_for(geometry, "LPS")
    # Input axes point to P, I and R: L is the flipped z axis, P is x, S is the flipped y axis.
    assert reorientation == Reorientation(perm=(2, 0, 1), flip=(True, False, True))
    stack = np.arange(2 * 6 * 5 * 4).reshape(2, 6, 5, 4)
    moved = reorientation.apply(stack)
    assert moved.shape == (2,) + reorientation.shape((6, 5, 4)) == (2, 5, 4, 6)
    assert moved[0, 0, 0, 0] == stack[0, 5, 4, 0]  # new (x, y, z) = 0 is old (x, y, z) = (0, 4, 5)
    np.testing.assert_array_equal(reorientation.inverse().apply(moved), stack)


def test_resampled_geometry_keeps_the_field_of_view_for_integer_ratios() -> None:
    geometry = Geometry((10, 9, 7), (1.0, 1.0, 3.0), (5.0, 6.0, 7.0), RAS)
    assert resampled_geometry(geometry, (1.0, 1.0, 3.0)) is geometry
    fine = resampled_geometry(geometry, (0.5, 1 / 3, 1.0))
    assert fine.size == (20, 27, 21)
    np.testing.assert_allclose(np.sort(fine.corners(), axis=0), np.sort(geometry.corners(), axis=0), atol=1e-9)
    with pytest.raises(ValueError, match="spacing"):
        resampled_geometry(geometry, (1.0, -1.0, 1.0))


# --------------------------------------------------------------------------------------------
# crop


def test_bounding_box_with_margin_is_clipped_to_the_volume() -> None:
    mask = np.zeros((6, 7, 8), bool)
    mask[1, 2, 3] = mask[3, 4, 7] = True
    assert bounding_box(mask) == (slice(1, 4), slice(2, 5), slice(3, 8))
    assert bounding_box(mask, 2) == (slice(0, 6), slice(0, 7), slice(1, 8))
    assert bounding_box(mask, (0, 1, 0)) == (slice(1, 4), slice(1, 6), slice(3, 8))
    with pytest.raises(ValueError, match="empty"):
        bounding_box(np.zeros((3, 3, 3), bool))


def test_crop_around_near_an_edge_pads_with_the_fill_value() -> None:
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7) + 1
    cropped, box = crop_around(array, (0, 5.4, 3), (4, 4, 3), fill=-1)
    assert box == CropBox(start=(-2, 3, 2), size=(4, 4, 3))
    assert cropped.shape == (4, 4, 3)
    assert np.all(cropped[:2] == -1) and np.all(cropped[:, 3:] == -1)
    np.testing.assert_array_equal(cropped[2:, :3], array[0:2, 3:6, 2:5])
    # The centre voxel (0, 5, 3) sits at size // 2.
    assert cropped[2, 2, 1] == array[0, 5, 3]
    np.testing.assert_array_equal(uncrop(cropped, box, array.shape)[0:2, 3:6, 2:5], array[0:2, 3:6, 2:5])
    # A box entirely outside gives only fill.
    assert np.all(crop(array, CropBox((10, 0, 0), (2, 2, 2)), fill=7) == 7)


def test_crop_writes_into_out_and_uncrop_checks_the_size() -> None:
    stack = np.ones((2, 4, 4, 4), np.float32)
    out = np.empty((2, 3, 3, 3), np.float32)
    assert crop(stack, CropBox((2, 2, 2), (3, 3, 3)), out=out) is out
    assert out[:, :2, :2, :2].min() == 1 and out[:, 2].max() == 0
    with pytest.raises(ValueError, match="out"):
        crop(stack, CropBox((0, 0, 0), (2, 2, 2)), out=out)
    with pytest.raises(ValueError, match="box size"):
        uncrop(out, CropBox((0, 0, 0), (2, 2, 2)), (4, 4, 4))


def test_crop_geometry_places_the_crop_in_physical_space() -> None:
    geometry = Geometry((8, 9, 10), (0.5, 1.0, 2.0), (1.0, 2.0, 3.0), RAS)
    box = CropBox(start=(-1, 2, 3), size=(4, 4, 4))
    sub = crop_geometry(geometry, box)
    assert sub.size == (4, 4, 4)
    # Voxel (x, y, z) = (1, 1, 1) of the crop is voxel (4, 3, 0) of the volume.
    np.testing.assert_allclose(sub.index_to_physical([1, 1, 1]), geometry.index_to_physical([4, 3, 0]))
