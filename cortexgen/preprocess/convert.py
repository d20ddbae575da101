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
