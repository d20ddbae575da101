"""Affine registration of a head to an MNI-space head template (ANTsPy)."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from cortexgen.preprocess.convert import ants_to_nib, nib_to_ants

#: ITK's LPS world vs nibabel's RAS world.
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class AffineResult:
    """An image resampled into template space and the transform that took it there.

    Attributes:
        warped: the moving image on the template grid (float32).
        transform: the ANTs (ITK) affine transform, template -> moving point mapping as
            ITK stores it; write it with ``ants.write_transform``.
        ras_matrix: the same transform as a 4x4 matrix mapping template-space RAS mm
            to moving-space RAS mm (how a point in the template finds its voxel in the scan).
    """

    warped: nib.Nifti1Image
    transform: object
    ras_matrix: np.ndarray


def itk_affine_to_ras(transform) -> np.ndarray:
    """4x4 RAS matrix of an ANTs affine transform (fixed/template point -> moving point)."""
    params = np.asarray(transform.parameters, dtype=float)
    center = np.asarray(transform.fixed_parameters, dtype=float)
    linear = params[:9].reshape(3, 3)
    translation = params[9:12]
    # ITK: y = A (x - c) + t + c, all in LPS.
    offset = translation + center - linear @ center
    lps = np.eye(4)
    lps[:3, :3] = linear
    lps[:3, 3] = offset
    flip = np.eye(4)
    flip[:3, :3] = _LPS
    return flip @ lps @ flip


def affine_to_template(
    moving: nib.Nifti1Image,
    template: nib.Nifti1Image,
    type_of_transform: str = "AffineFast",
    random_seed: int = 42,
    moving_mask: np.ndarray | None = None,
) -> AffineResult:
    """Register ``moving`` to ``template`` with an affine transform and resample it there.

    Args:
        moving: the subject's head (skull on), any grid.
        template: an MNI-space head template; its grid (e.g. Colin27's 181x217x181 at 1 mm)
            is the output grid.
        type_of_transform: an ANTsPy affine type, ``"AffineFast"`` or ``"Affine"``.
        random_seed: seeds ANTs' random metric sampling. Reruns give the same transform only
            with one ITK thread: with more, the metric's threaded sums change order and the
            result moves by up to ~0.2 in a matrix entry (hence 1 thread for the rule).
        moving_mask: optional bool mask (moving's grid) restricting the metric.

    Returns:
        :class:`AffineResult` with the warped image (linear interpolation, float32).
    """
    import ants

    fixed_ants = nib_to_ants(template)
    moving_ants = nib_to_ants(moving)
    mask_ants = None
    if moving_mask is not None:
        mask_ants = nib_to_ants(nib.Nifti1Image(moving_mask.astype(np.float32), moving.affine))
    # ANTsPy 0.6 takes the seed from ants.config, not from a keyword argument (which its
    # **kwargs would silently swallow), so set it there for this call only.
    previous_seed = ants.config._random_seed
    ants.config._random_seed = int(random_seed)
    try:
        registration = ants.registration(
            fixed=fixed_ants,
            moving=moving_ants,
            type_of_transform=type_of_transform,
            moving_mask=mask_ants,
        )
    finally:
        ants.config._random_seed = previous_seed
    transform_file = registration["fwdtransforms"][0]
    transform = ants.read_transform(transform_file)
    warped = ants.apply_transforms(fixed_ants, moving_ants, [transform_file], interpolator="linear")
    warped_img = ants_to_nib(warped, like=template)
    warped_img.set_data_dtype(np.float32)
    return AffineResult(warped=warped_img, transform=transform, ras_matrix=itk_affine_to_ras(transform))


def register_head(
    head: nib.Nifti1Image,
    template: nib.Nifti1Image,
    template_brain_mask: nib.Nifti1Image,
    skullstripped_max_volume_ml: float = 2000.0,
    type_of_transform: str = "AffineFast",
    random_seed: int = 42,
) -> tuple[AffineResult, bool]:
    """Affine of a scan to the head template, or to its brain if the scan has no skull.

    Matching a head template's skull to a skull-stripped scan's empty background pulls the
    brain outward, so a scan that :func:`looks_skull_stripped` is registered to the
    template masked by ``template_brain_mask`` instead.

    Returns:
        ``(result, skull_stripped)``: the registration and whether the brain target was used.
    """
    from cortexgen.preprocess.bias import looks_skull_stripped

    skull_stripped = looks_skull_stripped(head, max_volume_ml=skullstripped_max_volume_ml)
    if skull_stripped:
        brain = np.asarray(template_brain_mask.dataobj) > 0
        template_data = np.asarray(template.dataobj, dtype=np.float32)
        template = nib.Nifti1Image(np.where(brain, template_data, 0).astype(np.float32), template.affine)
    result = affine_to_template(head, template, type_of_transform=type_of_transform, random_seed=random_seed)
    return result, skull_stripped


def save_transform(transform, path) -> None:
    """Write an ANTs transform (ITK ``.mat``) atomically."""
    import ants

    from cortexgen.io import atomic_output

    with atomic_output(path) as tmp:
        ants.write_transform(transform, str(tmp))
