"""cortexgen.preprocess.skullstrip: the template-mask path, the volume check, and deepbet's
steps as cortexgen runs them against deepbet's own.

deepbet's masks are not judged here: a CNN on a synthetic phantom says nothing (it is
tested on real heads elsewhere).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cortexgen.errors import InputImageError
from cortexgen.preprocess.skullstrip import mask_dice, skull_strip, template_brain_mask


@pytest.fixture(scope="module")
def template_mask(full_size_brain):
    """The real-size phantom's brain mask (1198 mL, 2 mm grid) as the template's mask."""
    return nib.Nifti1Image(full_size_brain.brain.astype(np.uint8), full_size_brain.img.affine)


def _volume_ml(mask, affine) -> float:
    return float(mask.sum()) * abs(np.linalg.det(affine[:3, :3])) / 1000.0


def test_template_mask_on_the_same_grid(template_mask, full_size_brain):
    mask = template_brain_mask(template_mask, full_size_brain.img)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, full_size_brain.brain)


def test_template_mask_resampled_to_another_grid(template_mask, phantom_lib):
    # A coarser, shifted grid of another shape (covering the whole brain).
    target = phantom_lib.make_phantom(shape=(60, 70, 54), voxel_mm=3.0, scale=1.0, centre=(7.0, -9.0, 13.0))
    mask = template_brain_mask(template_mask, target.img)
    assert mask.shape == (60, 70, 54)
    source_ml = _volume_ml(np.asarray(template_mask.dataobj) > 0, template_mask.affine)
    assert _volume_ml(mask, target.img.affine) == pytest.approx(source_ml, rel=0.05)
    # Resampled in world space: it overlaps the brain as rendered on that grid.
    assert phantom_lib.dice(mask, target.brain) > 0.9


def test_template_mask_with_a_different_affine_only(template_mask):
    """Same shape, shifted by 4 mm (two voxels) along x: resampled, not reused."""
    shifted = template_mask.affine.copy()
    shifted[0, 3] += 4.0
    target = nib.Nifti1Image(np.zeros(template_mask.shape, np.float32), shifted)
    mask = template_brain_mask(template_mask, target)
    source = np.asarray(template_mask.dataobj) > 0
    np.testing.assert_array_equal(mask[:-2], source[2:])
    assert not mask[-2:].any()


def test_skull_strip_with_template_mask(full_size_head, template_mask):
    # The phantom brain is 1198 mL; this test is about masking, not the volume guard.
    brain, mask = skull_strip(
        full_size_head.img, method="template", template_mask=template_mask, volume_range_ml=(800, 2400), source="head.nii.gz"
    )
    data = np.asarray(brain.dataobj)
    inside = full_size_head.brain
    assert data.dtype == np.float32
    assert np.asarray(mask.dataobj).dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(mask.dataobj), inside.astype(np.uint8))
    assert np.all(data[~inside] == 0.0)
    np.testing.assert_array_equal(data[inside], full_size_head.data[inside])
    for out in (brain, mask):
        np.testing.assert_array_equal(out.affine, full_size_head.img.affine)
        assert out.header.get_xyzt_units() == ("mm", "sec")


def test_implausible_mask_volume_names_the_source(small_head):
    """The half-size phantom's brain is 150 mL: outside the default 1500-2400 mL."""
    mask = nib.Nifti1Image(small_head.brain.astype(np.uint8), small_head.img.affine)
    source = "/out/sub-01/sub-01_space-MNI_T1w.nii.gz"
    with pytest.raises(InputImageError) as excinfo:
        skull_strip(small_head.img, method="template", template_mask=mask, source=source)
    err = excinfo.value
    assert err.path == source
    assert str(err).startswith(f"{source}: brain mask from template is 150 mL")
    assert "[1500, 2400] mL" in str(err)
    # The range is configurable: the same mask passes a range that holds it.
    brain, _ = skull_strip(small_head.img, method="template", template_mask=mask, volume_range_ml=(100.0, 200.0))
    assert np.count_nonzero(np.asarray(brain.dataobj)) == small_head.brain.sum()


def test_too_large_mask_is_refused(full_size_head, template_mask):
    with pytest.raises(InputImageError, match=r"brain mask from template is 1198 mL, outside .*\[800, 1000\]"):
        skull_strip(full_size_head.img, method="template", template_mask=template_mask, volume_range_ml=(800, 1000))


def test_bad_arguments(small_head):
    with pytest.raises(ValueError, match="needs template_mask"):
        skull_strip(small_head.img, method="template")
    with pytest.raises(ValueError, match="unknown skull-strip method 'bet'"):
        skull_strip(small_head.img, method="bet")


def test_mask_dice():
    a = np.zeros((10, 10, 10), bool)
    a[:5] = True
    b = np.zeros_like(a)
    b[5:] = True
    assert mask_dice(a, a) == 1.0
    assert mask_dice(a, b) == 0.0
    c = np.zeros_like(a)
    c[:5, :5] = True  # half of a
    assert mask_dice(a, c) == pytest.approx(2 * 250 / (500 + 250))
    assert mask_dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert mask_dice(a.astype(np.uint8), a.astype(np.float32)) == 1.0


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 128**3])
def test_sorted_quantile_is_torch_quantile_bit_for_bit(n):
    import torch

    from cortexgen.preprocess.skullstrip import sorted_quantile

    generator = torch.Generator().manual_seed(n)
    values = torch.rand(n, generator=generator) * 1000
    for data in (values, values.round()):  # and with ties
        for q in (0.0, 0.005, 1 / 3, 0.5, 0.995, 1.0):
            assert torch.equal(sorted_quantile(data, q), torch.quantile(data, q)), (n, q)


def test_deepbet_probability_is_deepbets_run_model(full_size_brain):
    """The same probabilities and box as deepbet's own run_model (a phantom says nothing
    about deepbet's quality, but the two code paths must agree on any input)."""
    from cortexgen.preprocess.skullstrip import deepbet_extractor, deepbet_probability

    data = np.asarray(full_size_brain.img.dataobj, dtype=np.float32)
    original = data.copy()
    extractor = deepbet_extractor()
    expected = extractor.run_model(data.copy())
    expected_box = extractor.bbox
    extractor.bbox = None
    probability = deepbet_probability(extractor, data)
    np.testing.assert_array_equal(data, original)
    assert extractor.bbox == expected_box
    np.testing.assert_array_equal(probability, expected)
    assert probability.max() > 0.5  # the comparison covers a brain, not an empty box
