"""The network generators as training losses and samplers over one UNet.

Each generator says how many channels its network takes and gives, its loss for a batch,
and how it samples. Per-sample randomness (timestep, noise) comes from a generator seeded by
the sample's position in the training stream, so a run split over several processes (DDP)
or resumed from a checkpoint draws exactly what an uninterrupted single-process run draws.

Batches are dicts of (B, C, X, Y, Z) float tensors scaled to about [-1, 1]:
``image`` (the image, or for ``deform`` the normalised field) and, for ``bridge``, ``condition``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from cortexgen.diffusion import bridge as bridge_maths
from cortexgen.diffusion import ddpm as ddpm_maths
from cortexgen.diffusion import packing
from cortexgen.diffusion.prior import SurfacePrior, prior_channels
from cortexgen.diffusion.registry import generator as registry_entry

#: How a generator's network sees the volumes: ``none`` at the training grid, ``haar`` packed to
#: 8 channels at half of it (:mod:`cortexgen.diffusion.packing`).
PACKINGS = ("none", "haar")

#: Condition volumes the bridge can be given (file roles of the surface stage).
CONDITIONS = ("pialsdf", "whitesdf", "ribbon")

#: What the DDPM learns of each volume x: ``none``, x itself; ``mean``, (x - m) / s, where m is
#: the training volumes' per-voxel mean and s the root mean square of x - m over them
#: (:meth:`DDPMGenerator.fit`), so that the network learns how a subject differs from the
#: cohort, at about unit scale, and its samples are m + s times what it draws.
CENTERINGS = ("none", "mean")

#: The bridge's other end y: ``prior``, the image the surfaces imply
#: (:class:`~cortexgen.diffusion.prior.SurfacePrior`, fitted on the training set, also an input
#: channel); ``condition``, the first condition volume itself (Cor2Vox).
ENDPOINTS = ("prior", "condition")


def packed_clip(grid: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A packed predicted image clamped to [-1, 1] in image space (unpacked to ``grid``, clamped,
    packed again): its coefficients range over [-sqrt(8), sqrt(8)], so a clamp of them would cut the
    brightest and darkest blocks."""
    return lambda x0: packing.pack(packing.unpack(x0, grid).clamp(-1.0, 1.0))


def seeded(seed: int, position: int) -> torch.Generator:
    """A CPU generator for the sample at ``position`` of a run seeded with ``seed``."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(position)) % (2**63 - 1))


def draws(seed: int, positions: Sequence[int], num_steps: int, shape: Sequence[int]):
    """Timesteps (B,) and unit Gaussian noise (B, *shape) for the samples at ``positions``."""
    steps, noises = [], []
    for position in positions:
        rng = seeded(seed, position)
        steps.append(int(torch.randint(0, num_steps, (1,), generator=rng)))
        noises.append(torch.randn(tuple(shape), generator=rng))
    return torch.tensor(steps, dtype=torch.long), torch.stack(noises)


@dataclass(frozen=True)
class BridgeSettings:
    """Config ``diffusion.bridge`` (besides network and training)."""

    schedule: bridge_maths.BridgeSchedule = field(default_factory=bridge_maths.BridgeSchedule)
    objective: str = "ysubx"
    # Condition channels the network sees (with endpoint 'condition' the first is y).
    conditions: tuple[str, ...] = ("pialsdf", "whitesdf")
    endpoint: str = "condition"
    sample_steps: int = 10
    eta: float = 1.0
    # Clamp the predicted image to the data range [-1, 1] at every sampling step (Cor2Vox).
    clip_denoised: bool = True
    packing: str = "none"

    @classmethod
    def from_dict(cls, values: dict) -> BridgeSettings:
        values = dict(values)
        values["schedule"] = bridge_maths.BridgeSchedule(**values.get("schedule", {}))
        values["conditions"] = tuple(values.get("conditions", cls.conditions))
        unknown = [name for name in values["conditions"] if name not in CONDITIONS]
        if unknown or not values["conditions"]:
            raise ValueError(f"bridge conditions must be a non-empty list from {CONDITIONS}, got {values['conditions']}")
        if values.get("objective", cls.objective) not in bridge_maths.OBJECTIVES:
            raise ValueError(f"bridge objective must be one of {bridge_maths.OBJECTIVES}")
        if values.get("endpoint", cls.endpoint) not in ENDPOINTS:
            raise ValueError(f"bridge endpoint must be one of {ENDPOINTS}, got {values['endpoint']!r}")
        if values.get("endpoint", cls.endpoint) == "prior":
            prior_channels(values["conditions"])
        if values.get("packing", cls.packing) not in PACKINGS:
            raise ValueError(f"bridge packing must be one of {PACKINGS}, got {values['packing']!r}")
        return cls(**values)


@dataclass(frozen=True)
class DDPMSettings:
    """Config ``diffusion.ddpm`` / ``diffusion.deform`` (besides network and training)."""

    schedule: ddpm_maths.NoiseSchedule = field(default_factory=ddpm_maths.NoiseSchedule)
    sample_steps: int = 50
    eta: float = 0.0
    packing: str = "none"
    center: str = "none"

    @classmethod
    def from_dict(cls, values: dict) -> DDPMSettings:
        values = dict(values)
        values["schedule"] = ddpm_maths.NoiseSchedule(**values.get("schedule", {}))
        if values.get("packing", cls.packing) not in PACKINGS:
            raise ValueError(f"ddpm packing must be one of {PACKINGS}, got {values['packing']!r}")
        if values.get("center", cls.center) not in CENTERINGS:
            raise ValueError(f"ddpm center must be one of {CENTERINGS}, got {values['center']!r}")
        return cls(**values)


class BridgeGenerator:
    """Shape-to-image Brownian bridge between the image x0 and an endpoint y.

    y is the image the surfaces imply (``endpoint: prior``; :meth:`fit` makes it from the
    training set) or the first condition volume (``endpoint: condition``). The UNet sees
    (x_t, y, conditions), or (x_t, conditions) when y is a condition already.
    With ``packing: haar`` every volume is Haar-packed first (8 channels at half the grid),
    and samples are unpacked to the full grid.
    """

    name = "bridge"
    #: Channels of each generated volume (before packing): an image.
    channels = 1

    def __init__(self, settings: BridgeSettings):
        self.settings = settings
        self.packed = settings.packing == "haar"
        self.factor = packing.PACKED_CHANNELS if self.packed else 1
        self.condition_channels = len(settings.conditions)
        self.uses_prior = settings.endpoint == "prior"
        self.in_channels = self.factor * (1 + int(self.uses_prior) + self.condition_channels)
        self.out_channels = self.factor
        self.prior: SurfacePrior | None = None

    def fit(self, data: dict, mirror: bool = False) -> None:
        """Fit what the bridge learns without gradients (the surface prior) on the training
        ``data`` (``image`` and ``condition`` stores); ``mirror``: training flips along X."""
        if self.uses_prior:
            self.prior = SurfacePrior.fit(data["image"], data["condition"],
                                          prior_channels(self.settings.conditions), mirror=mirror)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What :meth:`fit` made, as plain tensors for the model file."""
        return self.prior.state_dict() if self.prior is not None else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.uses_prior:
            self.prior = SurfacePrior.from_state_dict(state)

    def endpoint(self, condition: torch.Tensor) -> torch.Tensor:
        """y (B, 1, X, Y, Z) for conditions (B, C, X, Y, Z), before packing."""
        if not self.uses_prior:
            return condition[:, :1]
        if self.prior is None:
            raise RuntimeError("the bridge's surface prior is not fitted (BridgeGenerator.fit)")
        return self.prior.render(condition)

    def _inputs(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(packed y, packed network conditions) for conditions (B, C, X, Y, Z)."""
        y = self._packed(self.endpoint(condition))
        packed_condition = self._packed(condition)
        if self.uses_prior:
            packed_condition = torch.cat([y, packed_condition], dim=1)
        return y, packed_condition

    def network_grid(self, grid: Sequence[int]) -> tuple[int, int, int]:
        """The grid the UNet sees for volumes on ``grid``."""
        return packing.packed_grid(grid) if self.packed else tuple(int(side) for side in grid)

    def _packed(self, volume: torch.Tensor) -> torch.Tensor:
        return packing.pack(volume) if self.packed else volume

    def loss(self, network, batch: dict, positions: Sequence[int], seed: int) -> torch.Tensor:
        x0 = self._packed(batch["image"])
        y, condition = self._inputs(batch["condition"])
        t, noise = draws(seed, positions, self.settings.schedule.num_steps, x0.shape[1:])
        t, noise = t.to(x0.device), noise.to(x0.device, x0.dtype)
        x_t = bridge_maths.q_sample(self.settings.schedule, x0, y, t, noise)
        target = bridge_maths.objective(self.settings.schedule, self.settings.objective, x0, y, t, noise)
        prediction = network(torch.cat([x_t, condition], dim=1), t)
        return F.l1_loss(prediction.float(), target.float())

    def _clip(self, grid: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The predicted image clamped to [-1, 1] in image space (unpacked, clamped, packed again)."""
        if not self.settings.clip_denoised:
            return None
        if not self.packed:
            return lambda x0: x0.clamp(-1.0, 1.0)
        return packed_clip(grid)

    @torch.no_grad()
    def sample(self, network, condition: torch.Tensor, generator: torch.Generator | None = None,
               progress: Callable | None = None, sample_steps: int | None = None) -> torch.Tensor:
        """Images (B, 1, X, Y, Z) for conditions (B, C, X, Y, Z) in the network's scaling."""
        grid = condition.shape[2:]
        y, packed_condition = self._inputs(condition)
        image = bridge_maths.sample(
            self.settings.schedule, self.settings.objective,
            lambda x_t, t: network(torch.cat([x_t, packed_condition], dim=1), t).to(condition.dtype),
            y, sample_steps or self.settings.sample_steps, generator=generator,
            eta=self.settings.eta, progress=progress, clip=self._clip(grid))
        return packing.unpack(image, grid) if self.packed else image


class DDPMGenerator:
    """Unconditional DDPM over ``channels``-channel volumes: images (1) or deformation fields (3).

    With ``center: mean`` the network learns each volume's deviation from the training mean,
    scaled to unit root mean square (:data:`CENTERINGS`). With ``packing: haar`` the network
    sees every volume Haar-packed (8 channels per channel at half the grid) and samples are
    unpacked to the full grid. The predicted clean sample is clipped to [-1, 1] in the data's
    own space (uncentred, unpacked).
    """

    def __init__(self, settings: DDPMSettings, channels: int, name: str = "ddpm"):
        self.settings = settings
        self.name = name
        self.channels = int(channels)
        self.packed = settings.packing == "haar"
        self.in_channels = self.out_channels = self.channels * (packing.PACKED_CHANNELS if self.packed else 1)
        self.scheduler = settings.schedule.training_scheduler()
        # (C, X, Y, Z) and a scalar with center: mean (fit), else None: the data are learnt as they are.
        self.mean: torch.Tensor | None = None
        self.spread: torch.Tensor | None = None

    def network_grid(self, grid: Sequence[int]) -> tuple[int, int, int]:
        """The grid the UNet sees for volumes on ``grid``."""
        return packing.packed_grid(grid) if self.packed else tuple(int(side) for side in grid)

    def fit(self, data: dict, mirror: bool = False) -> None:
        """With ``center: mean``, the per-voxel mean m (C, X, Y, Z) of the training volumes
        ``data['image']`` (in the network scaling, as training reads them) and the root mean
        square s of their deviation from it (1 where there is none: a single volume);
        ``mirror``: training mirrors volumes along X, so m is made symmetric to match."""
        if self.settings.center == "none":
            return
        volumes = data["image"]
        if not len(volumes):
            raise ValueError(f"{self.name}: centring needs at least one training volume")
        mean = sum(volume.double() for volume in volumes) / len(volumes)
        if mirror:
            mean = 0.5 * (mean + mean.flip(1))
        squares = sum(float(((volume.double() - mean) ** 2).mean()) for volume in volumes) / len(volumes)
        # One training volume (or identical ones) has no spread to scale by: the deviation is then
        # learnt unscaled rather than the run refused.
        spread = squares**0.5 if squares > 0 else 1.0
        self.mean, self.spread = mean.float(), torch.tensor(spread, dtype=torch.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What :meth:`fit` made, as plain tensors for the model file."""
        return {} if self.mean is None else {"data_mean": self.mean, "data_spread": self.spread}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.settings.center != "none":
            self.mean, self.spread = state["data_mean"].float(), state["data_spread"].float()

    def _centred(self) -> bool:
        if self.settings.center != "none" and self.mean is None:
            raise RuntimeError(f"{self.name}: the training mean is not fitted (DDPMGenerator.fit)")
        return self.mean is not None

    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) data -> what the network learns: centred and scaled, then packed."""
        if self._centred():
            volume = (volume - self.mean.to(volume)) / self.spread.to(volume)
        return packing.pack(volume) if self.packed else volume

    def decode(self, volume: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """Inverse of :meth:`encode` for volumes on ``grid``."""
        if self.packed:
            volume = packing.unpack(volume, grid)
        if self._centred():
            volume = self.mean.to(volume) + self.spread.to(volume) * volume
        return volume

    def loss(self, network, batch: dict, positions: Sequence[int], seed: int) -> torch.Tensor:
        x0 = self.encode(batch["image"])
        t, noise = draws(seed, positions, self.settings.schedule.num_steps, x0.shape[1:])
        t, noise = t.to(x0.device), noise.to(x0.device, x0.dtype)
        x_t = ddpm_maths.q_sample(self.scheduler, x0, t, noise)
        target = ddpm_maths.target(self.scheduler, x0, t, noise)
        return F.mse_loss(network(x_t, t).float(), target.float())

    @torch.no_grad()
    def sample(self, network, shape: Sequence[int], generator: torch.Generator | None = None,
               progress: Callable | None = None, sample_steps: int | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """Volumes (B, C, X, Y, Z) from noise; ``shape`` = (B, C, X, Y, Z), C = :attr:`channels`."""
        batch, channels, *grid = (int(side) for side in shape)
        noise_shape = (batch, channels, *grid)
        if self.packed:
            noise_shape = (batch, channels * packing.PACKED_CHANNELS, *packing.packed_grid(grid))

        def clip(x0: torch.Tensor) -> torch.Tensor:
            return self.encode(self.decode(x0, grid).clamp(-1.0, 1.0))

        volume = ddpm_maths.sample(
            self.settings.schedule, lambda x_t, t: network(x_t, t).float(), noise_shape,
            sample_steps or self.settings.sample_steps, generator=generator, device=device,
            eta=self.settings.eta, progress=progress, clip=clip)
        return self.decode(volume, grid)


def make_generator(name: str, settings: dict):
    """The generator ``name`` (:mod:`cortexgen.diffusion.registry`) from its config section (schedule etc.):
    its registry entry's process over volumes of its channels."""
    entry = registry_entry(name)
    if not entry.network:
        raise ValueError(f"generator {name!r} has no network (process {entry.process!r})")
    if entry.process == "bridge":
        return BridgeGenerator(BridgeSettings.from_dict(settings))
    return DDPMGenerator(DDPMSettings.from_dict(settings), channels=entry.channels, name=entry.name)


def settings_dict(generator) -> dict:
    """The generator's settings as plain values (for the model file)."""
    return asdict(generator.settings)
