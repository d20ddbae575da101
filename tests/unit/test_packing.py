"""The orthonormal Haar packing and the bridge and DDPM that run on it."""

import pytest
import torch

from cortexgen.diffusion.generators import make_generator
from cortexgen.diffusion.networks import NetworkSettings, build_unet
from cortexgen.diffusion.packing import pack, packed_grid, unpack
from cortexgen.diffusion.registry import generator as registry_entry


@pytest.mark.parametrize("grid", [(84, 128, 84), (8, 8, 8), (5, 6, 7)])
def test_packing_round_trips_exactly_and_keeps_energy(grid):
    volume = torch.randn(2, 3, *grid, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    packed = pack(volume)
    assert packed.shape == (2, 24, *packed_grid(grid))
    assert torch.allclose(unpack(packed, grid), volume, atol=1e-12)
    if all(side % 8 == 0 for side in grid):  # no padding: orthonormal, so the energy is the same
        assert float((packed**2).sum()) == pytest.approx(float((volume**2).sum()), rel=1e-12)


def test_packed_grid_of_the_model_grid_suits_a_three_level_unet():
    assert packed_grid((84, 128, 84)) == (44, 64, 44)


def test_a_constant_block_is_its_scaled_mean_and_no_detail():
    block = torch.full((1, 1, 2, 2, 2), 0.5, dtype=torch.float64)
    coefficients = pack(block)[0, :, 0, 0, 0]
    assert float(coefficients[0]) == pytest.approx(0.5 * 8**0.5)
    assert torch.allclose(coefficients[1:], torch.zeros(7, dtype=torch.float64))


def test_white_noise_stays_white():
    noise = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    packed = pack(noise)
    stds = packed.flatten(2).std(dim=2)[0]
    assert torch.allclose(stds, torch.ones(8, dtype=torch.float64), atol=0.02)
    correlation = torch.corrcoef(packed[0].flatten(1))
    assert float((correlation - torch.eye(8, dtype=torch.float64)).abs().max()) < 0.02


def test_packed_bridge_samples_the_full_grid_image_with_an_oracle_network():
    generator = make_generator("bridge", {"packing": "haar", "eta": 1.0})
    assert (generator.in_channels, generator.out_channels) == (24, 8)
    grid = (12, 16, 12)
    rng = torch.Generator().manual_seed(2)
    x0 = torch.rand(1, 1, *grid, generator=rng, dtype=torch.float64) * 2 - 1
    condition = torch.rand(1, 2, *grid, generator=rng, dtype=torch.float64) * 2 - 1

    def oracle(inputs, t):  # ysubx: packed y - packed x0, read off the network's own input
        return inputs[:, 8:16] - pack(x0)

    out = generator.sample(oracle, condition, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, *grid)
    assert torch.allclose(out, x0, atol=1e-9)


@pytest.mark.parametrize("model", ["bridge", "ddpm"])
def test_packed_loss_runs_a_unet_on_the_half_grid(model):
    generator = make_generator(model, {"packing": "haar"})
    settings = NetworkSettings(channels=(8, 8, 8), attention_levels=(False, False, False), num_res_blocks=1,
                               norm_num_groups=4)
    assert generator.network_grid((84, 128, 84)) == (44, 64, 44)
    network = build_unet(settings, generator.in_channels, generator.out_channels)
    batch = {"image": torch.rand(1, 1, 12, 16, 12) * 2 - 1}
    if model == "bridge":
        batch["condition"] = torch.rand(1, 2, 12, 16, 12) * 2 - 1
    loss = generator.loss(network, batch, [0], seed=0)
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("sample_steps", [10, 25])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_packed_ddpm_samples_the_full_grid_image_with_an_oracle_network(sample_steps, eta):
    """An image near the top of the data range packs to coefficients up to 0.95 * sqrt(8) = 2.7:
    the predicted clean sample must be clamped to [-1, 1] after unpacking, not in packed space."""
    generator = make_generator("ddpm", {"packing": "haar", "eta": eta, "sample_steps": sample_steps})
    assert (generator.in_channels, generator.out_channels, generator.channels) == (8, 8, 1)
    grid = (12, 16, 12)
    rng = torch.Generator().manual_seed(3)
    x0 = (0.95 - 0.1 * torch.rand(1, 1, *grid, generator=rng, dtype=torch.float64)).clamp(-1.0, 1.0)
    packed_x0 = pack(x0)
    assert float(packed_x0.abs().max()) > 2.5
    alphas = generator.scheduler.alphas_cumprod.double()

    def oracle(x_t, t):  # v for the packed x0, with the noise that x_t holds at its level
        a = alphas[t].view(-1, 1, 1, 1, 1)
        noise = (x_t - a.sqrt() * packed_x0) / (1 - a).sqrt()
        return a.sqrt() * noise - (1 - a).sqrt() * packed_x0

    out = generator.sample(oracle, (1, 1, *grid), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, *grid)
    assert torch.allclose(out.double(), x0, atol=1e-5)


def test_only_the_image_generators_take_a_packing_from_their_config_section():
    section = {"packing": "haar"}
    assert make_generator("ddpm", registry_entry("ddpm").generator_settings(section)).packed
    assert make_generator("bridge", registry_entry("bridge").generator_settings(section)).packed
    # A velocity field is smooth on its coarse grid: nothing to gain from packing it.
    assert not make_generator("deform", registry_entry("deform").generator_settings(section)).packed
