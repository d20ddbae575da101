"""Adaptive non-local-means denoising with a Rician noise model.

Two engines, chosen in config (``preprocess.denoise.method``):

* ``sanlm`` (default): CAT12's spatially adaptive non-local means (cat-surf ``vol_sanlm``).
  On a Colin27 phantom with Rician noise (sigma 4 % of max), filtering the whole field of
  view, it gave +8.1 dB PSNR in 56 s, against +6.2 dB in 165 s for ANTs' defaults (2-core machine; benchmarks/preprocess.py).
  It filters only the head and a margin around it (:func:`head_support`): libCAT skips
  voxels that are exactly 0, so the air, two thirds of a ds000022 field of view, is zeroed
  for the filter and keeps its raw values after. On ds000022 sub-03 that cut the filter's
  CPU time from 29 s to 8-9 s; the Colin27 phantom's PSNR went from 28.12 to 28.08 dB.
* ``ants``: ANTs' ``DenoiseImage`` (Manjon's adaptive NLM), kept for comparison.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from cortexgen.preprocess.convert import ants_to_nib, nib_to_ants

DENOISE_METHODS = ("sanlm", "ants")


#: Voxels next to the zeroed air whose SANLM result is not reproducible: libCAT leaves the
#: skipped voxels' buffers uninitialised, and they reach 4 voxels in (its search radius 3
#: plus its patch radius 1; measured on the test phantom). These keep their raw values.
SANLM_RIM_VOXELS = 6


def _coarse_head(data: np.ndarray) -> np.ndarray:
    """Otsu's foreground of 2x2x2 block means (averaging quiets the air's noise), on the
    block grid (each axis halved, rounded up).

    Every piece is kept and none is opened away: on ds000022 sub-03 a largest component or
    an opening left out dim scalp (2.5 % of its head mask); this leaves out 0.006 %.
    """
    from skimage.filters import threshold_otsu

    padded = np.pad(data, [(0, n % 2) for n in data.shape], mode="edge")
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    coarse = blocks.mean(axis=(1, 3, 5))
    return coarse > threshold_otsu(coarse)


def _grown(coarse: np.ndarray, voxels: int, shape: tuple[int, ...]) -> np.ndarray:
    """``coarse`` grown by ``voxels`` full-grid voxels, holes filled, on the full grid."""
    grown = ndimage.binary_fill_holes(ndimage.binary_dilation(coarse, iterations=max(1, int(np.ceil(voxels / 2)))))
    full = grown.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    return full[: shape[0], : shape[1], : shape[2]]


def head_support(img: nib.Nifti1Image, margin_voxels: int) -> np.ndarray:
    """The head grown by ``margin_voxels``: where :func:`denoise_rician` runs SANLM.

    Returns:
        bool array of ``img``'s shape.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    return _grown(_coarse_head(data), margin_voxels, data.shape)


def denoise_rician(
    img: nib.Nifti1Image, method: str = "sanlm", strength: float = 1.0, head_margin_voxels: int | None = 12
) -> nib.Nifti1Image:
    """Denoise a magnitude MR image assuming Rician noise.

    Args:
        img: 3D image, any intensity scale; negative values (which magnitude images
            cannot have, but resampled ones sometimes do) are clipped to 0 first.
        method: ``"sanlm"`` (cat-surf) or ``"ants"`` (ANTsPy ``denoise_image``).
        strength: filter strength for ``sanlm`` (1.0 = CAT12's default); ignored by ``ants``.
        head_margin_voxels: ``sanlm`` runs on the head grown by this many voxels, with the
            air beyond set to 0 (which libCAT skips); the outer :data:`SANLM_RIM_VOXELS` of
            that margin and the air keep their raw values. ``None`` filters the whole
            field of view. Ignored by ``ants``.

    Returns:
        float32 image on the same grid and affine.
    """
    if method not in DENOISE_METHODS:
        raise ValueError(f"unknown denoise method {method!r}; expected one of {DENOISE_METHODS}")
    data = np.clip(np.asarray(img.dataobj, dtype=np.float32), 0, None)
    if method == "sanlm":
        import cat_surf

        support = kept = np.ones(data.shape, dtype=bool)
        if head_margin_voxels is not None:
            coarse = _coarse_head(data)
            if coarse.any():
                support = _grown(coarse, head_margin_voxels, data.shape)
                kept = _grown(coarse, head_margin_voxels - SANLM_RIM_VOXELS, data.shape)
        corners = np.argwhere(support)
        region = tuple(slice(low, high + 1) for low, high in zip(corners.min(axis=0), corners.max(axis=0)))
        # libCAT indexes volumes in Fortran (NIfTI) order.
        piece = np.asfortranarray(np.where(support[region], data[region], 0.0), dtype=np.float32)
        filtered = np.asarray(cat_surf.vol_sanlm(piece, is_rician=True, strength=float(strength)))
        denoised = data.copy()
        denoised[region] = np.where(kept[region], filtered, data[region])
        # No header copy: the input's (often int16) data type must not follow the float result.
        return nib.Nifti1Image(denoised, img.affine)

    import ants

    clipped = nib.Nifti1Image(data, img.affine)
    denoised = ants.denoise_image(nib_to_ants(clipped), noise_model="Rician")
    return ants_to_nib(denoised, like=img)
