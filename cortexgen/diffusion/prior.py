"""The image a cortex implies: the bridge's starting point when ``endpoint: prior``.

Fitted on the training set: the mean intensity of every (pial SDF, white SDF) pair, a
lookup table, plus the mean per-voxel residual of the training images about it (what the
surfaces do not describe: cerebellum, brainstem, ventricles and deep nuclei at their mean
place, and the zero background). On the 14 ds000022 heads (11 training, 3 held out) this
rendering alone scores paired SSIM 0.88 and PSNR 19.4 dB, where a bridge started from the
pial SDF scored 0.65 and 12.1 dB after 300 steps and the training set's mean image 0.78 and
16.5 dB; so the bridge only has to learn the residual detail, not the whole contrast.

Volumes are in the networks' scaling (:mod:`cortexgen.diffusion.data`): images in [-1, 1],
SDFs divided by their clip distance and clamped to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.ndimage import distance_transform_edt

#: Lookup bins per SDF axis over [-1, 1]: 0.25 mm at the shipped 10 mm clip.
BINS = 81


def _bin(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of each value in [-1, 1] (nearest of ``bins`` evenly spaced centres)."""
    return ((values.clamp(-1.0, 1.0) + 1.0) * 0.5 * (bins - 1)).round().long()


class SurfacePrior:
    """Intensity from (pial, white) signed distance plus a per-voxel mean residual.

    ``lut``: (bins, bins) mean image value by pial bin (rows) and white bin (columns);
    ``residual``: (X, Y, Z) mean of image - lut over the training set, on the model grid.
    ``channels``: the condition channels holding the pial and white SDFs.
    """

    def __init__(self, lut: torch.Tensor, residual: torch.Tensor, channels: Sequence[int]):
        self.lut = lut.float()
        self.residual = residual.float()
        self.channels = tuple(int(c) for c in channels)

    @classmethod
    def fit(cls, images, conditions, channels: Sequence[int], mirror: bool = False,
            bins: int = BINS) -> SurfacePrior:
        """Fit on paired volumes: ``images`` (1, X, Y, Z) and ``conditions`` (C, X, Y, Z), each a
        sequence (e.g. a VolumeStore) in the network scaling.

        ``mirror``: training mirrors volumes along X (config ``training.flip_lr``), so the
        residual is made symmetric to match what the network sees. Bins no training voxel
        reached take the value of the nearest bin that one did.
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
        prior = cls(torch.from_numpy(lut), torch.zeros(1), (pial, white))
        residual, n = None, 0
        for image, condition in zip(images, conditions):
            difference = image[0].double() - prior.lookup(condition[None].float())[0, 0].double()
            residual = difference if residual is None else residual + difference
            n += 1
        residual = residual / n
        if mirror:
            residual = 0.5 * (residual + residual.flip(0))
        prior.residual = residual.float()
        return prior

    def lookup(self, condition: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z): the table's value at each voxel of conditions (B, C, X, Y, Z)."""
        bins = self.lut.shape[0]
        lut = self.lut.to(condition.device)
        index = _bin(condition[:, self.channels[0]], bins) * bins + _bin(condition[:, self.channels[1]], bins)
        return lut.ravel()[index][:, None].to(condition.dtype)

    def render(self, condition: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) in [-1, 1]: the image conditions (B, C, X, Y, Z) imply."""
        residual = self.residual.to(condition.device, condition.dtype)
        if tuple(residual.shape) != tuple(condition.shape[2:]):
            raise ValueError(f"the surface prior was fitted on a {tuple(residual.shape)} grid, "
                             f"conditions are {tuple(condition.shape[2:])}")
        return (self.lookup(condition) + residual).clamp(-1.0, 1.0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors for the model file (loads with ``weights_only=True``)."""
        return {"prior_lut": self.lut, "prior_residual": self.residual,
                "prior_channels": torch.tensor(self.channels, dtype=torch.long)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> SurfacePrior:
        return cls(state["prior_lut"], state["prior_residual"], state["prior_channels"].tolist())


def prior_channels(roles: Sequence[str]) -> tuple[int, int]:
    """Indices of the pial and white SDFs among the bridge's condition ``roles``."""
    missing = [role for role in ("pialsdf", "whitesdf") if role not in roles]
    if missing:
        raise ValueError(f"bridge endpoint 'prior' renders from the pial and white SDFs; conditions "
                         f"{list(roles)} lack {missing}")
    return roles.index("pialsdf"), roles.index("whitesdf")

