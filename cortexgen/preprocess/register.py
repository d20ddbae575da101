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
        random_seed: seeds ANTs' random metric sampling, so reruns give the same transform.
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
    registration = ants.registration(
        fixed=fixed_ants,
        moving=moving_ants,
        type_of_transform=type_of_transform,
        moving_mask=mask_ants,
        random_seed=int(random_seed),
    )
    transform_file = registration["fwdtransforms"][0]
    transform = ants.read_transform(transform_file)
    warped = ants.apply_transforms(fixed_ants, moving_ants, [transform_file], interpolator="linear")
    warped_img = ants_to_nib(warped, like=template)
    warped_img.set_data_dtype(np.float32)
    return AffineResult(warped=warped_img, transform=transform, ras_matrix=itk_affine_to_ras(transform))
