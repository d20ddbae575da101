"""The surface prior: the image a cortex implies, as the bridge's other end."""

import pytest
import torch

from cortexgen.diffusion.generators import make_generator
from cortexgen.diffusion.networks import NetworkSettings, build_unet
from cortexgen.diffusion.prior import SurfacePrior
from cortexgen.diffusion.training import load_model, save_model

GRID = (16, 20, 16)


def shell_subject(radius: float, shift: float):
    """A sphere 'cortex' (pial radius r, white r - 3 voxels) and an image that is a known function of
    the two distances plus a fixed asymmetric per-voxel field: (image (1, X, Y, Z), conditions (2, X, Y, Z)),
    SDFs scaled by a 10-voxel clip as the networks see them."""
    axes = [torch.arange(n, dtype=torch.float32) for n in GRID]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    r = ((x - 7.5 - shift) ** 2 + (y - 9.5) ** 2 + (z - 7.5) ** 2).sqrt()
    pial, white = ((r - radius) / 10).clamp(-1, 1), ((r - radius + 3) / 10).clamp(-1, 1)
    field = 0.25 * torch.sin(x / 3.0) * torch.cos(y / 4.0)  # not mirror-symmetric along X
    image = (0.5 * torch.tanh(-4 * white) - 0.2 * torch.sigmoid(8 * pial) + field).clamp(-1, 1)
    return image[None], torch.stack([pial, white])


def cohort(n=6):
    subjects = [shell_subject(5.0 + 0.4 * k, 0.3 * (k - n / 2)) for k in range(n)]
    return [s[0] for s in subjects], [s[1] for s in subjects]


def test_prior_renders_a_held_out_image_the_surfaces_determine():
    images, conditions = cohort()
    prior = SurfacePrior.fit(images, conditions, (0, 1))
    image, condition = shell_subject(6.1, 0.2)
    rendered = prior.render(condition[None])[0]
    assert rendered.shape == image.shape
    assert float((rendered - image).abs().mean()) < 0.01
    # Without the per-voxel residual the table alone misses the field: the residual matters.
    assert float((prior.lookup(condition[None])[0] - image).abs().mean()) > 0.05


def test_bins_no_training_voxel_reached_take_the_nearest_value():
    images, conditions = cohort(2)
    prior = SurfacePrior.fit(images, conditions, (0, 1))
    assert torch.isfinite(prior.lut).all()
    # Pial outside and white inside by 10 voxels never occurs; it reads a filled neighbour.
    impossible = torch.stack([torch.ones(GRID), -torch.ones(GRID)])[None]
    assert float(prior.lookup(impossible).abs().max()) <= 1.0


def test_mirrored_training_gives_mirror_symmetric_maps():
    images, conditions = cohort()
    prior = SurfacePrior.fit(images, conditions, (0, 1), mirror=True)
    assert torch.allclose(prior.offset, prior.offset.flip(0), atol=1e-6)
    assert torch.allclose(prior.gain, prior.gain.flip(0), atol=1e-6)
    assert not torch.allclose(SurfacePrior.fit(images, conditions, (0, 1)).offset, prior.offset)


def test_gain_keeps_the_mean_where_the_surfaces_say_nothing():
    """Shells whose image in one half (x >= 8) is a per-subject constant (within ±0.05) the
    SDFs do not predict, while their table values there swing by far more: there the gain
    falls towards 0 and the rendering is the training mean, where the table plus its mean
    residual (a gain of 1) adds the table's swings; the other half, which the SDFs
    determine, is rendered no worse than with a gain of 1."""
    generator = torch.Generator().manual_seed(0)
    images, conditions = cohort(8)
    unrelated = torch.zeros(GRID, dtype=torch.bool)
    unrelated[8:] = True
    levels = 0.1 * (torch.rand(len(images) + 1, generator=generator) - 0.5)
    images = [torch.where(unrelated, level, image) for image, level in zip(images, levels)]
    prior = SurfacePrior.fit(images, conditions, (0, 1))
    image, condition = shell_subject(6.1, 0.2)
    image = torch.where(unrelated, levels[-1], image)
    rendered = prior.render(condition[None])[0]
    residual = torch.stack([i - prior.lookup(c[None])[0] for i, c in zip(images, conditions)]).mean(0)
    unit_gain = (prior.lookup(condition[None])[0] + residual).clamp(-1, 1)
    core = unrelated.clone()
    core[8:10] = False  # the gain's smoothing reaches a voxel across the border
    # Where the table's values differ between the training subjects (elsewhere its gain is moot).
    varies = torch.stack([prior.lookup(c[None])[0, 0] for c in conditions]).var(0) > 1e-3
    assert int((core & varies).sum()) > 100 and float(prior.gain[core & varies].mean()) < 0.2
    mean_image = torch.stack(images).mean(0)
    assert torch.allclose(rendered[0][core], mean_image[0][core], atol=0.05)
    error, unit_error = ((x - image)[0][core].square().mean() for x in (rendered, unit_gain))
    assert float(error) < 0.7 * float(unit_error)
    # The half the SDFs determine is rendered no worse than with a gain of 1.
    half, unit_half = ((x - image)[0][:6].abs().mean() for x in (rendered, unit_gain))
    assert float(half) <= float(unit_half) < 0.03


def test_model_files_from_before_the_gain_render_the_table_plus_its_residual():
    images, conditions = cohort()
    prior = SurfacePrior.fit(images, conditions, (0, 1))
    residual = torch.full(GRID, 0.1)
    old = SurfacePrior.from_state_dict({"prior_lut": prior.lut, "prior_residual": residual,
                                        "prior_channels": torch.tensor([0, 1])})
    condition = conditions[0][None]
    assert torch.allclose(old.render(condition), (prior.lookup(condition) + 0.1).clamp(-1, 1))


def test_bridge_from_the_prior_samples_the_prior_with_a_network_that_adds_nothing(tmp_path):
    images, conditions = cohort()
    generator = make_generator("bridge", {"endpoint": "prior", "packing": "haar"})
    assert generator.in_channels == 8 * (1 + 1 + 2)
    with pytest.raises(RuntimeError, match="not fitted"):
        generator.endpoint(conditions[0][None])
    generator.fit({"image": images, "condition": conditions})
    condition = shell_subject(6.1, 0.2)[1][None].double()

    def zero(inputs, t):  # ysubx: y - x0 = 0, so the image is y itself
        return torch.zeros_like(inputs[:, :8])

    out = generator.sample(zero, condition, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, generator.prior.render(condition), atol=1e-6)

    tiny = NetworkSettings(channels=(4, 8, 8), attention_levels=(False, False, True), num_res_blocks=1,
                           norm_num_groups=4)
    network = build_unet(tiny, generator.in_channels, generator.out_channels)
    save_model(tmp_path / "model.pt", generator, tiny, network.state_dict(), GRID)
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.generator.settings.endpoint == "prior"
    assert torch.equal(loaded.generator.prior.render(condition.float()), generator.prior.render(condition.float()))


def test_prior_endpoint_needs_both_sdfs():
    with pytest.raises(ValueError, match="whitesdf"):
        make_generator("bridge", {"endpoint": "prior", "conditions": ["pialsdf", "ribbon"]})
