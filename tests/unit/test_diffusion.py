"""Diffusion maths, the shared training loop (EMA, resume, SIGTERM, DDP) and model files."""

import os
import signal

import pytest
import torch

from cortexgen.diffusion import bridge, ddpm
from cortexgen.diffusion.generators import make_generator
from cortexgen.diffusion.networks import NetworkSettings, build_unet, check_grid
from cortexgen.diffusion.training import (
    EMA,
    Distributed,
    TrainingInterrupted,
    TrainSettings,
    init_distributed,
    load_model,
    mirror_draws,
    mirrored,
    save_model,
    stream_item,
    train,
    validation_loss,
)

TINY = NetworkSettings(channels=(4, 8, 8), attention_levels=(False, False, True), num_res_blocks=1,
                       norm_num_groups=4)


def assert_same_training(a, b, tolerance=1e-3):
    """Weights of two runs agree to ``tolerance`` relative (Frobenius over all tensors).

    Runs that sum the same gradients in another order differ by float rounding, which
    Adam turns into visible steps for parameters whose gradient is about zero; an
    element-wise tolerance would fail on those, a different run would fail this.
    """
    diff = sum(float((a[k].double() - b[k].double()).square().sum()) for k in b) ** 0.5
    norm = sum(float(b[k].double().square().sum()) for k in b) ** 0.5
    assert diff / norm < tolerance, diff / norm


def volumes(count, channels=1, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(channels, side, side, side, generator=g) * 2 - 1 for _ in range(count)]


# --- Brownian bridge maths ---------------------------------------------------------------


def test_bridge_ends_are_image_and_condition_and_variance_peaks_midway():
    schedule = bridge.BridgeSchedule()
    x0, y = volumes(2)
    noise = torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    first = bridge.q_sample(schedule, x0[None], y[None], torch.tensor([0]), noise)
    last = bridge.q_sample(schedule, x0[None], y[None], torch.tensor([999]), noise)
    # m_0 = 0.001, delta_0 = 0.002: x_0 is the image up to the ends of m_t and their noise.
    expected_gap = 0.001 * 2 + (2 * (0.001 - 0.001**2)) ** 0.5 * noise.abs().max()
    assert (first - x0).abs().max() <= expected_gap + 1e-6
    assert (last - y).abs().max() <= expected_gap + 1e-6
    variance = schedule.variance()
    assert abs(int(variance.argmax()) - 499.5) <= 0.5
    assert float(variance.max()) == pytest.approx(0.5, abs=1e-6)
    assert float(variance[0]) == pytest.approx(2 * (0.001 - 0.001**2))


@pytest.mark.parametrize("kind", ["ysubx", "grad", "noise"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_bridge_sampler_with_the_true_objective_recovers_the_image(kind, eta):
    schedule = bridge.BridgeSchedule()
    x0, y = (v[None].double() for v in volumes(2, seed=3))

    def oracle(x_t, t):
        # The objective implied by the true image at x_t (what a perfect network predicts).
        m = schedule.m()[t].reshape(-1, 1, 1, 1, 1).to(x_t.dtype)
        var = schedule.variance()[t].reshape(-1, 1, 1, 1, 1).to(x_t.dtype)
        if kind == "ysubx":
            return y - x0
        if kind == "grad":
            return x_t - x0
        return (x_t - (1 - m) * x0 - m * y) / var.sqrt()

    out = bridge.sample(schedule, kind, oracle, y, sample_steps=10,
                        generator=torch.Generator().manual_seed(0), eta=eta)
    assert torch.allclose(out, x0, atol=1e-6)


def test_bridge_sampler_clamps_the_predicted_image_at_every_step():
    # A network that overshoots to x0 = 3 everywhere walks exactly as one predicting the
    # range's edge 1 when clipped, and ends at 3 when not.
    schedule = bridge.BridgeSchedule()
    y = volumes(1, seed=5)[0][None].double()

    def predicting(x0_value):
        return lambda x_t, t: y - x0_value  # ysubx: y - x0

    def walk(x0_value, clip):
        return bridge.sample(schedule, "ysubx", predicting(x0_value), y, sample_steps=10,
                             generator=torch.Generator().manual_seed(0), eta=1.0, clip=clip)

    clipped = walk(3.0, lambda x0: x0.clamp(-1.0, 1.0))
    assert torch.equal(clipped, walk(1.0, None))
    assert torch.allclose(clipped, torch.ones_like(y))
    assert torch.allclose(walk(3.0, None), torch.full_like(y, 3.0))
    generator = make_generator("bridge", {})
    assert generator.settings.clip_denoised
    network = lambda inputs, t: inputs[:, 1:2] - 3.0  # noqa: E731  (y - x0 with x0 = 3)
    out = generator.sample(network, torch.cat([y, y], dim=1).float(), generator=torch.Generator().manual_seed(0))
    assert float(out.max()) <= 1.0 + 1e-6


def test_bridge_objective_and_its_inverse_agree():
    schedule = bridge.BridgeSchedule()
    x0, y = (v[None] for v in volumes(2, seed=4))
    t = torch.tensor([321])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    x_t = bridge.q_sample(schedule, x0, y, t, noise)
    for kind in bridge.OBJECTIVES:
        target = bridge.objective(schedule, kind, x0, y, t, noise)
        assert torch.allclose(bridge.predict_x0(schedule, kind, x_t, y, t, target), x0, atol=1e-5)


def test_skip_step_sampling_visits_from_last_step_to_zero():
    steps = bridge.sampling_steps(1000, 10)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 10
    assert steps == sorted(steps, reverse=True)
    with pytest.raises(ValueError):
        bridge.sampling_steps(1000, 1)


# --- DDPM -------------------------------------------------------------------------------------


def _ddim_oracle(prediction_type, alphas, x0, noise_of):
    """The prediction a perfect network makes at (x_t, t) for the clean sample ``x0``;
    ``noise_of(x_t, a)`` gives the noise it reads in x_t at abar = a."""

    def oracle(x_t, t):
        a = alphas[t].reshape(-1, 1, 1, 1, 1)
        noise = noise_of(x_t, a)
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "sample":
            return (x_t - (1 - a).sqrt() * noise) / a.sqrt()
        return a.sqrt() * noise - (1 - a).sqrt() * (x_t - (1 - a).sqrt() * noise) / a.sqrt()

    return oracle


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("sample_steps", [10, 25])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_the_true_prediction_recovers_the_image(prediction_type, sample_steps, eta):
    schedule = ddpm.NoiseSchedule(prediction_type=prediction_type)
    alphas = schedule.training_scheduler().alphas_cumprod.double()
    x0 = volumes(1, seed=5)[0][None].double().clamp(-0.99, 0.99)
    # The noise x_t holds if it lies on the forward marginal at t.
    oracle = _ddim_oracle(prediction_type, alphas, x0, lambda x_t, a: (x_t - a.sqrt() * x0) / (1 - a).sqrt())
    out = ddpm.sample(schedule, oracle, tuple(x0.shape), sample_steps=sample_steps,
                      generator=torch.Generator().manual_seed(0), eta=eta)
    assert torch.allclose(out.double(), x0, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("sample_steps", [10, 25])
def test_deterministic_ddim_keeps_every_step_on_its_own_noise_level(prediction_type, sample_steps):
    """With the noise the walk started from held fixed, deterministic DDIM is exact: each visited
    x_t is sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for the t it is called with, and the end is x0.
    MONAI 1.6.1's DDIMScheduler.step took the previous step as t - T // n while its steps are
    linspace-spaced, so at 10 and 25 steps each call's t was not x_t's level: it ended 0.69 and
    0.28 (max abs) away from x0."""
    schedule = ddpm.NoiseSchedule(prediction_type=prediction_type)
    alphas = schedule.training_scheduler().alphas_cumprod.double()
    x0 = volumes(1, seed=5)[0][None].double().clamp(-0.99, 0.99)
    start = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).double()  # what sample draws
    a_last = alphas[-1]
    eps = (start - a_last.sqrt() * x0) / (1 - a_last).sqrt()  # x_{T-1} = the starting noise
    visited = []

    def noise_of(x_t, a):
        visited.append((x_t.clone(), a.clone()))
        return eps

    oracle = _ddim_oracle(prediction_type, alphas, x0, noise_of)
    out = ddpm.sample(schedule, oracle, tuple(x0.shape), sample_steps=sample_steps,
                      generator=torch.Generator().manual_seed(0), eta=0.0)
    assert len(visited) == sample_steps
    for x_t, a in visited:
        assert torch.allclose(x_t.double(), a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-5)
    assert torch.allclose(out.double(), x0, atol=1e-5)



def test_a_v_predictor_error_is_not_amplified_in_the_image_estimate_at_high_noise():
    """Why the shipped DDPMs predict v: the same small network error (0.01) becomes an image
    error of about 0.01 / sqrt(abar_t) (0.5 at t = 999) for an epsilon-predictor, of about 0.01
    for a v-predictor, so an undertrained epsilon-predictor's first DDIM steps draw no brain."""
    x0 = volumes(1, seed=5)[0][None].double().clamp(-0.99, 0.99)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)).double()
    error = 0.01 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2)).double()
    image_error = {}
    for kind in ("epsilon", "v_prediction"):
        schedule = ddpm.NoiseSchedule(prediction_type=kind, clip_sample=False)
        alphas = schedule.training_scheduler().alphas_cumprod.double()
        t = len(alphas) - 1
        a = alphas[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        truth = noise if kind == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        estimate = ddpm.ddim_step(schedule, alphas, truth + error, t, -1, x_t)
        image_error[kind] = float((estimate - x0).abs().mean())
    assert image_error["v_prediction"] < 0.01
    assert image_error["epsilon"] > 30 * image_error["v_prediction"]

def test_ddim_steps_run_from_the_last_step_to_zero_without_repeats():
    for count in (1, 10, 25, 1000):
        steps = ddpm.sampling_steps(1000, count)
        assert steps[0] == 999 and len(steps) == count and len(set(steps)) == count
        assert steps == sorted(steps, reverse=True) and (count == 1 or steps[-1] == 0)
    assert ddpm.sampling_steps(10, 50) == list(range(9, -1, -1))


def test_ddpm_training_target_matches_forward_noise():
    scheduler = ddpm.NoiseSchedule(prediction_type="epsilon").training_scheduler()
    x0 = volumes(1)[0][None]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500])
    x_t = ddpm.q_sample(scheduler, x0, t, noise)
    a = scheduler.alphas_cumprod[500]
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-6)
    assert torch.equal(ddpm.target(scheduler, x0, t, noise), noise)
    # The default target, v.
    v_target = ddpm.target(ddpm.NoiseSchedule().training_scheduler(), x0, t, noise)
    assert torch.allclose(v_target, a.sqrt() * noise - (1 - a).sqrt() * x0, atol=1e-6)


# --- network --------------------------------------------------------------------------------


def test_default_unet_levels_accept_the_model_grid():
    default = NetworkSettings()
    assert default.channels == (128, 128, 256) and default.num_res_blocks == 2
    check_grid(default, (84, 128, 84))
    check_grid(default, (44, 64, 44))
    with pytest.raises(ValueError, match="divisible by 4"):
        check_grid(default, (42, 64, 42))
    # The default's three levels and bottleneck attention, narrow (the full width at
    # 84x128x84 needs minutes and GBs on a CPU; benchmarks/diffusion.py runs it).
    narrow = NetworkSettings(channels=(4, 4, 8), norm_num_groups=4, num_res_blocks=2)
    network = build_unet(narrow, 3, 1).eval()
    with torch.no_grad():
        out = network(torch.zeros(1, 3, 84, 128, 84), torch.tensor([10]))
    assert out.shape == (1, 1, 84, 128, 84)


# --- training loop -----------------------------------------------------------------------------


def _tiny_run(tmp_path, name="run", steps=6, stop_after=None, batch_size=2, generator_name="bridge",
              dist=None, data=None, seed=0):
    generator = make_generator(generator_name, {})
    torch.manual_seed(0)
    network = build_unet(TINY, generator.in_channels, generator.out_channels)
    if data is None:
        data = {"image": volumes(3, seed=1)}
        if generator_name == "bridge":
            data["condition"] = volumes(3, channels=2, seed=2)
    settings = TrainSettings(steps=steps, batch_size=batch_size, learning_rate=1e-3, log_every=2,
                             checkpoint_every=100, seed=seed)
    return train(generator, network, data, settings, tmp_path / name, "fingerprint", dist=dist,
                 progress=False, stop_after=stop_after)


class _Wrapped(torch.nn.Module):
    """Stands in for torch.compile's OptimizedModule: the module under ``_orig_mod``, calls counted."""

    def __init__(self, module):
        super().__init__()
        self._orig_mod = module
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self._orig_mod(*args, **kwargs)


def test_compiled_training_steps_through_the_compiled_module_and_saves_plain_names(tmp_path, monkeypatch):
    wrapped = []
    monkeypatch.setattr(torch, "compile", lambda module: wrapped.append(_Wrapped(module)) or wrapped[-1])
    generator = make_generator("ddpm", {})
    torch.manual_seed(0)
    network = build_unet(TINY, 1, 1)
    settings = TrainSettings(steps=3, batch_size=1, log_every=3, checkpoint_every=100)
    weights, _ = train(generator, network, {"image": volumes(2)}, settings, tmp_path / "run", "f",
                       progress=False, compile_network=True)
    assert len(wrapped) == 1 and wrapped[0].calls == 3
    checkpoint = torch.load(next((tmp_path / "run").glob("step-*.pt")), weights_only=True)
    assert set(weights) == set(checkpoint["network"]) == set(network.state_dict())
    torch.manual_seed(0)
    plain, _ = train(generator, build_unet(TINY, 1, 1), {"image": volumes(2)}, settings, tmp_path / "plain", "f",
                     progress=False)
    assert all(torch.equal(weights[name], plain[name]) for name in plain)


def test_ema_is_the_warmed_up_running_average():
    network = torch.nn.Linear(2, 1)
    with torch.no_grad():
        network.weight.fill_(1.0)
    ema = EMA(network, decay=0.5)
    expected = network.weight.detach().clone()
    for value in (3.0, 5.0, 7.0):
        with torch.no_grad():
            network.weight.fill_(value)
        ema.update(network)
        decay = min(0.5, (1 + ema.updates) / (10 + ema.updates))
        expected = decay * expected + (1 - decay) * value
    assert torch.allclose(ema.weights["weight"], expected)


def test_mirroring_flips_every_key_of_the_drawn_samples_along_x_and_draws_half():
    batch = {"image": torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).reshape(2, 1, 4, 2, 2)}
    batch["condition"] = batch["image"].repeat(1, 2, 1, 1, 1) + 100
    out = mirrored(batch, [False, True])
    for key in batch:
        assert torch.equal(out[key][0], batch[key][0])
        assert torch.equal(out[key][1], batch[key][1].flip(1))
    draws = mirror_draws(0, range(2000))
    assert draws == mirror_draws(0, range(2000)) and draws != mirror_draws(1, range(2000))
    assert 0.45 < sum(draws) / len(draws) < 0.55


def test_training_mirrors_its_batches_and_uses_plain_adam(tmp_path, monkeypatch):
    seen = []
    generator = make_generator("ddpm", {})
    inner = generator.loss
    monkeypatch.setattr(generator, "loss", lambda net, batch, *a: seen.append(batch["image"].clone()) or inner(net, batch, *a))
    data = {"image": volumes(1, seed=6)}
    settings = TrainSettings(steps=8, batch_size=1, log_every=8, checkpoint_every=100, flip_lr=True)
    train(generator, build_unet(TINY, 1, 1), data, settings, tmp_path / "run", "f", progress=False)
    flips = mirror_draws(settings.seed, range(8))
    assert 0 < sum(flips) < 8
    for flipped, batch in zip(flips, seen):
        assert torch.equal(batch[0], data["image"][0].flip(1) if flipped else data["image"][0])
    checkpoint = torch.load(next((tmp_path / "run").glob("step-*.pt")), weights_only=True)
    assert checkpoint["optimizer"]["param_groups"][0]["weight_decay"] == 0.0


def test_validation_scores_the_ema_weights(tmp_path):
    generator = make_generator("ddpm", {})
    torch.manual_seed(0)
    network = build_unet(TINY, 1, 1)
    val = {"image": volumes(2, seed=7)}
    settings = TrainSettings(steps=4, batch_size=1, learning_rate=1e-2, ema_decay=0.5, log_every=4,
                             checkpoint_every=100)
    weights, rows = train(generator, network, {"image": volumes(2)}, settings, tmp_path / "run", "f",
                          val_data=val, progress=False)
    ema_network = build_unet(TINY, 1, 1)
    ema_network.load_state_dict(weights)
    with torch.no_grad():
        expected = validation_loss(generator, ema_network.eval(), val, settings, "cpu")
        raw = validation_loss(generator, network.eval(), val, settings, "cpu")
    assert rows[-1]["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert abs(raw - expected) > 1e-6


def test_stream_visits_every_volume_once_per_epoch():
    for epoch in range(3):
        assert sorted(stream_item(7, epoch * 5 + i, 5) for i in range(5)) == list(range(5))


def test_resume_gives_the_same_weights_as_training_straight_through(tmp_path):
    straight, straight_log = _tiny_run(tmp_path, "straight")
    first, _ = _tiny_run(tmp_path, "resumed", stop_after=3)
    assert not all(torch.equal(first[k], straight[k]) for k in straight)
    assert len(list((tmp_path / "resumed").glob("step-*.pt"))) == 1
    resumed, resumed_log = _tiny_run(tmp_path, "resumed")
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name
    assert [row["step"] for row in resumed_log] == [2, 4, 6]
    assert [row["train_loss"] for row in resumed_log] == [row["train_loss"] for row in straight_log]


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    _tiny_run(tmp_path, "run", stop_after=3)
    generator = make_generator("ddpm", {})
    network = build_unet(TINY, 1, 1)
    settings = TrainSettings(steps=2, batch_size=1, log_every=1, checkpoint_every=100)
    _, rows = train(generator, network, {"image": volumes(2)}, settings, tmp_path / "run", "other", progress=False)
    assert [row["step"] for row in rows] == [1, 2]


class _TermAt:
    """A generator whose loss sends SIGTERM to this process at one step (as SLURM does at the time limit)."""

    def __init__(self, inner, at_call):
        self.inner, self.calls, self.at_call = inner, 0, at_call
        self.name, self.in_channels, self.out_channels = inner.name, inner.in_channels, inner.out_channels

    def loss(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at_call:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner.loss(*args, **kwargs)


def test_sigterm_writes_a_checkpoint_and_resuming_finishes_the_same(tmp_path):
    straight, _ = _tiny_run(tmp_path, "straight")
    generator = _TermAt(make_generator("bridge", {}), at_call=2)
    torch.manual_seed(0)
    network = build_unet(TINY, generator.in_channels, generator.out_channels)
    data = {"image": volumes(3, seed=1), "condition": volumes(3, channels=2, seed=2)}
    settings = TrainSettings(steps=6, batch_size=2, learning_rate=1e-3, log_every=2, checkpoint_every=100)
    with pytest.raises(TrainingInterrupted, match="step 2"):
        train(generator, network, data, settings, tmp_path / "killed", "fingerprint", progress=False)
    assert [p.name for p in (tmp_path / "killed").glob("step-*.pt")] == ["step-00000002.pt"]
    resumed, _ = _tiny_run(tmp_path, "killed")
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    big, _ = _tiny_run(tmp_path, "big", steps=3, batch_size=2)
    generator = make_generator("bridge", {})
    torch.manual_seed(0)
    network = build_unet(TINY, generator.in_channels, generator.out_channels)
    data = {"image": volumes(3, seed=1), "condition": volumes(3, channels=2, seed=2)}
    settings = TrainSettings(steps=3, batch_size=1, grad_accumulation=2, learning_rate=1e-3, log_every=2,
                             checkpoint_every=100)
    small, _ = train(generator, network, data, settings, tmp_path / "small", "f", progress=False)
    assert_same_training(small, big)
    other_seed, _ = _tiny_run(tmp_path, "other", steps=3, batch_size=2, seed=1)
    with pytest.raises(AssertionError):
        assert_same_training(other_seed, big)


def _ddp_worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    from pathlib import Path

    weights, _ = _tiny_run(Path(out_dir), "ddp", steps=3, batch_size=1, dist=dist)
    if rank == 0:
        torch.save(weights, Path(out_dir) / "ddp_weights.pt")
    torch.distributed.destroy_process_group()


def test_ddp_with_two_cpu_processes_equals_one_process_with_the_global_batch(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ddp_weights = torch.load(tmp_path / "ddp_weights.pt", weights_only=True)
    single, _ = _tiny_run(tmp_path, "single", steps=3, batch_size=2, dist=Distributed())
    assert_same_training(ddp_weights, single)


def test_model_file_round_trips_with_weights_only(tmp_path):
    generator = make_generator("bridge", {"objective": "grad", "conditions": ["pialsdf", "ribbon"]})
    network = build_unet(TINY, generator.in_channels, generator.out_channels)
    save_model(tmp_path / "model.pt", generator, TINY, network.state_dict(), (8, 8, 8), {"note": 1})
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.generator.settings.objective == "grad"
    assert loaded.generator.settings.conditions == ("pialsdf", "ribbon")
    assert loaded.grid == (8, 8, 8) and loaded.extra == {"note": 1}
    for name, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], value)
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a cortexgen diffusion model"):
        load_model(tmp_path / "bad.pt")


def test_cuda_settings_defaults_match_the_schema_and_the_shipped_config():
    from pathlib import Path

    import yaml

    from cortexgen.diffusion.training import CudaSettings, apply_cuda_settings, sampling_autocast

    repo = Path(__file__).resolve().parents[2]
    schema = yaml.safe_load((repo / "config" / "schema.yaml").read_text())
    section = schema["properties"]["diffusion"]["properties"]["cuda"]["properties"]
    shipped = yaml.safe_load((repo / "config" / "config.yaml").read_text())["diffusion"]["cuda"]
    assert CudaSettings.from_dict({key: value["default"] for key, value in section.items()}) == CudaSettings()
    assert CudaSettings.from_dict(shipped) == CudaSettings() == CudaSettings.from_dict(None)
    # On a CPU the flags are left alone and sampling runs without autocast.
    benchmark = torch.backends.cudnn.benchmark
    apply_cuda_settings(CudaSettings(cudnn_benchmark=not benchmark), torch.device("cpu"))
    assert torch.backends.cudnn.benchmark == benchmark
    with sampling_autocast(CudaSettings(), torch.device("cpu")):
        assert not torch.is_autocast_enabled("cuda")


def test_epochs_set_the_training_length_from_the_cohort():
    from cortexgen.diffusion.training import with_epochs

    fixed = TrainSettings(steps=7, batch_size=2)
    assert with_epochs(fixed, 100) is fixed
    by_epochs = TrainSettings(steps=7, batch_size=2, grad_accumulation=3, epochs=400)
    # 400 passes over 10 volumes, 2 x 3 volumes per step on one process, 12 on two.
    assert with_epochs(by_epochs, 10).steps == 667
    assert with_epochs(by_epochs, 10, processes=2).steps == 334
    assert with_epochs(by_epochs, 20).steps == 1334


# --- sampling ----------------------------------------------------------------------------------


def test_atrophy_twins_share_their_noise(tmp_path):
    """The bridge's noise for an item comes from its noise key alone: two items with one key and
    one condition give the same image, another key or another condition a different one,
    whatever their position or batch."""
    import nibabel as nib
    import numpy as np

    from cortexgen.diffusion.run import noise_seed, sample_bridge_job

    generator = make_generator("bridge", {"sample_steps": 3})
    torch.manual_seed(0)
    network = build_unet(TINY, generator.in_channels, generator.out_channels)
    # An untrained UNet's output layer is zero: its prediction would not depend on the noise.
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    save_model(tmp_path / "model.pt", generator, TINY, network.state_dict(), (8, 8, 8))
    rng = np.random.default_rng(0)
    conditions = {}
    for name in ("twin", "atrophied"):
        conditions[name] = {}
        for role in ("pialsdf", "whitesdf"):
            conditions[name][role] = str(tmp_path / f"{name}_{role}.nii.gz")
            nib.save(nib.Nifti1Image(rng.uniform(-5, 5, (8, 8, 8)).astype(np.float32), np.eye(4)),
                     conditions[name][role])
    items = {"twin": {"noise": "pair", **conditions["twin"]}, "same": {"noise": "pair", **conditions["twin"]},
             "other_key": {"noise": "other", **conditions["twin"]},
             "atrophied": {"noise": "pair", **conditions["atrophied"]}}

    def sample(labels, batch_size):
        outputs = [str(tmp_path / f"{label}_b{batch_size}.nii.gz") for label in labels]
        sample_bridge_job({
            "model_file": str(tmp_path / "model.pt"), "settings": {"sampling": {"seed": 0, "batch_size": batch_size}},
            "device": "cpu", "sdf_clip_mm": 5.0, "outputs": outputs, "table": str(tmp_path / f"b{batch_size}.tsv"),
            "conditions": [{"id": label, "kind": "atrophy", "real": "", **items[label]} for label in labels]})
        return {label: nib.load(path).get_fdata() for label, path in zip(labels, outputs)}

    images = sample(list(items), batch_size=2)
    assert np.array_equal(images["twin"], images["same"])
    assert np.abs(images["other_key"] - images["twin"]).max() > 1e-3
    assert np.abs(images["atrophied"] - images["twin"]).max() > 1e-3
    # Another order and batch size: the same image per item.
    alone = sample(["atrophied", "other_key", "twin"], batch_size=1)
    for label, image in alone.items():
        assert np.array_equal(image, images[label])
    assert "noise" in (tmp_path / "b1.tsv").read_text().splitlines()[0].split("\t")
    assert noise_seed(0, "pair") == noise_seed(0, "pair") != noise_seed(1, "pair")
    # An item with a real image (a held-out subject) is drawn again with noise key <noise>-redrawn.
    items["pair-redrawn"] = {"noise": "pair-redrawn", **conditions["twin"]}
    spec = {"model_file": str(tmp_path / "model.pt"), "settings": {"sampling": {"seed": 0, "batch_size": 2}},
            "device": "cpu", "sdf_clip_mm": 5.0,
            "outputs": [str(tmp_path / "new.nii.gz"), str(tmp_path / "held.nii.gz")],
            "redrawn": [str(tmp_path / "held_redrawn.nii.gz")], "table": str(tmp_path / "held.tsv"),
            "conditions": [{"id": "new", "kind": "sample", "real": "", **items["atrophied"]},
                           {"id": "held", "kind": "held_out", "real": "real.nii.gz", **items["twin"]}]}
    rows = sample_bridge_job(spec)
    # Drawn from the second row of the batch's conditions.
    assert [(row["redrawn_file"], row["prior_file"]) for row in rows] == [("", ""), ("held_redrawn.nii.gz", "")]
    assert np.array_equal(nib.load(tmp_path / "held.nii.gz").get_fdata(), images["twin"])
    assert np.array_equal(nib.load(tmp_path / "held_redrawn.nii.gz").get_fdata(),
                          sample(["pair-redrawn"], 1)["pair-redrawn"])
    # This bridge starts from its first condition (endpoint: condition): it has no prior to write.
    with pytest.raises(ValueError, match="no surface prior"):
        sample_bridge_job({**spec, "priors": [str(tmp_path / "held_prior.nii.gz")]})
    assert 0 <= noise_seed(0, "pair") < 2**63


# --- DDPM centred on the training mean ----------------------------------------------------


def test_centring_fits_the_per_voxel_mean_and_the_deviations_unit_scale():
    images = volumes(3, side=6, seed=2)
    generator = make_generator("ddpm", {"center": "mean"})
    generator.fit({"image": images})
    stack = torch.stack(images).double()
    assert torch.allclose(generator.mean.double(), stack.mean(0), atol=1e-6)
    assert float(generator.spread) == pytest.approx(float((stack - stack.mean(0)).square().mean().sqrt()), rel=1e-5)
    encoded = torch.stack([generator.encode(image[None])[0] for image in images]).double()
    # What the network learns: zero mean per voxel, unit root mean square over the set.
    assert float(encoded.mean(0).abs().max()) < 1e-5
    assert float(encoded.square().mean().sqrt()) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(generator.decode(generator.encode(stack[:1].float()), (6, 6, 6)).double(), stack[:1],
                          atol=1e-5)
    # Training mirrors along X: the mean it subtracts is mirror-symmetric.
    generator.fit({"image": images}, mirror=True)
    assert torch.allclose(generator.mean, generator.mean.flip(1))
    assert torch.allclose(generator.mean.double(), 0.5 * (stack.mean(0) + stack.mean(0).flip(1)), atol=1e-6)


def test_an_uncentred_ddpm_learns_the_data_as_they_are_and_a_centred_one_needs_its_fit():
    images = volumes(2, side=6, seed=3)
    plain = make_generator("ddpm", {})
    plain.fit({"image": images})
    assert plain.state_dict() == {} and torch.equal(plain.encode(images[0][None]), images[0][None])
    centred = make_generator("ddpm", {"center": "mean"})
    with pytest.raises(RuntimeError, match="not fitted"):
        centred.encode(images[0][None])
    # A single training volume has no spread: its deviation is learnt unscaled.
    centred.fit({"image": [images[0]]})
    assert float(centred.spread) == 1.0 and torch.equal(centred.mean, images[0])
    with pytest.raises(ValueError, match="center must be one of"):
        make_generator("ddpm", {"center": "median"})


def _true_v(generator, encoded):
    """The v a perfect network predicts for the clean (encoded) volume ``encoded``."""
    alphas = generator.scheduler.alphas_cumprod.double()
    return _ddim_oracle("v_prediction", alphas, encoded.double(),
                        lambda x_t, a: (x_t - a.sqrt() * encoded) / (1 - a).sqrt())


@pytest.mark.parametrize("packing", ["none", "haar"])
@pytest.mark.parametrize("sample_steps", [10, 25])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_centred_ddim_with_the_true_prediction_recovers_the_image(packing, sample_steps, eta):
    """The sampler works on the centred, scaled (and packed) volume and returns the image itself.

    The image lies near the top of [-1, 1] where the mean is lower: its centred values exceed 1
    several times, so a clamp in the centred space would cut it; the clip acts on the image."""
    grid = (12, 16, 12)
    rng = torch.Generator().manual_seed(4)
    training = [torch.rand(1, *grid, generator=rng) * 0.4 - 0.6 for _ in range(3)]
    generator = make_generator("ddpm", {"center": "mean", "packing": packing, "eta": eta,
                                        "sample_steps": sample_steps})
    generator.fit({"image": training})
    x0 = (0.95 - 0.1 * torch.rand(1, 1, *grid, generator=rng, dtype=torch.float64)).clamp(-1.0, 1.0)
    encoded = generator.encode(x0.float()).double()
    assert float(encoded.abs().max()) > 2.0
    out = generator.sample(_true_v(generator, encoded), (1, 1, *grid), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, *grid)
    assert torch.allclose(out.double(), x0, atol=1e-4)


def test_centred_ddim_clamps_the_predicted_image_to_the_data_range():
    grid = (6, 6, 6)
    generator = make_generator("ddpm", {"center": "mean", "sample_steps": 10})
    generator.fit({"image": volumes(3, side=6, seed=6)})
    # A network that always predicts an image of 1.5, outside the data range.
    beyond = generator.encode(torch.full((1, 1, *grid), 1.5))
    out = generator.sample(_true_v(generator, beyond), (1, 1, *grid), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.ones_like(out), atol=1e-4)


def test_a_centred_model_file_keeps_its_mean_and_scale(tmp_path):
    generator = make_generator("deform", {"center": "mean"})
    generator.fit({"image": volumes(2, channels=3, side=8, seed=7)})
    network = build_unet(TINY, generator.in_channels, generator.out_channels)
    save_model(tmp_path / "model.pt", generator, TINY, network.state_dict(), (8, 8, 8), {})
    loaded = load_model(tmp_path / "model.pt").generator
    assert loaded.settings.center == "mean" and loaded.mean.shape == (3, 8, 8, 8)
    assert torch.equal(loaded.mean, generator.mean) and torch.equal(loaded.spread, generator.spread)
