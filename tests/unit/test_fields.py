"""cortexgen.diffusion.fields: template → subject displacement fields (mm, RAS, pull-back).

Synthetic volumes on a 24 x 32 x 24 grid with the model grid's anisotropic voxels
(2.155 x 1.695 x 2.155 mm) and an offset; some tests repeat on a grid whose x axis is
flipped (LAS) and one whose first two array axes are swapped, so a mix-up between array
axes, world axes and grid_sample's reversed (x, y, z) order shows.

The registration pair: a smooth two-lobed blob (the "template") and the same blob moved
by SHIFT_MM = (4, -3, 2) mm (the "subject"); x and y, the axes ANTs' LPS world flips,
have opposite signs, so a missing or extra flip on either shows. Measured (SyNOnly,
meansquares, iterations (40, 20, 0)): 0.3-0.4 s per registration; mean absolute error
0.033 before and 0.0069 after warping; mean displacement inside the blob (-3.4, 2.4, -2.1)
mm for the expected -SHIFT_MM; the same to the last bit on reruns; warp_image with the
field within 4e-7 of ants.apply_transforms with ANTs' own transform files.
"""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from cortexgen.diffusion.fields import (
    FieldSettings,
    field_array,
    field_scale,
    register_to_template,
    resize_field,
    study_template,
    template_image,
    warp_image,
)
from cortexgen.preprocess.normalize import normalize_and_resize, resized_affine

SHAPE = (24, 32, 24)
VOXEL_MM = (2.155, 1.695, 2.155)
SHIFT_MM = np.array([4.0, -3.0, 2.0])


def grid_affine(kind: str) -> np.ndarray:
    """Affine of SHAPE: 'ras' (model-grid-like), 'flipped' (x axis reversed), 'swapped'
    (array axis 0 runs along world y, array axis 1 along world x)."""
    affine = np.diag([*VOXEL_MM, 1.0])
    affine[:3, 3] = [-20.0, -27.0, -25.0]
    if kind == "flipped":
        affine[0, 0] = -VOXEL_MM[0]
        affine[0, 3] = 20.0
    elif kind == "swapped":
        affine[:3, :2] = affine[:3, [1, 0]]
    return affine


def world_points(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def blob(affine, centre_mm, shape=SHAPE) -> np.ndarray:
    """A smooth asymmetric blob: a broad ellipsoidal Gaussian and a small off-centre lobe."""
    points = world_points(shape, affine) - np.asarray(centre_mm)
    broad = np.exp(-((points / np.array([12.0, 14.0, 10.0])) ** 2).sum(-1))
    lobe = 0.6 * np.exp(-(((points - np.array([6.0, 8.0, 3.0])) / np.array([4.0, 5.0, 4.0])) ** 2).sum(-1))
    return (broad + lobe).astype(np.float32)


def random_volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE, dtype=np.float32)


def constant_field(vector_mm, shape=SHAPE) -> np.ndarray:
    return np.broadcast_to(np.asarray(vector_mm, dtype=np.float32)[:, None, None, None], (3, *shape)).copy()


# --- warp_image ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ras", "flipped", "swapped"])
def test_zero_field_is_the_identity(kind):
    image = random_volume()
    warped = warp_image(image, np.zeros((3, *SHAPE), np.float32), grid_affine(kind))
    assert isinstance(warped, np.ndarray) and warped.shape == SHAPE and warped.dtype == np.float32
    np.testing.assert_allclose(warped, image, atol=1e-5, rtol=0)
    # In float64 the round trip through grid_sample's [-1, 1] coordinates is exact to ~1e-12.
    warped64 = warp_image(image.astype(np.float64), np.zeros((3, *SHAPE)), grid_affine(kind))
    np.testing.assert_allclose(warped64, image, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["ras", "flipped", "swapped"])
@pytest.mark.parametrize("world_axis", [0, 1, 2])
def test_constant_field_is_a_voxel_shift(kind, world_axis):
    """+d mm along a world axis reads the image d mm further along it: for d = 2 voxels
    along the array axis that runs along that world axis, warped[i] = image[i + 2 s]
    with s the sign of that axis in the affine."""
    affine = grid_affine(kind)
    array_axis = int(np.flatnonzero(affine[world_axis, :3])[0])
    step_mm = affine[world_axis, array_axis]  # signed: negative on the flipped axis
    vector = np.zeros(3)
    vector[world_axis] = 2.0 * abs(step_mm)
    shift = 2 * int(np.sign(step_mm))
    image = random_volume(1)
    warped = warp_image(image, constant_field(vector), affine)

    n = SHAPE[array_axis]
    inside = [slice(None)] * 3
    source = [slice(None)] * 3
    outside = [slice(None)] * 3
    if shift > 0:
        inside[array_axis], source[array_axis], outside[array_axis] = (
            slice(0, n - shift),
            slice(shift, n),
            slice(n - shift, n),
        )
    else:
        inside[array_axis], source[array_axis], outside[array_axis] = (
            slice(-shift, n),
            slice(0, n + shift),
            slice(0, -shift),
        )
    np.testing.assert_allclose(warped[tuple(inside)], image[tuple(source)], atol=1e-5, rtol=0)
    # Beyond the grid: zeros.
    np.testing.assert_allclose(warped[tuple(outside)], 0.0, atol=1e-5)


def test_batches_of_fields_warp_one_or_many_images():
    affine = grid_affine("ras")
    image = random_volume(2)
    vectors = [(0.0, 0.0, 0.0), (2.155, 0.0, 0.0), (1.0, -2.5, 0.7)]
    fields = np.stack([constant_field(v) for v in vectors])  # (3, 3, X, Y, Z)
    one_by_one = np.stack([warp_image(image, f, affine) for f in fields])[:, None]

    shared = warp_image(image[None, None], fields, affine)
    assert shared.shape == (3, 1, *SHAPE)
    np.testing.assert_allclose(shared, one_by_one, atol=1e-6)
    # An unbatched image with batched fields is shared too.
    np.testing.assert_allclose(warp_image(image, fields, affine), one_by_one, atol=1e-6)

    images = np.stack([random_volume(s) for s in (3, 4, 5)])[:, None]
    per_image = warp_image(images, fields, affine)
    for b in range(3):
        np.testing.assert_allclose(per_image[b, 0], warp_image(images[b, 0], fields[b], affine), atol=1e-6)


def test_torch_in_torch_out_and_gradients_flow():
    affine = grid_affine("flipped")
    image = torch.from_numpy(random_volume(6))
    field = torch.from_numpy(constant_field((1.3, -0.4, 2.0))).requires_grad_(True)
    warped = warp_image(image, field, affine)
    assert isinstance(warped, torch.Tensor) and warped.shape == SHAPE
    np.testing.assert_allclose(
        warped.detach().numpy(), warp_image(image.numpy(), field.detach().numpy(), affine), atol=1e-6
    )
    warped.sum().backward()
    assert field.grad is not None and torch.isfinite(field.grad).all()


def test_warp_rejects_mismatched_grids():
    with pytest.raises(ValueError):
        warp_image(random_volume(), np.zeros((3, 20, 32, 24), np.float32), grid_affine("ras"))
    with pytest.raises(ValueError):
        warp_image(random_volume(), np.zeros((*SHAPE, 3), np.float32), grid_affine("ras"))


# --- resize_field, field_scale, field_array ----------------------------------------------


@pytest.mark.parametrize("new_shape", [(12, 16, 12), (11, 17, 13), (48, 64, 48)])
def test_resized_constant_field_keeps_its_millimetres(new_shape):
    vector = (2.5, -1.25, 0.75)
    resized = resize_field(constant_field(vector), new_shape)
    assert isinstance(resized, np.ndarray) and resized.shape == (3, *new_shape)
    np.testing.assert_allclose(resized, constant_field(vector, new_shape), atol=1e-6, rtol=0)
    batch = torch.from_numpy(np.stack([constant_field(vector), constant_field((0.0, 3.0, -3.0))]))
    resized_batch = resize_field(batch, new_shape)
    assert isinstance(resized_batch, torch.Tensor) and resized_batch.shape == (2, 3, *new_shape)
    np.testing.assert_allclose(resized_batch[1].numpy(), constant_field((0.0, 3.0, -3.0), new_shape), atol=1e-6)


def test_resize_field_follows_the_shared_field_of_view():
    """A field linear in world x, resampled to a coarser grid, takes the values at the
    coarse grid's voxel centres (the affine of resized_affine): same field of view."""
    affine = grid_affine("ras")
    world = world_points(SHAPE, affine)
    field = np.stack([0.1 * world[..., 0], np.zeros(SHAPE), np.zeros(SHAPE)]).astype(np.float32)
    coarse_shape = (12, 16, 12)
    coarse = resize_field(field, coarse_shape)
    coarse_world = world_points(coarse_shape, resized_affine(affine, SHAPE, coarse_shape))
    # Trilinear reproduces a linear function exactly away from the clamped outer half voxel.
    np.testing.assert_allclose(coarse[0, 1:-1], 0.1 * coarse_world[1:-1, ..., 0], atol=1e-4)


def test_field_scale_is_the_pooled_absolute_percentile():
    rng = np.random.default_rng(0)
    fields = [rng.normal(0.0, 2.0, (3, 8, 8, 8)).astype(np.float32) for _ in range(4)]
    expected = np.percentile(np.abs(np.concatenate([f.ravel() for f in fields])), 99.5)
    assert field_scale(fields) == pytest.approx(expected, rel=1e-6)
    assert field_scale(np.stack(fields)) == pytest.approx(expected, rel=1e-6)
    assert field_scale([torch.from_numpy(f) for f in fields], percentile=100) == pytest.approx(
        max(np.abs(f).max() for f in fields)
    )
    # Normal(0, 2): the 99.5th percentile of |x| is 2.81 sigma.
    assert field_scale(fields) == pytest.approx(2.81 * 2.0, rel=0.1)
    with pytest.raises(ValueError):
        field_scale([np.zeros((3, 4, 4, 4))])


# --- template_image -----------------------------------------------------------------------


def test_template_image_is_prepared_like_a_subject():
    affine = np.eye(4)
    affine[:3, 3] = [-20.0, -24.0, -18.0]
    shape = (40, 48, 36)
    rng = np.random.default_rng(3)
    head = (100.0 * blob(affine, (0.0, 0.0, 0.0), shape) + rng.random(shape, dtype=np.float32) * 5).astype(np.float32)
    brain = (((world_points(shape, affine) / np.array([14.0, 17.0, 12.0])) ** 2).sum(-1) <= 1.0).astype(np.uint8)
    template = nib.Nifti1Image(head, affine)
    mask = nib.Nifti1Image(brain, affine)
    model_shape = (20, 24, 18)
    like = nib.Nifti1Image(np.zeros(model_shape, np.float32), resized_affine(affine, shape, model_shape))

    prepared = template_image(template, mask, like)
    data = np.asarray(prepared.dataobj)
    assert data.shape == model_shape and data.dtype == np.float32
    np.testing.assert_array_equal(prepared.affine, like.affine)
    reference, reference_mask = normalize_and_resize(template, mask, shape=model_shape)
    np.testing.assert_array_equal(data, np.asarray(reference.dataobj))
    assert data.min() >= 0.0 and 0.9 < data.max() <= 1.0
    assert np.all(data[np.asarray(reference_mask.dataobj) == 0] == 0.0)

    with pytest.raises(ValueError, match="field of view"):
        other_grid = affine.copy()
        other_grid[:3, 3] += 5.0
        template_image(template, mask, nib.Nifti1Image(np.zeros(model_shape, np.float32), other_grid))


# --- register_to_template ----------------------------------------------------------------


@pytest.fixture(scope="module", params=["ras", "flipped"])
def registration(request, tmp_path_factory):
    """One registration per grid kind, keeping a copy of ANTs' own transform files."""
    import ants

    affine = grid_affine(request.param)
    centre = np.array([-1.0, 2.0, 0.0])
    template = nib.Nifti1Image(blob(affine, centre), affine)
    subject = nib.Nifti1Image(blob(affine, centre + SHIFT_MM), affine)
    keep = tmp_path_factory.mktemp(f"transforms_{request.param}")
    seen = {}
    original = ants.registration

    def keeping_registration(*args, **kwargs):
        result = original(*args, **kwargs)
        seen["kwargs"] = kwargs
        seen["files"] = list(result["fwdtransforms"]) + list(result["invtransforms"])
        fwd = result["fwdtransforms"]
        seen["fwd"] = [str(shutil.copy(path, keep / f"{i}_{os.path.basename(path)}")) for i, path in enumerate(fwd)]
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ants, "registration", keeping_registration)
        field = register_to_template(subject, template, FieldSettings())
    return {"affine": affine, "template": template, "subject": subject, "field": field, **seen}


def test_registration_returns_a_ras_mm_vector_image(registration, tmp_path):
    field = registration["field"]
    assert field.shape == (*SHAPE, 3)
    assert field.get_data_dtype() == np.float32
    np.testing.assert_array_equal(field.affine, registration["subject"].affine)
    assert field.header.get_intent()[0] == "vector"
    nib.save(field, tmp_path / "field.nii.gz")
    np.testing.assert_array_equal(field_array(nib.load(tmp_path / "field.nii.gz")), field_array(field))
    # No rigid/affine stage: SyN only; and ANTs' temporary transform files are gone.
    assert registration["kwargs"]["type_of_transform"] == "SyNOnly"
    assert not any(os.path.exists(path) for path in registration["files"])


def test_registration_warps_the_template_onto_the_subject(registration):
    template = registration["template"].get_fdata(dtype=np.float32)
    subject = registration["subject"].get_fdata(dtype=np.float32)
    displacement = field_array(registration["field"])
    warped = warp_image(template, displacement, registration["affine"])
    before = np.abs(template - subject).mean()
    after = np.abs(warped - subject).mean()
    assert after < 0.5 * before

    # template(x + u) = subject(x) with the subject moved by +SHIFT_MM: u = -SHIFT_MM in the blob.
    in_blob = subject > 0.3
    mean_mm = displacement[:, in_blob].mean(axis=1)
    assert np.array_equal(np.sign(mean_mm), -np.sign(SHIFT_MM)), mean_mm
    assert np.all(np.abs(mean_mm + SHIFT_MM) < 0.4 * np.abs(SHIFT_MM)), mean_mm


def test_registration_field_matches_ants_own_resampling(registration):
    """warp_image with the RAS field reproduces ants.apply_transforms with ANTs' own
    transform files: pins the LPS -> RAS flip and the fixed/moving roles."""
    import ants

    from cortexgen.preprocess.convert import nib_to_ants

    fixed = nib_to_ants(registration["subject"])
    moving = nib_to_ants(registration["template"])
    by_ants = ants.apply_transforms(fixed, moving, registration["fwd"], interpolator="linear").numpy()
    ours = warp_image(
        registration["template"].get_fdata(dtype=np.float32), field_array(registration["field"]), registration["affine"]
    )
    assert np.corrcoef(by_ants.ravel(), ours.ravel())[0, 1] > 0.99
    # Measured: 4e-7 apart everywhere; with x and y left in LPS they would be 0.8 apart
    # (correlation 0.74).
    np.testing.assert_allclose(ours, by_ants, atol=1e-4, rtol=0)


def test_registration_is_reproducible(registration):
    again = register_to_template(registration["subject"], registration["template"], FieldSettings())
    np.testing.assert_allclose(np.asarray(again.dataobj), np.asarray(registration["field"].dataobj), atol=1e-5, rtol=0)


def test_registration_needs_one_grid(registration):
    subject = registration["subject"]
    shifted = subject.affine.copy()
    shifted[:3, 3] += 1.0
    moved = nib.Nifti1Image(np.asarray(subject.dataobj), shifted)
    with pytest.raises(ValueError, match="same grid"):
        register_to_template(moved, registration["template"])


# --- study template -----------------------------------------------------------------------


def brain_phantom(affine, radii_mm) -> np.ndarray:
    """A two-compartment ellipsoid 'brain' on SHAPE: 1.0 in its inner 60 %, 0.5 in the rest,
    0 outside (edges one voxel soft)."""
    from scipy.ndimage import gaussian_filter

    points = world_points(SHAPE, affine)
    radius = np.sqrt(((points / np.asarray(radii_mm)) ** 2).sum(-1))
    image = np.where(radius < 0.6, 1.0, np.where(radius < 1.0, 0.5, 0.0))
    return np.where(radius < 1.05, gaussian_filter(image, 0.7), 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def study():
    """Four phantoms of 0.9-1.15 times one size; the start is smaller and has their contrast
    inverted (bright rim, dim core), as a space's template differs from a cohort."""
    affine = grid_affine("ras")
    base = np.array([14.0, 18.0, 12.0])
    images = [nib.Nifti1Image(brain_phantom(affine, base * scale), affine) for scale in (0.9, 1.0, 1.1, 1.15)]
    start = brain_phantom(affine, base * 0.85)
    inverted = np.where(start > 0.75, 0.5, np.where(start > 0.25, 1.0, start)).astype(np.float32)
    settings = FieldSettings(iterations=(40, 20, 0))
    initial = nib.Nifti1Image(inverted, affine)
    return {"images": images, "initial": initial, "settings": settings,
            "template": study_template(images, initial, settings, iterations=3)}


def test_study_template_is_the_images_mean_brain(study):
    images = [image.get_fdata() for image in study["images"]]
    initial, template = study["initial"].get_fdata(), study["template"].get_fdata()
    np.testing.assert_array_equal(study["template"].affine, study["initial"].affine)
    assert template.min() == 0.0 and template.max() == pytest.approx(1.0)
    # The images' contrast, not the start's: their bright core is ~22 % of the brain, the
    # start's ~80 % (measured: 0.245).
    core_fraction = [(image > 0.75).sum() / (image > 0.25).sum() for image in (template, initial, *images)]
    assert abs(core_fraction[0] - np.mean(core_fraction[2:])) < 0.08 < abs(core_fraction[1] - core_fraction[0])
    # Grown towards their mean extent (measured: 1451 voxels from 982; theirs 1844).
    volumes = [(image > 0.25).sum() for image in (template, initial, *images)]
    assert abs(volumes[0] - np.mean(volumes[2:])) < 0.5 * abs(volumes[1] - np.mean(volumes[2:]))
    # Closer to every image than the start, and to all of them by half.
    ours = [np.abs(template - image).mean() for image in images]
    start = [np.abs(initial - image).mean() for image in images]
    assert all(a < b for a, b in zip(ours, start)) and np.mean(ours) < 0.5 * np.mean(start), (ours, start)


def test_study_template_is_reproducible(study):
    again = study_template(study["images"], study["initial"], study["settings"], iterations=3)
    np.testing.assert_allclose(again.get_fdata(), study["template"].get_fdata(), atol=1e-5, rtol=0)


def test_study_template_needs_images_on_its_grid(study):
    image = study["images"][0]
    shifted = image.affine.copy()
    shifted[:3, 3] += 2.0
    with pytest.raises(ValueError, match="grid"):
        study_template([nib.Nifti1Image(np.asarray(image.dataobj), shifted)], study["initial"], study["settings"])
    with pytest.raises(ValueError, match="at least one"):
        study_template([], study["initial"], study["settings"])


# --- stationary velocity fields -----------------------------------------------------------


def _smooth_random_field(shape, peak_mm, seed):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = np.stack([gaussian_filter(rng.normal(size=shape), 2.5) for _ in range(3)])
    return field / np.abs(field).max() * peak_mm


def test_an_integrated_velocity_field_does_not_fold_where_the_same_displacement_does():
    from cortexgen.diffusion.fields import integrate_velocity
    from cortexgen.diffusion.run import folding_fraction

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    field = _smooth_random_field((24, 28, 24), peak_mm=25.0, seed=0)
    assert folding_fraction(field, affine) > 0.01
    displacement = integrate_velocity(field, affine)
    assert displacement.shape == field.shape and np.isfinite(displacement).all()
    assert folding_fraction(displacement, affine) == 0.0


def test_integrating_a_constant_velocity_is_a_translation_by_it():
    from cortexgen.diffusion.fields import integrate_velocity

    field = np.zeros((3, 10, 10, 10))
    field[0] = 1.5
    assert np.allclose(integrate_velocity(field, np.diag([2.0, 2.0, 2.0, 1.0])), field, atol=1e-9)


def test_the_velocity_of_an_integrated_field_integrates_back_to_it():
    from cortexgen.diffusion.fields import integrate_velocity, velocity_from_displacement

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    velocity = _smooth_random_field((20, 24, 20), peak_mm=6.0, seed=1)
    displacement = integrate_velocity(velocity, affine)

    def residual(iterations):
        recovered = velocity_from_displacement(displacement, affine, iterations=iterations)
        return recovered, np.abs(integrate_velocity(recovered, affine) - displacement)

    _, start = residual(0)  # the displacement taken as its own velocity
    recovered, error = residual(4)
    assert error.mean() < 0.05 * start.mean()
    assert np.percentile(error, 99) < 0.05  # mm; the largest errors sit at the grid's edge
    assert np.abs(recovered - velocity).mean() < 0.05 * np.abs(velocity).mean()
