"""The one network every generator uses: MONAI's ``DiffusionModelUNet`` (3D, timestep-embedded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class NetworkSettings:
    """UNet size (config ``diffusion.<model>.network``).

    ``channels`` per level (each must be divisible by ``norm_num_groups``), attention at the
    levels flagged in ``attention_levels`` (the bottleneck in the seeds), ``num_res_blocks``
    residual blocks per level. With ``len(channels)`` levels every side of the training grid
    must be divisible by 2**(levels - 1): 84×128×84 and 44×64×44 are, 42×64×42 is not.
    """

    channels: tuple[int, ...] = (128, 128, 256)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 2
    norm_num_groups: int = 32
    # Channels per attention head; 0 = one head over all of a level's channels.
    num_head_channels: int = 0
    # PyTorch's fused attention: an 84×128×84 bottleneck would otherwise need > 20 GB.
    use_flash_attention: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> NetworkSettings:
        values = dict(values)
        for key in ("channels", "attention_levels"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict:
        values = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def check_grid(settings: NetworkSettings, grid: Sequence[int]) -> None:
    """Raise ValueError if the UNet cannot take a volume of ``grid`` voxels."""
    factor = 2 ** (len(settings.channels) - 1)
    if any(int(side) % factor for side in grid):
        raise ValueError(
            f"a UNet with {len(settings.channels)} levels needs every side of the grid divisible by "
            f"{factor}; got {tuple(int(s) for s in grid)} (e.g. use 44x64x44 or 84x128x84)")


def build_unet(settings: NetworkSettings, in_channels: int, out_channels: int):
    """A 3D ``DiffusionModelUNet`` taking (B, in_channels, X, Y, Z) and a (B,) timestep."""
    from monai.networks.nets import DiffusionModelUNet

    if len(settings.attention_levels) != len(settings.channels):
        raise ValueError(f"attention_levels {settings.attention_levels} needs one flag per level "
                         f"of channels {settings.channels}")
    # MONAI's bottleneck (mid block) always attends, with the last level's head size.
    last = len(settings.channels) - 1
    head_channels = [
        (settings.num_head_channels or width) if attend or level == last else 0
        for level, (width, attend) in enumerate(zip(settings.channels, settings.attention_levels))
    ]
    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(settings.channels),
        attention_levels=tuple(settings.attention_levels),
        num_res_blocks=settings.num_res_blocks,
        norm_num_groups=settings.norm_num_groups,
        num_head_channels=head_channels,
        use_flash_attention=settings.use_flash_attention,
    )
