"""Denoising diffusion (DDPM) training targets and DDIM sampling, on MONAI's schedulers.

The same maths serves the unconditional image DDPM and the DDPM over deformation fields;
only the data differ. Tensors are (B, C, X, Y, Z); ``t`` is a (B,) long tensor in [0, T).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseSchedule:
    """Betas of the forward process (config ``diffusion.<model>.schedule``).

    The defaults are the MONAI 3D DDPM tutorial's: scaled-linear betas from 0.0005 to 0.0195
    over 1000 steps; the network predicts the noise.
    """

    num_steps: int = 1000
    beta_start: float = 0.0005
    beta_end: float = 0.0195
    schedule: str = "scaled_linear_beta"
    prediction_type: str = "epsilon"
    # Clip the predicted clean sample to [-1, 1] at each sampling step: images live there,
    # and an epsilon-predictor's x0 estimate at high noise is its error times 1/sqrt(abar_t).
    clip_sample: bool = True

    def training_scheduler(self):
        """MONAI ``DDPMScheduler`` of this schedule (adds noise for training)."""
        from monai.networks.schedulers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.num_steps, schedule=self.schedule,
                             beta_start=self.beta_start, beta_end=self.beta_end,
                             prediction_type=self.prediction_type, clip_sample=self.clip_sample)

    def sampling_scheduler(self, sample_steps: int):
        """MONAI ``DDIMScheduler`` of this schedule, set to ``sample_steps`` steps."""
        from monai.networks.schedulers import DDIMScheduler

        scheduler = DDIMScheduler(num_train_timesteps=self.num_steps, schedule=self.schedule,
                                  beta_start=self.beta_start, beta_end=self.beta_end,
                                  prediction_type=self.prediction_type, clip_sample=self.clip_sample)
        scheduler.set_timesteps(min(sample_steps, self.num_steps))
        return scheduler


def q_sample(scheduler, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    return scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)


def target(scheduler, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the network regresses (MSE): the noise, the image, or the velocity."""
    kind = scheduler.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"unknown prediction type {kind!r}")


def sample(schedule: NoiseSchedule, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           shape: tuple[int, ...], sample_steps: int, generator: torch.Generator | None = None,
           device: torch.device | str = "cpu", eta: float = 0.0, progress: Callable | None = None) -> torch.Tensor:
    """DDIM from pure noise: ``shape`` = (B, C, X, Y, Z); ``predict(x_t, t)`` the network.

    ``eta = 0`` is deterministic given the starting noise, so a seed fixes the sample.
    """
    scheduler = schedule.sampling_scheduler(sample_steps)
    x_t = torch.randn(shape, generator=generator, device=device)
    timesteps = scheduler.timesteps
    for t in (progress(timesteps) if progress else timesteps):
        t_index = torch.full((shape[0],), int(t), dtype=torch.long, device=device)
        prediction = predict(x_t, t_index)
        x_t, _ = scheduler.step(prediction, int(t), x_t, eta=eta, generator=generator)
    return x_t
