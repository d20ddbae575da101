"""The image a cortex implies: the bridge's starting point when ``endpoint: prior``.

Fitted on the training set: the mean intensity of every (pial SDF, white SDF) pair, a
lookup table, and per voxel a line through the training images against the table's values
there, ``offset + gain * table``. Where the surfaces describe the image (the cortex, the
white matter under it) the gain is near 1; where they do not (cerebellum, brainstem, the
midline, whose SDFs only say "near the medial wall"), it falls towards 0 and the voxel
keeps the training images' mean there, instead of the table's guess from a distance that
says nothing about it (a gain of 1 everywhere left speckles along the midline and the
brainstem). On the 14 ds000022 heads (10 training, the 4 held out of split seed 0) this
rendering alone scores paired SSIM 0.906 and PSNR 20.61 dB (a gain of 1 everywhere, i.e.
the table plus the mean residual: 0.889 and 20.17 dB; the training set's mean image 16.75
dB); so the bridge only has to learn the residual detail, not the whole contrast.

Volumes are in the networks' scaling (:mod:`cortexgen.diffusion.data`): images in [-1, 1],
SDFs divided by their clip distance and clamped to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.ndimage import distance_transform_edt, gaussian_filter

#: Lookup bins per SDF axis over [-1, 1]: 0.25 mm at the shipped 10 mm clip.
BINS = 81
#: Width (voxels of the model grid) of the Gaussian that smooths the per-voxel covariance and
#: variance before their ratio is the gain: with 10 training heads the ratio voxel by voxel
#: is noisy (held-out PSNR 20.47 dB unsmoothed, 20.61 at 1 voxel, 20.58 at 2).
GAIN_SIGMA_VOXELS = 1.0
#: Added to both before the ratio, so a voxel where the training set's table values do not
#: vary (one training head, the background) keeps a gain of 1 rather than 0/0.
GAIN_FLOOR = 1e-4


def _bin(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of each value in [-1, 1] (nearest of ``bins`` evenly spaced centres)."""
    return ((values.clamp(-1.0, 1.0) + 1.0) * 0.5 * (bins - 1)).round().long()


class SurfacePrior:
    """Intensity from (pial, white) signed distance, calibrated per voxel: ``offset + gain * lut``.

    ``lut``: (bins, bins) mean image value by pial bin (rows) and white bin (columns);
    ``offset``, ``gain``: (X, Y, Z) on the model grid, the least-squares line of the training
    images against the table's values at each voxel (gain in [0, 1]; see :meth:`fit`).
    ``channels``: the condition channels holding the pial and white SDFs.
    """

    def __init__(self, lut: torch.Tensor, offset: torch.Tensor, gain: torch.Tensor, channels: Sequence[int]):
        self.lut = lut.float()
        self.offset = offset.float()
        self.gain = gain.float()
        self.channels = tuple(int(c) for c in channels)

    @classmethod
    def fit(cls, images, conditions, channels: Sequence[int], mirror: bool = False,
            bins: int = BINS) -> SurfacePrior:
        """Fit on paired volumes: ``images`` (1, X, Y, Z) and ``conditions`` (C, X, Y, Z), each a
        sequence (e.g. a VolumeStore) in the network scaling.

        The gain at a voxel is the covariance of the training images with the table's values
        there over their variance, each smoothed by :data:`GAIN_SIGMA_VOXELS` and raised by
        :data:`GAIN_FLOOR`, clipped to [0, 1]; the offset puts the line through the means.
        ``mirror``: training mirrors volumes along X (config ``training.flip_lr``), so the
        mirrored volumes count too and both maps are mirror-symmetric, as what the network
        sees. Bins no training voxel reached take the value of the nearest bin that one did.
        """
        pial, white = (int(c) for c in channels)
        sums = torch.zeros(bins * bins, dtype=torch.float64)
        counts = torch.zeros(bins * bins, dtype=torch.float64)
        for image, condition in zip(images, conditions):
            index = _bin(condition[pial].float(), bins) * bins + _bin(condition[white].float(), bins)
            sums += torch.bincount(index.ravel(), weights=image[0].double().ravel(), minlength=bins * bins)
            counts += torch.bincount(index.ravel(), minlength=bins * bins).double()
        if not counts.any():
            raise ValueError("the surface prior needs at least one training volume")
        lut = (sums / counts.clamp(min=1)).reshape(bins, bins).numpy()
        empty = (counts == 0).reshape(bins, bins).numpy()
        if empty.any():
            nearest = distance_transform_edt(empty, return_distances=False, return_indices=True)
            lut = lut[tuple(nearest)]
        prior = cls(torch.from_numpy(lut), torch.zeros(1), torch.ones(1), (pial, white))
        # Per-voxel sums of the table's values t, the images y, t^2 and t*y.
        moments, n = None, 0
        for image, condition in zip(images, conditions):
            table = prior.lookup(condition[None].float())[0, 0].double()
            value = image[0].double()
            for t, y in ((table, value), (table.flip(0), value.flip(0))) if mirror else ((table, value),):
                terms = torch.stack([t, y, t * t, t * y])
                moments = terms if moments is None else moments + terms
                n += 1
        mean_t, mean_y, mean_tt, mean_ty = (moments / n).numpy()
        covariance = gaussian_filter(mean_ty - mean_t * mean_y, GAIN_SIGMA_VOXELS)
        variance = gaussian_filter(mean_tt - mean_t * mean_t, GAIN_SIGMA_VOXELS)
        gain = ((covariance + GAIN_FLOOR) / (variance + GAIN_FLOOR)).clip(0.0, 1.0)
        prior.gain = torch.from_numpy(gain).float()
        prior.offset = torch.from_numpy(mean_y - gain * mean_t).float()
        return prior

    def lookup(self, condition: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z): the table's value at each voxel of conditions (B, C, X, Y, Z)."""
        bins = self.lut.shape[0]
        lut = self.lut.to(condition.device)
        index = _bin(condition[:, self.channels[0]], bins) * bins + _bin(condition[:, self.channels[1]], bins)
        return lut.ravel()[index][:, None].to(condition.dtype)

    def render(self, condition: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) in [-1, 1]: the image conditions (B, C, X, Y, Z) imply."""
        offset = self.offset.to(condition.device, condition.dtype)
        gain = self.gain.to(condition.device, condition.dtype)
        if tuple(offset.shape) != tuple(condition.shape[2:]):
            raise ValueError(f"the surface prior was fitted on a {tuple(offset.shape)} grid, "
                             f"conditions are {tuple(condition.shape[2:])}")
        return (offset + gain * self.lookup(condition)).clamp(-1.0, 1.0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors for the model file (loads with ``weights_only=True``)."""
        return {"prior_lut": self.lut, "prior_offset": self.offset, "prior_gain": self.gain,
                "prior_channels": torch.tensor(self.channels, dtype=torch.long)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> SurfacePrior:
        """From :meth:`state_dict`; a model file written before the per-voxel gain holds the
        table's mean residual instead (``prior_residual``): a gain of 1 everywhere."""
        if "prior_offset" not in state:
            return cls(state["prior_lut"], state["prior_residual"], torch.ones(1), state["prior_channels"].tolist())
        return cls(state["prior_lut"], state["prior_offset"], state["prior_gain"], state["prior_channels"].tolist())


def prior_channels(roles: Sequence[str]) -> tuple[int, int]:
    """Indices of the pial and white SDFs among the bridge's condition ``roles``."""
    missing = [role for role in ("pialsdf", "whitesdf") if role not in roles]
    if missing:
        raise ValueError(f"bridge endpoint 'prior' renders from the pial and white SDFs; conditions "
                         f"{list(roles)} lack {missing}")
    return roles.index("pialsdf"), roles.index("whitesdf")

