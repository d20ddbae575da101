"""Brownian bridge diffusion between a shape condition ``y`` and an image ``x0`` (BBDM, Cor2Vox).

The forward process moves from the image to the condition::

    x_t = (1 - m_t) x0 + m_t y + sqrt(delta_t) eps,   delta_t = 2 s (m_t - m_t^2)

with ``m_t`` linear from ``m_min`` to ``m_max`` over ``T`` steps, so ``x_0 ≈ x0`` and
``x_{T-1} ≈ y`` and the noise is largest half-way. Sampling starts from ``y`` itself and
walks back on a subsequence of the steps (skip-step sampling, BBDM's eq. 13).

Tensors are (B, C, X, Y, Z) images; ``t`` is a (B,) long tensor of step indices in [0, T).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: What the network predicts. ``ysubx``: y - x0 (Cor2Vox); ``grad``: m_t (y - x0) + sqrt(delta_t) eps
#: (BBDM's default, x_t - x0); ``noise``: eps.
OBJECTIVES = ("ysubx", "grad", "noise")


@dataclass(frozen=True)
class BridgeSchedule:
    """The bridge's m_t and delta_t over ``num_steps`` steps (config ``diffusion.bridge``)."""

    num_steps: int = 1000
    m_min: float = 0.001
    m_max: float = 0.999
    max_variance: float = 1.0  # s: delta_t = 2 s (m_t - m_t^2), so delta peaks at s / 2

    def m(self) -> torch.Tensor:
        """m_t, shape (T,), float64."""
        return torch.linspace(self.m_min, self.m_max, self.num_steps, dtype=torch.float64)

    def variance(self) -> torch.Tensor:
        """delta_t, shape (T,), float64."""
        m = self.m()
        return 2.0 * self.max_variance * (m - m**2)


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (B, 1, 1, 1, 1) to broadcast over ``like``, in its dtype and device."""
    picked = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return picked.reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(schedule: BridgeSchedule, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """x_t of the forward bridge for images ``x0``, conditions ``y`` (same shape) and noise."""
    m_t = _at(schedule.m(), t, x0)
    var_t = _at(schedule.variance(), t, x0)
    return (1.0 - m_t) * x0 + m_t * y + var_t.sqrt() * noise


def objective(schedule: BridgeSchedule, kind: str, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """The training target the network regresses (L1) at x_t, for ``kind`` in :data:`OBJECTIVES`."""
    if kind == "ysubx":
        return y - x0
    if kind == "grad":
        m_t = _at(schedule.m(), t, x0)
        var_t = _at(schedule.variance(), t, x0)
        return m_t * (y - x0) + var_t.sqrt() * noise
    if kind == "noise":
        return noise
    raise ValueError(f"bridge objective must be one of {OBJECTIVES}, got {kind!r}")


def predict_x0(schedule: BridgeSchedule, kind: str, x_t: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
               prediction: torch.Tensor) -> torch.Tensor:
    """The image implied by the network's ``prediction`` of :func:`objective` at x_t."""
    if kind == "ysubx":
        return y - prediction
    if kind == "grad":
        return x_t - prediction
    if kind == "noise":
        m_t = _at(schedule.m(), t, x_t)
        var_t = _at(schedule.variance(), t, x_t)
        return (x_t - m_t * y - var_t.sqrt() * prediction) / (1.0 - m_t)
    raise ValueError(f"bridge objective must be one of {OBJECTIVES}, got {kind!r}")


def sampling_steps(num_steps: int, sample_steps: int) -> list[int]:
    """The decreasing step indices a skip-step sampler visits, from T-1 down to 0.

    ``sample_steps`` network evaluations (at least 2): T-1, evenly spaced steps, then 0.
    """
    if sample_steps < 2:
        raise ValueError(f"bridge sampling needs at least 2 steps, got {sample_steps}")
    sample_steps = min(sample_steps, num_steps)
    spaced = torch.linspace(num_steps - 1, 0, sample_steps, dtype=torch.float64).round().long()
    return sorted(set(spaced.tolist()), reverse=True)


def p_sample(schedule: BridgeSchedule, kind: str, x_t: torch.Tensor, y: torch.Tensor, t: int, t_next: int,
             prediction: torch.Tensor, noise: torch.Tensor | None, eta: float = 1.0,
             clip: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """One reverse step from step ``t`` to the earlier step ``t_next`` (BBDM's skip-step posterior).

    ``t_next = -1`` ends the walk: the result is the predicted image. ``eta`` scales the
    posterior noise (0: deterministic). ``clip``: applied to the predicted image before it
    enters the posterior, e.g. a clamp to the data range (BBDM's and Cor2Vox's
    ``clip_denoised``), so an early step's overshoot is not carried into every later step.
    """
    batch = x_t.shape[0]
    t_index = torch.full((batch,), t, dtype=torch.long)
    x0_hat = predict_x0(schedule, kind, x_t, y, t_index, prediction)
    if clip is not None:
        x0_hat = clip(x0_hat)
    if t_next < 0:
        return x0_hat
    m, var = schedule.m(), schedule.variance()
    m_t, m_n, var_t, var_n = (float(v) for v in (m[t], m[t_next], var[t], var[t_next]))
    # Variance of x_{t_next} given x_t and x0 (the bridge's posterior), scaled by eta.
    sigma2 = (var_t - var_n * (1.0 - m_t) ** 2 / (1.0 - m_n) ** 2) * var_n / var_t
    sigma2 = max(sigma2, 0.0) * eta**2
    mean = ((1.0 - m_n) * x0_hat + m_n * y
            + ((var_n - sigma2) / var_t) ** 0.5 * (x_t - (1.0 - m_t) * x0_hat - m_t * y))
    if noise is None or sigma2 == 0.0:
        return mean
    return mean + sigma2**0.5 * noise


def sample(schedule: BridgeSchedule, kind: str, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           y: torch.Tensor, sample_steps: int, generator: torch.Generator | None = None, eta: float = 1.0,
           progress: Callable | None = None,
           clip: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Walk the bridge back from x_T = y to an image.

    Args:
        predict: ``predict(x_t, t)`` -> the objective's prediction, shape of ``y``; ``t`` (B,) long.
        y: the condition in the bridge's channel(s), (B, C, X, Y, Z).
        sample_steps: network evaluations (Cor2Vox uses 10, BBDM 200).
        generator: noise source (on y's device), for reproducible samples.
        progress: wraps the step list (e.g. tqdm).
        clip: applied to the predicted image at every step (e.g. a clamp to the data range;
            None: nothing).
    """
    steps = sampling_steps(schedule.num_steps, sample_steps)
    pairs = list(zip(steps, steps[1:] + [-1]))
    x_t = y.clone()
    for t, t_next in (progress(pairs) if progress else pairs):
        t_index = torch.full((y.shape[0],), t, dtype=torch.long, device=y.device)
        prediction = predict(x_t, t_index)
        noise = None
        if t_next >= 0 and eta > 0:
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        x_t = p_sample(schedule, kind, x_t, y, t, t_next, prediction, noise, eta, clip)
    return x_t
