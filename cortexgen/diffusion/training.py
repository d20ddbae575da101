"""One training loop for every generator: EMA, gradient accumulation, bf16 autocast, DDP,
checkpoints a restarted job resumes from, and a loss log.

Determinism is by construction, not by saved RNG state: which training volumes a step
uses, and each volume's timestep and noise, are functions of (seed, position in the
training stream). So a run resumed from its checkpoint at step k, or spread over several
processes with the same global batch, follows the same path as one uninterrupted process.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cortexgen.io import atomic_output

log = logging.getLogger("cortexgen")

#: Columns of the training log (TSV).
LOG_COLUMNS = ("step", "train_loss", "val_loss", "learning_rate", "seconds", "volumes_per_second")
MODEL_FORMAT = "cortexgen-diffusion-1"


@dataclass(frozen=True)
class TrainSettings:
    """Config ``diffusion.<model>.training``.

    ``batch_size`` volumes per process and micro-batch; one optimiser step sees
    ``batch_size × grad_accumulation × processes`` volumes. ``weight_decay``: AdamW's decoupled
    decay (0: plain Adam, as the seeds train). ``flip_lr``: each training volume is mirrored
    left-right (all of its keys together, array axis 0 = x of the RAS grid, which the template
    space centres on the midsagittal plane) with probability 1/2, drawn from the seed and its
    position in the stream (so DDP and resumed runs draw the same).
    """

    steps: int = 1000
    batch_size: int = 1
    grad_accumulation: int = 1
    learning_rate: float = 1e-4
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    bf16: bool = True  # bfloat16 autocast on CUDA
    bf16_cpu: bool = False  # bfloat16 autocast on a CPU with native bf16 (see training_autocast)
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    weight_decay: float = 0.0
    flip_lr: bool = False
    # When set, ``steps`` is ignored: see :func:`with_epochs`.
    epochs: int | None = None


def with_epochs(settings: TrainSettings, volumes: int, processes: int = 1) -> TrainSettings:
    """``settings`` with ``steps`` set from ``epochs`` passes over ``volumes`` training volumes,
    when ``epochs`` is set: ceil(epochs × volumes / volumes per optimiser step), so the cohort's
    size sets the training's length."""
    if settings.epochs is None:
        return settings
    per_step = settings.batch_size * settings.grad_accumulation * processes
    return replace(settings, steps=max(1, math.ceil(settings.epochs * volumes / per_step)))


@dataclass(frozen=True)
class CudaSettings:
    """Config ``diffusion.cuda``: speed settings that apply only where a job runs on a GPU.

    ``tf32``: float32 matrix products and convolutions on TensorFloat-32 tensor cores (10-bit
    mantissa; bf16 autocast already computes most of the UNet at 8 bits). ``cudnn_benchmark``:
    cuDNN times its convolution algorithms once per input shape and keeps the fastest (the
    shapes never change during a training). Both change float rounding, so a CUDA run is not
    bit-reproducible with them on (CUDA convolution backward passes are not anyway).
    ``bf16_sampling``: sampling runs the network under bfloat16 autocast, as training does.
    ``compile_training``: the training step runs the network through ``torch.compile``: on one
    H200 at 84×128×84 (UNet 128/128/256, bf16, batch 2) 7.5 against 5.0 volumes/s and 20 against
    44 GB peak memory (benchmarks/gpu_check.py), for about 100 s of compilation per job. CUDA
    only: on a CPU inductor compiles for minutes and the demo's jobs are short.
    """

    tf32: bool = True
    cudnn_benchmark: bool = True
    bf16_sampling: bool = True
    compile_training: bool = True

    @classmethod
    def from_dict(cls, values: dict | None) -> CudaSettings:
        return cls(**(values or {}))


def apply_cuda_settings(settings: CudaSettings, device: torch.device) -> None:
    """Set this process's TF32 and cuDNN autotuning flags from ``settings`` when ``device`` is CUDA."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = settings.tf32
    torch.backends.cudnn.allow_tf32 = settings.tf32
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark


def training_autocast(settings: TrainSettings, device: torch.device):
    """The autocast context of training steps: bfloat16 on CUDA if ``settings.bf16``; on a CPU
    if ``settings.bf16_cpu`` and the CPU has native bf16 instructions (AVX512-BF16 or AMX;
    emulated bf16 is slower than fp32), else none.

    On 2 cores of such a CPU a bridge step of the demo's UNet took 2.4 s in bf16 against 5.7 s in
    fp32 at 44×64×44 (but 79 s against 52 s at 84×128×84). It is off by default because oneDNN's
    bf16 kernels are not bit-reproducible: the same 6 steps run twice in one process differ by
    up to 2e-3 in a weight, so a resumed or split run no longer equals an uninterrupted one.
    """
    device = torch.device(device)
    if device.type == "cuda":
        enabled = settings.bf16
    else:
        enabled = settings.bf16_cpu and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def sampling_autocast(settings: CudaSettings, device: torch.device):
    """The autocast context sampling runs in: bfloat16 on CUDA if ``settings.bf16_sampling``, else none."""
    device = torch.device(device)
    return torch.autocast("cuda", dtype=torch.bfloat16,
                          enabled=settings.bf16_sampling and device.type == "cuda")


class TrainingInterrupted(RuntimeError):
    """SIGTERM (e.g. SLURM's time limit) arrived; a checkpoint was written. Rerun to resume."""


@dataclass
class Distributed:
    """This process's place in a torchrun launch (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    # Process group of host-side (gloo) collectives, for the per-step stop flag: a NCCL
    # collective read back on the host would wait for the GPU every step. None: the default group.
    host_group: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Distributed:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1), else a single process.

    NCCL on CUDA (one GPU per local rank), gloo on CPU. ``device`` forces 'cpu' or 'cuda'.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if world_size <= 1:
        return Distributed(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    host_group = torch.distributed.new_group(backend="gloo") if use_cuda else None
    return Distributed(rank=torch.distributed.get_rank(), world_size=world_size,
                       device=torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"), host_group=host_group)


def stream_item(seed: int, position: int, count: int) -> int:
    """Index of the training volume at ``position`` of the stream: seeded reshuffles, one per epoch."""
    epoch, offset = divmod(int(position), count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(int(seed) * 7919 + epoch))
    return int(order[offset])


def step_positions(step: int, micro: int, settings: TrainSettings, dist: Distributed) -> list[int]:
    """Stream positions this process trains on in micro-batch ``micro`` of optimiser step ``step``."""
    global_batch = settings.batch_size * settings.grad_accumulation * dist.world_size
    first = step * global_batch + (micro * dist.world_size + dist.rank) * settings.batch_size
    return list(range(first, first + settings.batch_size))


def batch_at(data: dict[str, Sequence[torch.Tensor]], items: Sequence[int], device) -> dict[str, torch.Tensor]:
    """Stack the volumes ``items`` of each key into (B, C, X, Y, Z) on ``device``."""
    return {key: torch.stack([volumes[i] for i in items]).to(device) for key, volumes in data.items()}


#: Separates the mirroring draws from the timestep and noise draws of the same positions.
_MIRROR_STREAM = 0x4C52


def mirror_draws(seed: int, positions: Sequence[int]) -> list[bool]:
    """Whether the training samples at ``positions`` are mirrored left-right (probability 1/2 each)."""
    return [bool(np.random.default_rng([int(seed), int(p), _MIRROR_STREAM]).random() < 0.5) for p in positions]


def mirrored(batch: dict[str, torch.Tensor], flips: Sequence[bool]) -> dict[str, torch.Tensor]:
    """Each key's (B, C, X, Y, Z) batch with the samples where ``flips`` is true mirrored along X."""
    mask = torch.tensor(list(flips), dtype=torch.bool)
    if not mask.any():
        return batch
    out = {}
    for key, values in batch.items():
        selected = mask.to(values.device).view(-1, *([1] * (values.dim() - 1)))
        out[key] = torch.where(selected, values.flip(2), values)
    return out


class EMA:
    """Exponential moving average of a network's weights, warmed up so short runs are not the initial weights.

    decay at update n = min(decay, (1 + n) / (10 + n)).
    """

    def __init__(self, network: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.weights = {name: value.detach().clone().float() for name, value in network.state_dict().items()}

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged, current = [], []
        for name, value in network.state_dict().items():
            if value.dtype.is_floating_point:
                averaged.append(self.weights[name])
                current.append(value.detach().float())
            else:
                self.weights[name].copy_(value)
        # One fused kernel per dtype group, not one per tensor: a launch per parameter was a
        # visible share of a GPU step for a UNet with hundreds of tensors.
        torch._foreach_lerp_(averaged, current, 1.0 - decay)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.weights = {name: value.float() for name, value in state["weights"].items()}


def fingerprint(values: dict) -> str:
    """A stable string of the settings a checkpoint was made with (resume only if they match)."""
    return json.dumps(values, sort_keys=True, default=str)


def checkpoint_paths(folder: str | Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    return sorted(Path(folder).glob("step-*.pt")) if Path(folder).is_dir() else []


def save_checkpoint(folder: str | Path, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as ``step-<step>.pt`` atomically; delete all but the newest ``keep``."""
    path = Path(folder) / f"step-{step:08d}.pt"
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    for old in checkpoint_paths(folder)[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: str | Path, settings_fingerprint: str) -> dict | None:
    """The newest readable checkpoint made with the same settings, or None."""
    for path in reversed(checkpoint_paths(folder)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
            # Writes are atomic, but a copied or truncated file may still be unreadable: try the one before.
            log.warning("skipping unreadable checkpoint %s: %s", path, err)
            continue
        if state.get("fingerprint") != settings_fingerprint:
            log.warning("ignoring checkpoint %s: made with other settings", path)
            continue
        return state
    return None


class _Terminate:
    """Records SIGTERM so the loop can checkpoint at the next step boundary instead of dying mid-step."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, the default action applies
            self.previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _agree(flag: bool, dist: Distributed) -> bool:
    """True on every process if any process has ``flag`` set.

    A CPU tensor over the host group: no GPU synchronisation, only a host round trip.
    """
    if dist.world_size == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(value, group=dist.host_group)
    return bool(value.item() > 0)


@torch.no_grad()
def validation_loss(generator, network, data: dict, settings: TrainSettings, device) -> float:
    """Mean loss over the validation volumes, with fixed draws (the same at every evaluation)."""
    count = len(next(iter(data.values())))
    losses = []
    for index in range(count):
        batch = batch_at(data, [index], device)
        losses.append(float(generator.loss(network, batch, [index], seed=settings.seed + 1_000_000)))
    return sum(losses) / len(losses)


def train(
    generator,
    network: torch.nn.Module,
    data: dict[str, Sequence[torch.Tensor]],
    settings: TrainSettings,
    checkpoint_dir: str | Path,
    run_fingerprint: str,
    val_data: dict[str, Sequence[torch.Tensor]] | None = None,
    dist: Distributed | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    compile_network: bool = False,
) -> tuple[dict, list[dict]]:
    """Train ``network`` for ``settings.steps`` optimiser steps, resuming from ``checkpoint_dir``.

    Args:
        generator: a generator of :mod:`cortexgen.diffusion.generators` (gives the loss).
        network: the UNet, on CPU; moved to ``dist.device``.
        data: key -> list of (C, X, Y, Z) tensors, one per training volume (see generators).
        run_fingerprint: the settings of this run; a checkpoint made with others is not resumed.
        stop_after: stop (as if interrupted) after this step, with a checkpoint; for tests.
        compile_network: run the training steps' forward and backward through ``torch.compile``
            (checkpoints, EMA and validation keep the plain module and its parameter names).

    Returns:
        (EMA weights, log rows with :data:`LOG_COLUMNS`). On SIGTERM a checkpoint is written
        and :class:`TrainingInterrupted` raised.
    """
    dist = dist or Distributed()
    count = len(next(iter(data.values())))
    network = network.to(dist.device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    ema = EMA(network, settings.ema_decay)
    # Validation scores the EMA weights (the ones saved and sampled), in a second copy of the UNet.
    ema_network = copy.deepcopy(network).eval() if val_data else None
    step, rows = 0, []
    state = latest_checkpoint(checkpoint_dir, run_fingerprint)
    if state is not None:
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        step, rows = int(state["step"]), [dict(row) for row in state["log"]]
        if dist.is_main:
            log.info("resuming from checkpoint at step %d", step)
    trained = network
    if dist.world_size > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    if compile_network:
        trained = torch.compile(trained)
    autocast = training_autocast(settings, dist.device)

    def checkpoint() -> None:
        if dist.is_main:
            save_checkpoint(checkpoint_dir, step, {
                "fingerprint": run_fingerprint, "step": step, "network": network.state_dict(),
                "optimizer": optimizer.state_dict(), "ema": ema.state_dict(), "log": rows,
                "window": [float(window_loss), window_steps],
            }, settings.keep_checkpoints)
        if dist.world_size > 1:
            torch.distributed.barrier()

    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=settings.steps, initial=step, desc=f"train {generator.name}", unit="step")
    # The loss since the last log row, summed on the device: reading it on the host every
    # step would make the CPU wait for the GPU each step; it is read at log steps only.
    window_loss = torch.zeros((), dtype=torch.float64, device=dist.device)
    window_steps, window_start = 0, time.perf_counter()
    if state is not None:
        # Resumed, so a resumed log equals an uninterrupted one.
        window_loss.fill_(float(state["window"][0]))
        window_steps = int(state["window"][1])
    with _Terminate() as terminate:
        while step < settings.steps:
            trained.train()
            optimizer.zero_grad(set_to_none=True)
            for micro in range(settings.grad_accumulation):
                positions = step_positions(step, micro, settings, dist)
                batch = batch_at(data, [stream_item(settings.seed, p, count) for p in positions], dist.device)
                if settings.flip_lr:
                    batch = mirrored(batch, mirror_draws(settings.seed, positions))
                with autocast:
                    loss = generator.loss(trained, batch, positions, settings.seed)
                (loss / settings.grad_accumulation).backward()
                window_loss += loss.detach().double() / settings.grad_accumulation
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(network.parameters(), settings.grad_clip)
            optimizer.step()
            ema.update(network)
            step += 1
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if step % settings.log_every == 0 or step == settings.steps:
                train_loss = float(window_loss) / window_steps  # the one host sync of a log window
                seconds = time.perf_counter() - window_start
                val = math.nan
                if val_data and dist.is_main:
                    ema_network.load_state_dict(ema.weights)
                    with autocast, torch.no_grad():
                        val = validation_loss(generator, ema_network, val_data, settings, dist.device)
                volumes = window_steps * settings.batch_size * settings.grad_accumulation * dist.world_size
                rows.append({"step": step, "train_loss": train_loss, "val_loss": val,
                             "learning_rate": settings.learning_rate, "seconds": seconds,
                             "volumes_per_second": volumes / seconds if seconds > 0 else math.nan})
                if bar is not None:
                    bar.set_postfix(loss=f"{train_loss:.4f}")
                window_loss.zero_()
                window_steps, window_start = 0, time.perf_counter()
            interrupted = _agree(terminate.requested, dist)
            if step % settings.checkpoint_every == 0 or step == settings.steps or interrupted or step == stop_after:
                checkpoint()
            if interrupted:
                raise TrainingInterrupted(f"stopped by SIGTERM at step {step}; checkpoint written to {checkpoint_dir}")
            if stop_after is not None and step >= stop_after:
                break
    if bar is not None:
        bar.close()
    weights = {name: value.clone() for name, value in ema.weights.items()}
    return weights, rows


def save_model(path: str | Path, generator, network_settings, weights: dict, grid: Sequence[int],
               extra: dict | None = None) -> None:
    """The trained model file (EMA weights + what is needed to rebuild and sample), atomically.

    Plain tensors, numbers and strings only, so it loads with ``weights_only=True``.
    """
    from cortexgen.diffusion.generators import settings_dict

    model = {
        "format": MODEL_FORMAT,
        "generator": generator.name,
        "generator_settings": json.dumps(settings_dict(generator)),
        "network": json.dumps(network_settings.to_dict()),
        "grid": [int(side) for side in grid],
        "extra": json.dumps(extra or {}),
        "weights": weights,
        "generator_state": generator.state_dict(),
    }
    with atomic_output(path) as tmp:
        torch.save(model, tmp)


@dataclass
class TrainedModel:
    """A model file read back: the generator, its network with EMA weights (eval mode), grid, extra."""

    generator: object
    network: torch.nn.Module
    grid: tuple[int, int, int]
    extra: dict


def load_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Read a model file written by :func:`save_model` (``weights_only=True``)."""
    from cortexgen.diffusion.generators import make_generator
    from cortexgen.diffusion.networks import NetworkSettings, build_unet

    model = torch.load(path, map_location="cpu", weights_only=True)
    if model.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a cortexgen diffusion model (format {model.get('format')!r})")
    generator = make_generator(model["generator"], json.loads(model["generator_settings"]))
    generator.load_state_dict(model.get("generator_state", {}))
    network = build_unet(NetworkSettings.from_dict(json.loads(model["network"])),
                         generator.in_channels, generator.out_channels)
    network.load_state_dict(model["weights"])
    network.to(device).eval()
    return TrainedModel(generator, network, tuple(model["grid"]), json.loads(model["extra"]))


def write_log(rows: Sequence[dict], path: str | Path) -> None:
    """The training log as TSV with :data:`LOG_COLUMNS`."""
    with atomic_output(path) as tmp, open(tmp, "w") as out:
        out.write("\t".join(LOG_COLUMNS) + "\n")
        out.writelines("\t".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                                for c in LOG_COLUMNS) + "\n" for row in rows)


def loss_figure(rows: Sequence[dict], title: str):
    """Training (and validation) loss against step, log scale; a matplotlib Figure."""
    from cortexgen.plotting import agg_figure

    fig = agg_figure((6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    steps = [row["step"] for row in rows]
    ax.plot(steps, [row["train_loss"] for row in rows], label="train")
    val = [row["val_loss"] for row in rows]
    if any(not math.isnan(v) for v in val):
        ax.plot(steps, val, label="validation (EMA)")
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig
