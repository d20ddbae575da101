"""nibabel <-> ANTsPy image conversion in memory (ANTsPy's own converters)."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def nib_to_ants(img: nib.Nifti1Image):
    """A float32 ``ANTsImage`` with the same voxels and world (RAS mm) geometry."""
    import ants

    data = np.asarray(img.dataobj, dtype=np.float32)
    clean = nib.Nifti1Image(data, img.affine)
    clean.header.set_xyzt_units("mm", "sec")
    return ants.from_nibabel_nifti(clean)


def ants_to_nib(ants_img, like: nib.Nifti1Image | None = None, dtype=np.float32) -> nib.Nifti1Image:
    """A ``Nifti1Image`` of ``ants_img``; with ``like`` its voxels reuse that image's affine.

    ``like`` must be on the same grid; passing it keeps the input's exact affine instead of
    one rebuilt from ITK's origin/spacing/direction (which round-trips to ~1e-6 mm).
    """
    import ants

    out = ants.to_nibabel_nifti(ants_img)
    data = np.asarray(out.dataobj).astype(dtype)
    affine = out.affine if like is None else like.affine
    if like is not None and data.shape != like.shape[:3]:
        raise ValueError(f"grid mismatch: ANTs image {data.shape} vs reference {like.shape[:3]}")
    result = nib.Nifti1Image(data, affine)
    result.header.set_xyzt_units("mm", "sec")
    return result


def resampled_to_spacing(ants_img, spacing_mm, nearest: bool = False):
    """``ants.resample_image(ants_img, spacing_mm, use_voxels=False, interp_type=1 if
    nearest else 0)``, the same image bit for bit (tested), by SimpleITK in a tenth of the
    time: ANTs' ResampleImage also builds a B-spline and four windowed-sinc interpolators of
    the whole input that it never uses (0.29 s for a 160x192x192 head; this, 0.02 s).

    As ANTs: the same origin and direction, ``int(old spacing * old size / spacing + 0.5)``
    voxels per axis, 0 outside the input.

    Args:
        ants_img: a 3D scalar ``ANTsImage``.
        spacing_mm: the new voxel size (mm), one number or one per axis.
        nearest: nearest-neighbour instead of linear interpolation (labels, masks).

    Returns:
        float32 ``ANTsImage``.
    """
    import ants
    import SimpleITK as sitk

    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,)))
    direction = np.asarray(ants_img.direction, dtype=float).ravel().tolist()
    # ANTsPy's arrays are indexed (i, j, k), SimpleITK's (k, j, i).
    image = sitk.GetImageFromArray(np.ascontiguousarray(ants_img.numpy().astype(np.float32, copy=False).T))
    image.SetOrigin(tuple(ants_img.origin))
    image.SetSpacing(tuple(ants_img.spacing))
    image.SetDirection(direction)
    size = [int(old * n / new + 0.5) for old, n, new in zip(ants_img.spacing, ants_img.shape, spacing)]
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    resampled = sitk.Resample(image, size, sitk.Transform(), interpolator, tuple(ants_img.origin), spacing, direction,
                              0.0, sitk.sitkFloat32)
    return ants.from_numpy(sitk.GetArrayFromImage(resampled).T, origin=tuple(ants_img.origin), spacing=spacing,
                           direction=np.asarray(ants_img.direction, dtype=float))
