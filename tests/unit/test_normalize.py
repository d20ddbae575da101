"""cortexgen.preprocess.normalize: intensity normalisation and resizing to the model grid."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from cortexgen.preprocess.normalize import normalize_and_resize, normalize_intensity, resize_to_shape, resized_affine

MNI_1MM = np.array([[1.0, 0, 0, -90.0], [0, 1.0, 0, -126.0], [0, 0, 1.0, -72.0], [0, 0, 0, 1.0]])


def _oblique_affine():
    angle = np.deg2rad(12.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 1.3])
    affine[:3, 3] = [-80.0, -110.0, -60.0]
    return affine


def _world(affine, ijk):
    return nib.affines.apply_affine(affine, np.asarray(ijk, float))


# ---------------------------------------------------------------- normalize_intensity


@pytest.fixture
def ramp():
    """Values 0..N-1 in a block; a mask over part of the block; 1 mm grid."""
    data = np.arange(20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20)
    mask = np.zeros(data.shape, bool)
    mask[2:18, 3:17, 4:16] = True
    return nib.Nifti1Image(data, np.eye(4)), mask


@pytest.mark.parametrize("percentiles", [(0.5, 99.5), (10.0, 90.0)])
def test_percentiles_map_to_0_and_1(ramp, percentiles):
    img, mask = ramp
    data = np.asarray(img.dataobj)
    low, high = np.percentile(data[mask], percentiles)
    out = normalize_intensity(img, mask, percentiles)
    assert out.dtype == np.float32
    assert out.shape == data.shape
    assert np.all(out[~mask] == 0.0)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[mask & (data <= low)] == 0.0)
    assert np.all(out[mask & (data >= high)] == 1.0)
    between = mask & (data > low) & (data < high)
    np.testing.assert_allclose(out[between], (data[between] - low) / (high - low), rtol=1e-5)
    # The share of clipped voxels is the share outside the percentiles.
    assert np.mean(out[mask] == 0.0) == pytest.approx(percentiles[0] / 100.0, abs=0.002)
    assert np.mean(out[mask] == 1.0) == pytest.approx(1.0 - percentiles[1] / 100.0, abs=0.002)


def test_hot_voxels_do_not_compress_the_contrast(ramp):
    img, mask = ramp
    data = np.asarray(img.dataobj).copy()
    hot = np.argwhere(mask)[:5]
    data[tuple(hot.T)] = 1e6
    out = normalize_intensity(nib.Nifti1Image(data, img.affine), mask)
    assert np.all(out[tuple(hot.T)] == 1.0)
    assert np.median(out[mask]) == pytest.approx(0.5, abs=0.02)


def test_background_is_zero_even_if_bright(ramp):
    img, mask = ramp
    data = np.asarray(img.dataobj).copy()
    data[~mask] = 5e4
    out = normalize_intensity(nib.Nifti1Image(data, img.affine), mask)
    assert np.all(out[~mask] == 0.0)


def test_empty_mask_is_refused(ramp):
    img, mask = ramp
    with pytest.raises(ValueError, match="brain mask is empty"):
        normalize_intensity(img, np.zeros_like(mask))


def test_constant_brain_does_not_divide_by_zero(ramp):
    img, mask = ramp
    out = normalize_intensity(nib.Nifti1Image(np.full(mask.shape, 3.0, np.float32), img.affine), mask)
    assert np.all(np.isfinite(out)) and np.all(out == 0.0)


# ---------------------------------------------------------------- resized_affine


@pytest.mark.parametrize("affine", [MNI_1MM, _oblique_affine()], ids=["mni", "oblique"])
@pytest.mark.parametrize("in_shape, out_shape", [((181, 217, 181), (84, 128, 84)), ((40, 48, 36), (84, 128, 84))])
def test_resized_affine_keeps_the_field_of_view(affine, in_shape, out_shape):
    new = resized_affine(affine, in_shape, out_shape)
    # Every corner of the outer voxel edges stays where it was.
    for corner in itertools.product((0, 1), repeat=3):
        old_edge = [-0.5 + c * n for c, n in zip(corner, in_shape)]
        new_edge = [-0.5 + c * n for c, n in zip(corner, out_shape)]
        np.testing.assert_allclose(_world(new, new_edge), _world(affine, old_edge), atol=1e-9)
    # So does the centre of the grid.
    np.testing.assert_allclose(
        _world(new, (np.array(out_shape) - 1) / 2), _world(affine, (np.array(in_shape) - 1) / 2), atol=1e-9
    )
    # The voxel size scales by in/out; the axes' directions do not change.
    old_size = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    new_size = np.sqrt((new[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(new_size, old_size * np.array(in_shape) / np.array(out_shape))
    np.testing.assert_allclose(new[:3, :3] / new_size, affine[:3, :3] / old_size, atol=1e-12)


def test_resized_affine_colin_to_model_grid():
    new = resized_affine(MNI_1MM, (181, 217, 181), (84, 128, 84))
    np.testing.assert_allclose(np.diag(new)[:3], [181 / 84, 217 / 128, 181 / 84])
    np.testing.assert_allclose(np.diag(new)[:3], [2.1548, 1.6953, 2.1548], atol=1e-4)
    # First voxel centre: half a new voxel in from the old outer edge (-90.5 mm in x).
    np.testing.assert_allclose(new[:3, 3], [-90.5 + 181 / 168, -126.5 + 217 / 256, -72.5 + 181 / 168])


def test_identity_resize():
    np.testing.assert_array_equal(resized_affine(MNI_1MM, (10, 12, 14), (10, 12, 14)), MNI_1MM)


@pytest.mark.parametrize("out_shape", [(20, 30, 18), (84, 128, 84)], ids=["down", "up"])
def test_resize_to_shape_agrees_with_its_affine(out_shape):
    """Resample an image whose value is the world position: every output voxel (away
    from the edges) must hold the world position that the new affine gives it."""
    in_shape = (40, 48, 36)
    affine = _oblique_affine()
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in in_shape], indexing="ij"), axis=-1)
    world = nib.affines.apply_affine(affine, ijk)
    new_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in out_shape], indexing="ij"), axis=-1)
    interior = tuple(slice(n // 5, n - n // 5) for n in out_shape)
    for axis in range(3):
        resized, new_affine = resize_to_shape(world[..., axis], affine, out_shape, order=1)
        expected = nib.affines.apply_affine(new_affine, new_ijk)[..., axis]
        np.testing.assert_allclose(resized[interior], expected[interior], atol=1e-3)


def test_resize_to_shape_of_a_mask_stays_binary():
    mask = np.zeros((40, 48, 36), np.float32)
    mask[10:30, 12:36, 8:28] = 1.0
    resized, affine = resize_to_shape(mask, MNI_1MM, (20, 24, 18), order=0)
    assert resized.dtype == np.float32 and resized.shape == (20, 24, 18)
    assert set(np.unique(resized)) == {0.0, 1.0}
    assert resized.sum() * 8 == pytest.approx(mask.sum(), rel=0.01)
    np.testing.assert_allclose(affine, resized_affine(MNI_1MM, (40, 48, 36), (20, 24, 18)))


# ---------------------------------------------------------------- normalize_and_resize


@pytest.fixture(scope="module")
def brain_1mm(phantom_lib):
    """A skull-stripped brain phantom on a small 1 mm grid (49 x 62 x 42), its mask, and the
    mask's world centre. The grid is cropped unevenly so that the brain is off-centre: a
    wrong resampling convention would then move it."""
    phantom = phantom_lib.make_phantom(shape=(56, 64, 48), voxel_mm=1.0, scale=0.3, brain_only=True, smooth_vox=1.0)
    crop = (slice(7, None), slice(2, None), slice(6, None))
    affine = phantom.img.affine @ nib.affines.from_matvec(np.eye(3), [7, 2, 6])
    brain = phantom.brain[crop]
    assert brain.sum() == phantom.brain.sum()  # the crop cuts background only
    img = nib.Nifti1Image(phantom.data[crop], affine)
    mask = nib.Nifti1Image(brain.astype(np.uint8), affine)
    centre = _world(affine, np.argwhere(brain).mean(axis=0))
    grid_centre = _world(affine, (np.array(brain.shape) - 1) / 2)
    assert np.all(np.abs(centre - grid_centre) >= [3.0, 0.5, 2.5])
    return img, mask, centre


@pytest.mark.parametrize("shape", [(24, 28, 20), (84, 128, 84)], ids=["down", "model-grid"])
def test_normalize_and_resize(brain_1mm, shape):
    img, mask, centre = brain_1mm
    brain = np.asarray(mask.dataobj) > 0
    image, small_mask = normalize_and_resize(img, mask, shape=shape)
    data = np.asarray(image.dataobj)
    inside = np.asarray(small_mask.dataobj)
    assert data.shape == shape and inside.shape == shape
    assert data.dtype == np.float32 and image.get_data_dtype() == np.float32
    assert inside.dtype == np.uint8 and set(np.unique(inside)) == {0, 1}
    assert data.min() == 0.0 and data.max() <= 1.0
    assert data.max() > 0.9  # the bright end of the brain is still near 1
    assert np.all(data[inside == 0] == 0.0)
    assert np.all(data[inside == 1] >= 0.0)
    expected_affine = resized_affine(img.affine, brain.shape, shape)
    np.testing.assert_allclose(image.affine, expected_affine)
    np.testing.assert_allclose(small_mask.affine, expected_affine)
    # The brain stays where it was in the world: the mask centres agree within one output
    # voxel, in fact within 0.2 of one (measured <= 0.04; an affine without the half-voxel
    # shift of resized_affine would be 0.23-0.5 voxel off).
    new_voxel = np.sqrt((expected_affine[:3, :3] ** 2).sum(axis=0))
    new_centre = _world(expected_affine, np.argwhere(inside).mean(axis=0))
    assert np.all(np.abs(new_centre - centre) < new_voxel), (new_centre, centre)
    assert np.all(np.abs(new_centre - centre) < 0.2 * new_voxel), (new_centre, centre)
    # And its volume too (majority-vote resampling of the mask).
    old_ml = brain.sum() / 1000.0
    assert inside.sum() * np.prod(new_voxel) / 1000.0 == pytest.approx(old_ml, rel=0.1)


def test_normalize_and_resize_default_shape(brain_1mm):
    img, mask, _ = brain_1mm
    image, small_mask = normalize_and_resize(img, mask)
    assert image.shape == (84, 128, 84) and small_mask.shape == (84, 128, 84)
    np.testing.assert_allclose(np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0)), [49 / 84, 62 / 128, 42 / 84])
