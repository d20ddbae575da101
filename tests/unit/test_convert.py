"""cortexgen.preprocess.convert: nibabel <-> ANTsPy in memory."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cortexgen.preprocess.convert import ants_to_nib, nib_to_ants, resampled_to_spacing


def _oblique_image():
    data = np.random.default_rng(0).uniform(0, 100, (20, 24, 18)).astype(np.float32)
    angle = np.deg2rad(10.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine[:3, :3] = affine[:3, :3] @ np.diag([1.5, 2.0, 2.5])
    affine[:3, 3] = [-20.0, 15.0, 30.0]
    return nib.Nifti1Image(data, affine)


def test_nib_to_ants_keeps_world_geometry():
    img = _oblique_image()
    ants_img = nib_to_ants(img)
    assert ants_img.shape == img.shape
    assert ants_img.pixeltype == "float"
    np.testing.assert_allclose(ants_img.spacing, [1.5, 2.0, 2.5], atol=1e-6)
    # ITK works in LPS: the origin is the RAS origin with x and y negated.
    np.testing.assert_allclose(ants_img.origin, [20.0, -15.0, 30.0], atol=1e-5)
    np.testing.assert_array_equal(ants_img.numpy(), np.asarray(img.dataobj))


def test_round_trip_with_and_without_like():
    img = _oblique_image()
    back = ants_to_nib(nib_to_ants(img))
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj))
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-4)
    exact = ants_to_nib(nib_to_ants(img), like=img)
    np.testing.assert_array_equal(exact.affine, img.affine)
    assert np.asarray(exact.dataobj).dtype == np.float32


def test_ants_to_nib_refuses_a_different_grid():
    img = _oblique_image()
    other = nib.Nifti1Image(np.zeros((20, 24, 17), np.float32), img.affine)
    with pytest.raises(ValueError, match=r"grid mismatch: ANTs image \(20, 24, 18\) vs reference \(20, 24, 17\)"):
        ants_to_nib(nib_to_ants(img), like=other)


def test_integer_input_becomes_float32():
    data = np.arange(16 * 16 * 16, dtype=np.int16).reshape(16, 16, 16)
    ants_img = nib_to_ants(nib.Nifti1Image(data, np.eye(4)))
    assert ants_img.pixeltype == "float"
    np.testing.assert_array_equal(ants_img.numpy(), data.astype(np.float32))


@pytest.mark.parametrize("nearest", [False, True])
@pytest.mark.parametrize("spacing", [2.0, 3.0, (2.0, 3.0, 1.25)])
def test_resampled_to_spacing_is_ants_resample_image(spacing, nearest):
    """Bit for bit ANTs' ResampleImage, geometry included (an oblique, anisotropic grid
    whose spacings do not divide the new ones)."""
    import ants

    img = nib_to_ants(_oblique_image())
    expected = ants.resample_image(img, (spacing,) * 3 if np.isscalar(spacing) else spacing, use_voxels=False,
                                   interp_type=1 if nearest else 0)
    resampled = resampled_to_spacing(img, spacing, nearest=nearest)
    assert resampled.shape == expected.shape and resampled.pixeltype == expected.pixeltype
    assert resampled.origin == expected.origin and resampled.spacing == expected.spacing
    np.testing.assert_array_equal(resampled.direction, expected.direction)
    np.testing.assert_array_equal(resampled.numpy(), expected.numpy())
    assert np.count_nonzero(resampled.numpy()) > 0.5 * resampled.numpy().size
