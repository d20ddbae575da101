"""Adaptive non-local-means denoising with a Rician noise model.

Two engines, chosen in config (``preprocess.denoise.method``):

* ``sanlm`` (default): CAT12's spatially adaptive non-local means (cat-surf ``vol_sanlm``).
  On a Colin27 phantom with Rician noise (sigma 4 % of max) it gave +8.1 dB PSNR in 56 s,
  against +6.2 dB in 165 s for ANTs' defaults (2-core machine; benchmarks/preprocess.py).
* ``ants``: ANTs' ``DenoiseImage`` (Manjon's adaptive NLM), kept for comparison.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from cortexgen.preprocess.convert import ants_to_nib, nib_to_ants

DENOISE_METHODS = ("sanlm", "ants")


def denoise_rician(img: nib.Nifti1Image, method: str = "sanlm", strength: float = 1.0) -> nib.Nifti1Image:
    """Denoise a magnitude MR image assuming Rician noise.

    Args:
        img: 3D image, any intensity scale; negative values (which magnitude images
            cannot have, but resampled ones sometimes do) are clipped to 0 first.
        method: ``"sanlm"`` (cat-surf) or ``"ants"`` (ANTsPy ``denoise_image``).
        strength: filter strength for ``sanlm`` (1.0 = CAT12's default); ignored by ``ants``.

    Returns:
        float32 image on the same grid and affine.
    """
    if method not in DENOISE_METHODS:
        raise ValueError(f"unknown denoise method {method!r}; expected one of {DENOISE_METHODS}")
    data = np.clip(np.asarray(img.dataobj, dtype=np.float32), 0, None)
    if method == "sanlm":
        import cat_surf

        # libCAT indexes volumes in Fortran (NIfTI) order.
        denoised = np.asarray(cat_surf.vol_sanlm(np.asfortranarray(data), is_rician=True, strength=float(strength)))
        # No header copy: the input's (often int16) data type must not follow the float result.
        return nib.Nifti1Image(denoised.astype(np.float32), img.affine)

    import ants

    clipped = nib.Nifti1Image(data, img.affine)
    denoised = ants.denoise_image(nib_to_ants(clipped), noise_model="Rician")
    return ants_to_nib(denoised, like=img)
