"""Denoising diffusion (DDPM) training targets and DDIM sampling.

Training uses MONAI's ``DDPMScheduler`` (betas, adding noise). Sampling is DDIM written here:
MONAI 1.6.1's ``DDIMScheduler`` spaces its steps by linspace but its ``step()`` takes the
previous step as ``t - T // n``, so with n not dividing T every step lands on one noise level and
the next is told another (25 steps of 1000: 999 -> 959, next called at 957), and samples keep
residual noise. Here each step goes to the next step of the list itself, as the bridge does.

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

    The betas are the MONAI 3D DDPM tutorial's: scaled-linear from 0.0005 to 0.0195 over 1000
    steps. The network predicts v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0 (Salimans & Ho
    2022), not the tutorial's noise, whose error reaches the image estimate times
    1/sqrt(abar_t) (50 at t = 999), so an undertrained noise-predictor samples no brain.
    """

    num_steps: int = 1000
    beta_start: float = 0.0005
    beta_end: float = 0.0195
    schedule: str = "scaled_linear_beta"
    prediction_type: str = "v_prediction"
    # Clip the predicted clean sample to [-1, 1] at each sampling step: images live there,
    # and an epsilon-predictor's x0 estimate at high noise is its error times 1/sqrt(abar_t).
    clip_sample: bool = True

    def training_scheduler(self):
        """MONAI ``DDPMScheduler`` of this schedule: adds noise for training; its abar also serves sampling."""
        from monai.networks.schedulers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.num_steps, schedule=self.schedule,
                             beta_start=self.beta_start, beta_end=self.beta_end,
                             prediction_type=self.prediction_type, clip_sample=self.clip_sample)


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


def sampling_steps(num_steps: int, sample_steps: int) -> list[int]:
    """The decreasing timesteps DDIM visits: T-1, evenly spaced, 0 (``min(sample_steps, T)`` of them)."""
    if sample_steps < 1:
        raise ValueError(f"DDIM sampling needs at least 1 step, got {sample_steps}")
    count = min(sample_steps, num_steps)
    if count == 1:
        return [num_steps - 1]
    # Spacing >= 1 when count <= T, so rounding never repeats a step.
    return torch.linspace(num_steps - 1, 0, count, dtype=torch.float64).round().long().tolist()


def ddim_step(schedule: NoiseSchedule, alphas_cumprod: torch.Tensor, prediction: torch.Tensor, t: int,
              t_prev: int, x_t: torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None,
              clip: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, eqs. 12 and 16) from step ``t`` to the earlier step ``t_prev``.

    Args:
        alphas_cumprod: abar, shape (T,), float64.
        prediction: the network's output at (x_t, t) for ``schedule.prediction_type``, shape of x_t.
        t_prev: the next step of the sampling list; -1 after the last, where abar = 1 and the
            result is the predicted clean sample.
        eta: scales the posterior noise (0: deterministic).
        noise: unit Gaussian, shape of x_t; needed when ``eta > 0`` and ``t_prev >= 0``.
        clip: with ``schedule.clip_sample``, what clips the predicted clean sample (default: a
            clamp to [-1, 1]; a packed volume is clamped in image space instead).

    Returns:
        x_{t_prev}, shape and dtype of x_t.
    """
    a_t = float(alphas_cumprod[t])
    a_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    kind = schedule.prediction_type
    if kind == "epsilon":
        x0_hat, eps_hat = (x_t - (1 - a_t) ** 0.5 * prediction) / a_t**0.5, prediction
    elif kind == "sample":
        x0_hat, eps_hat = prediction, (x_t - a_t**0.5 * prediction) / (1 - a_t) ** 0.5
    elif kind == "v_prediction":
        x0_hat = a_t**0.5 * x_t - (1 - a_t) ** 0.5 * prediction
        eps_hat = a_t**0.5 * prediction + (1 - a_t) ** 0.5 * x_t
    else:
        raise ValueError(f"unknown prediction type {kind!r}")
    if schedule.clip_sample:
        x0_hat = clip(x0_hat) if clip is not None else x0_hat.clamp(-1.0, 1.0)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    # At eta 1, 1 - a_prev - sigma² is 0 up to rounding, which can leave it a hair below.
    x_prev = a_prev**0.5 * x0_hat + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps_hat
    if sigma > 0:
        x_prev = x_prev + sigma * noise
    return x_prev


def sample(schedule: NoiseSchedule, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           shape: tuple[int, ...], sample_steps: int, generator: torch.Generator | None = None,
           device: torch.device | str = "cpu", eta: float = 0.0, progress: Callable | None = None,
           clip: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """DDIM from pure noise: ``shape`` = (B, C, X, Y, Z); ``predict(x_t, t)`` the network;
    ``clip`` as in :func:`ddim_step`.

    ``eta = 0`` is deterministic given the starting noise, so a seed fixes the sample.
    ``progress`` wraps the list of (t, t_prev) pairs (e.g. tqdm).
    """
    alphas_cumprod = schedule.training_scheduler().alphas_cumprod.double()
    steps = sampling_steps(schedule.num_steps, sample_steps)
    pairs = list(zip(steps, steps[1:] + [-1]))
    x_t = torch.randn(shape, generator=generator, device=device)
    for t, t_prev in (progress(pairs) if progress else pairs):
        t_index = torch.full((shape[0],), t, dtype=torch.long, device=device)
        prediction = predict(x_t, t_index)
        noise = None
        if eta > 0 and t_prev >= 0:
            noise = torch.randn(shape, generator=generator, device=device, dtype=x_t.dtype)
        x_t = ddim_step(schedule, alphas_cumprod, prediction, t, t_prev, x_t, eta, noise, clip)
    return x_t
