"""Training and sampling jobs of the workflow, from a plain job description.

A job description (``spec``) is a dict of plain values: the generator's name and config
section, input and output paths. The workflow's scripts build it from ``snakemake``;
for several GPUs it is written to JSON and ``torchrun -m cortexgen.diffusion.run spec.json``
runs :func:`train_job` once per GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from cortexgen.diffusion import data as volumes
from cortexgen.diffusion.generators import make_generator
from cortexgen.diffusion.networks import NetworkSettings, build_unet, check_grid
from cortexgen.diffusion.registry import generator as registry_entry
from cortexgen.diffusion.training import (
    CudaSettings,
    TrainSettings,
    apply_cuda_settings,
    fingerprint,
    init_distributed,
    load_model,
    loss_figure,
    sampling_autocast,
    save_model,
    train,
    with_epochs,
    write_log,
)
from cortexgen.io import atomic_output, save_nifti, write_table

log = logging.getLogger("cortexgen")

def model_grid(settings: dict, image_shape: Sequence[int]) -> tuple[int, int, int]:
    """The generator's training grid: its ``grid``, or the images' when null."""
    return tuple(int(side) for side in (settings.get("grid") or image_shape))


def load_data(model: str, inputs: dict, settings: dict, grid, sdf_clip_mm: float, cache: str | Path,
              prefix: str = "", build: bool = True) -> dict:
    """Training (or, with ``prefix='val_'``, validation) volumes in the network's scaling, on disk.

    Each key is a :class:`~cortexgen.diffusion.data.VolumeStore` of (C, *grid) volumes, written
    once to ``cache`` (float16) and reused while the input files and settings are unchanged,
    so training memory does not grow with the number of subjects.
    What they are comes from the generator's registry entry (:mod:`cortexgen.diffusion.registry`):
    ``images``: ``image``, (1, *grid); a conditional generator also ``condition``, its condition
    volumes (channels in config order); ``fields``: ``image`` holds each field in mm, (3, *grid),
    or with ``field.kind: velocity`` its stationary velocity field
    (:func:`~cortexgen.diffusion.fields.velocity_from_displacement` on this grid).
    ``build=False``: wait for another process (DDP rank 0) to write the cache.
    """
    from cortexgen.diffusion.fields import field_array, resize_field, velocity_from_displacement
    from cortexgen.preprocess.normalize import resized_affine

    entry = registry_entry(model)
    grid = [int(side) for side in grid]
    if entry.data == "fields":
        fields = inputs.get(f"{prefix}fields", [])
        if not fields:
            return {}
        kind = field_settings(settings)

        def load_field(i: int) -> torch.Tensor:
            image = nib.load(fields[i])
            field = resize_field(torch.from_numpy(field_array(image).astype(np.float32)), grid)
            if kind["kind"] == "velocity":
                # The logarithm on the coarse grid, in float64 for the fixed-point iteration.
                affine = resized_affine(image.affine, image.shape[:3], grid)
                field = velocity_from_displacement(field.double(), affine, kind["log_iterations"],
                                                   kind["integration_steps"]).float()
            return field

        return {"image": volumes.cached_store(cache, f"{prefix}fields", fields, {"grid": grid, "field": kind},
                                              load_field, len(fields), build)}
    images = inputs.get(f"{prefix}images", [])
    if not images:
        return {}
    data = {"image": volumes.cached_store(cache, f"{prefix}images", images, {"grid": grid},
                                          lambda i: volumes.load_image(images[i], grid), len(images), build)}
    if entry.conditional:
        roles = list(settings["conditions"])
        files = [{role: inputs[f"{prefix}{role}"][i] for role in roles} for i in range(len(images))]
        data["condition"] = volumes.cached_store(
            cache, f"{prefix}conditions", [item[role] for item in files for role in roles],
            {"grid": grid, "roles": roles, "sdf_clip_mm": float(sdf_clip_mm)},
            lambda i: volumes.load_conditions(files[i], roles, grid, sdf_clip_mm), len(images), build)
    return data


def field_settings(settings: dict) -> dict:
    """Config ``field`` of a field generator with its defaults: kind (velocity|displacement), integration_steps,
    log_iterations, smoothing_voxels (Gaussian sigma on the model grid for sampled velocities)."""
    return {"kind": "velocity", "integration_steps": 7, "log_iterations": 4, "smoothing_voxels": 1.0,
            **settings.get("field", {})}


def _device(name: str) -> str | None:
    return None if name == "auto" else name


def fit_job(spec: dict) -> None:
    """Fit the statistical deformation model (a generator without a network) as ``train_generator`` asks.

    Its training fields are loaded as :func:`load_data` loads them for deform (velocities on its
    grid, cached beside ``spec['checkpoints']``); the model file keeps the grid and field
    settings the sampler needs, the training log its spectrum (variance per mode, and how much
    of the validation fields' variance the modes hold), the figure that spectrum.
    """
    from cortexgen.diffusion.sdm import (
        explained_variance,
        fit_deformation_model,
        save_deformation_model,
        spectrum_figure,
        spectrum_rows,
    )

    model, settings, inputs = spec["model"], spec["settings"], spec["inputs"]
    entry = registry_entry(model)
    grid = model_grid(settings, nib.load(inputs[entry.data][0]).shape[:3])
    cache = Path(spec["checkpoints"]) / "data"
    clip = spec.get("sdf_clip_mm", 10.0)
    data = load_data(model, inputs, settings, grid, clip, cache)
    val_data = load_data(model, inputs, settings, grid, clip, cache, prefix="val_")
    sdm = fit_deformation_model(data["image"], settings["variance_threshold"], settings["max_modes"])
    validation = explained_variance(sdm, val_data["image"]) if val_data else []
    save_deformation_model(sdm, spec["outputs"]["model"], {"grid": list(grid), "field": field_settings(settings)})
    rows = spectrum_rows(sdm, validation)
    write_table(rows, spec["outputs"]["log"])
    fig = spectrum_figure(rows, f"{model}: {sdm.n_subjects} training fields, grid {'x'.join(map(str, grid))}")
    with atomic_output(spec["outputs"]["png"]) as tmp:
        fig.savefig(tmp, dpi=100)
    log.info("%s: %d modes of %d training fields hold %.3g of their variance", model, sdm.n_modes, sdm.n_subjects,
             rows[-1]["cumulative_explained_variance"])


def train_job(spec: dict) -> None:
    """Train one generator as the workflow's ``train_generator`` rule asks (also under torchrun);
    one without a network is fitted (:func:`fit_job`)."""
    from cortexgen.diffusion.fields import field_scale

    model, settings, inputs = spec["model"], spec["settings"], spec["inputs"]
    entry = registry_entry(model)
    if not entry.network:
        fit_job(spec)
        return
    dist = init_distributed(_device(spec.get("device", "auto")))
    cuda = CudaSettings.from_dict(spec.get("cuda"))
    apply_cuda_settings(cuda, dist.device)
    grid = model_grid(settings, nib.load(inputs[entry.data][0]).shape[:3])
    network_settings = NetworkSettings.from_dict(settings["network"])
    generator = make_generator(model, entry.generator_settings(settings))
    check_grid(network_settings, generator.network_grid(grid))
    train_settings = TrainSettings(**settings["training"])
    if entry.data == "fields" and train_settings.flip_lr:
        raise ValueError(f"diffusion.{model}.training.flip_lr: a mirrored displacement field is not a field of the "
                         "(asymmetric) template; set it to false")
    # The float16 volume cache sits beside the checkpoints: outside the rule's declared outputs,
    # so it survives a failed or resubmitted job; rank 0 writes it, the other ranks wait for it.
    cache = Path(spec["checkpoints"]) / "data"
    clip = spec.get("sdf_clip_mm", 10.0)
    data = load_data(model, inputs, settings, grid, clip, cache, build=dist.is_main)
    val_data = load_data(model, inputs, settings, grid, clip, cache, prefix="val_", build=dist.is_main)
    train_settings = with_epochs(train_settings, len(data["image"]), dist.world_size)
    extra = {"grid": list(grid)}
    if entry.data == "fields":
        # One scale for every field (mm), so the DDPM sees values of about [-1, 1].
        scale = field_scale(data["image"], settings.get("scale_percentile", 99.5))
        data["image"] = data["image"].scaled(1.0 / scale)
        if val_data:
            val_data["image"] = val_data["image"].scaled(1.0 / scale)
        extra["field_scale_mm"] = scale
        extra["field"] = field_settings(settings)
    # After the fields' scaling: what the generator fits is in the scaling its network learns.
    generator.fit(data, mirror=train_settings.flip_lr)
    if dist.is_main:
        log.info("%s: %d training and %d validation volumes on a %s grid, %s, %d process(es), %d steps",
                 model, len(data["image"]), len(val_data.get("image", [])), "x".join(map(str, grid)),
                 dist.device, dist.world_size, train_settings.steps)
    torch.manual_seed(train_settings.seed)
    network = build_unet(network_settings, generator.in_channels, generator.out_channels)
    # Resume only a checkpoint made from the same settings and the same training files.
    run_fingerprint = fingerprint({"settings": settings, "inputs": inputs, "world_size": dist.world_size})
    weights, rows = train(generator, network, data, train_settings, spec["checkpoints"], run_fingerprint,
                          val_data=val_data or None, dist=dist, progress=spec.get("progress", True),
                          compile_network=cuda.compile_training and dist.device.type == "cuda")
    if dist.is_main:
        weights = {name: value.cpu() for name, value in weights.items()}
        save_model(spec["outputs"]["model"], generator, network_settings, weights, grid, extra)
        write_log(rows, spec["outputs"]["log"])
        fig = loss_figure(rows, f"{model}: {len(data['image'])} training volumes, grid {'x'.join(map(str, grid))}")
        with atomic_output(spec["outputs"]["png"]) as tmp:
            fig.savefig(tmp, dpi=100)
        log.info("%s: final training loss %.4g after %d steps", model, rows[-1]["train_loss"], rows[-1]["step"])
    if dist.world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _progress(desc: str):
    from tqdm import tqdm

    return lambda steps: tqdm(steps, desc=desc, leave=False)


def _device_for_sampling(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _batches(count: int, size: int):
    for start in range(0, count, max(1, size)):
        yield list(range(start, min(count, start + max(1, size))))


def noise_seed(seed: int, key: str) -> int:
    """The seed (63 bits) of the sampling noise of the condition item with noise key ``key`` in
    a run seeded with ``seed``: a stable hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()[:8], "little") >> 1


def sample_bridge_job(spec: dict) -> list[dict]:
    """Images from the bridge for each condition set; written on the grid of the condition files.

    ``spec['conditions']``: list of {"id", "kind", "noise", role: path..., "real": path or ""}
    (cortexgen.planning.bridge_conditions); outputs in the same order. Each image's noise comes
    from (sampling seed, its ``noise`` key) alone (:func:`noise_seed`), so a sample does not
    depend on its position or the batch it was drawn in, and items that share a key (an
    atrophied cortex and its unthinned twin) share their noise.

    What the network adds, for the items with a real image (held-out subjects), in their order:
    ``spec['priors']`` (optional) gets the endpoint the bridge starts from (the surface prior's
    rendering, no network), ``spec['redrawn']`` (optional) a second sample drawn with noise key
    ``<noise>-redrawn``. The table names them (``prior_file``, ``redrawn_file``).
    """
    device = _device_for_sampling(spec.get("device", "auto"))
    cuda = CudaSettings.from_dict(spec.get("cuda"))
    apply_cuda_settings(cuda, device)
    trained = load_model(spec["model_file"], device)
    roles = trained.generator.settings.conditions
    sampling = spec["settings"]["sampling"]
    conditions = spec["conditions"]
    held_out = [index for index, item in enumerate(conditions) if item.get("real")]
    extra = {}
    for key in ("priors", "redrawn"):
        paths = spec.get(key) or []
        if paths and len(paths) != len(held_out):
            raise ValueError(f"{len(paths)} {key} outputs for {len(held_out)} conditions with a real image")
        extra[key] = dict(zip(held_out, paths))
    if extra["priors"] and not trained.generator.uses_prior:
        raise ValueError(f"{spec['model_file']}: the bridge has no surface prior (endpoint: condition) to write")

    def load(indices: list[int]) -> tuple[torch.Tensor, nib.Nifti1Image]:
        reference = nib.load(conditions[indices[0]][roles[0]])
        return torch.stack([volumes.load_conditions(conditions[i], roles, trained.grid, spec["sdf_clip_mm"])
                            for i in indices]).to(device), reference

    def draw(indices: list[int], condition: torch.Tensor, suffix: str = "") -> torch.Tensor:
        images = []
        for k, index in enumerate(indices):
            key = conditions[index]["noise"] + suffix
            generator = torch.Generator(device=device).manual_seed(noise_seed(sampling["seed"], key))
            with sampling_autocast(cuda, device):
                images.append(trained.generator.sample(trained.network, condition[k:k + 1], generator=generator,
                                                       progress=_progress(f"bridge {conditions[index]['id']}")))
        return torch.cat(images)

    def save(indices: list[int], images: torch.Tensor, reference: nib.Nifti1Image, paths) -> None:
        out = volumes.resize_volume(images.float().cpu(), reference.shape[:3])
        for k, index in enumerate(indices):
            save_nifti(_image(out[k], reference.affine), paths[index])

    for batch in _batches(len(conditions), sampling["batch_size"]):
        condition, reference = load(batch)
        save(batch, draw(batch, condition), reference, spec["outputs"])
        # The held-out items' second draw and prior come from the conditions already loaded.
        rows_with_real = [k for k, index in enumerate(batch) if index in extra["priors"] or index in extra["redrawn"]]
        if not rows_with_real:
            continue
        indices = [batch[k] for k in rows_with_real]
        subset = condition[rows_with_real]
        if extra["redrawn"]:
            save(indices, draw(indices, subset, "-redrawn"), reference, extra["redrawn"])
        if extra["priors"]:
            with torch.no_grad():
                save(indices, trained.generator.endpoint(subset), reference, extra["priors"])
    rows = []
    for index, item in enumerate(conditions):
        rows.append({"file": Path(spec["outputs"][index]).name, "condition": item["id"], "kind": item["kind"],
                     "real_image": item.get("real", ""), "seed": sampling["seed"], "noise": item["noise"],
                     **{column: Path(extra[key][index]).name if index in extra[key] else ""
                        for key, column in (("priors", "prior_file"), ("redrawn", "redrawn_file"))}})
    write_table(rows, spec["table"])
    return rows


def _network_draws(spec: dict, device: torch.device, cuda: CudaSettings):
    """A trained network's sampler: ``draw(index)`` -> its volume (C, *grid) on CPU (an image in the
    network's scaling, a field in mm), seeded by (sampling seed, index); and its field settings."""
    trained = load_model(spec["model_file"], device)
    sampling = spec["settings"]["sampling"]
    shape = (1, trained.generator.channels, *trained.grid)

    def draw(index: int) -> torch.Tensor:
        generator = torch.Generator(device=device).manual_seed(sampling["seed"] * 100_003 + index)
        with sampling_autocast(cuda, device):
            volume = trained.generator.sample(trained.network, shape, generator=generator, device=device,
                                              progress=_progress(f"{trained.generator.name} {index + 1}"))
        volume = volume[0].float().cpu()
        return volume * trained.extra["field_scale_mm"] if "field_scale_mm" in trained.extra else volume

    return draw, trained.extra.get("field")


def _sdm_draws(spec: dict):
    """The statistical deformation model's sampler: ``draw(index)`` -> a velocity (or displacement)
    field (3, *grid) in mm, its mode coefficients seeded by (sampling seed, index); and its field settings."""
    from cortexgen.diffusion.sdm import draw_coefficients, field_of, load_deformation_model

    model, extra = load_deformation_model(spec["model_file"])
    seed = spec["settings"]["sampling"]["seed"]
    return lambda index: torch.from_numpy(field_of(model, draw_coefficients(model, seed, index))), extra["field"]


def warped_template(field_mm: torch.Tensor, kind: dict, template: torch.Tensor,
                    affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """A field generator's post-processing: its sampled field applied to the template.

    Args:
        field_mm: (3, x, y, z) sampled on the generator's grid, mm along RAS world axes.
        kind: its field settings (:func:`field_settings`): with ``kind: velocity`` it is smoothed
            by ``smoothing_voxels``, upsampled and integrated (scaling and squaring,
            ``integration_steps``); a displacement is only upsampled.
        template: (X, Y, Z) float32 template image, on the grid of ``affine``.

    Returns:
        The displacement (3, X, Y, Z) float32 mm on the template's grid, and the template warped
        by it (X, Y, Z) float32 (trilinear, not clipped).
    """
    from scipy.ndimage import gaussian_filter

    from cortexgen.diffusion.fields import integrate_velocity, resize_field, warp_image

    shape = tuple(template.shape)
    if kind["kind"] == "velocity":
        # Smoothed on the model grid first: a rough sampled velocity (an undertrained
        # network's is noise) integrates to a map that folds between grid points.
        field = torch.from_numpy(np.stack([
            gaussian_filter(component, kind["smoothing_voxels"], mode="nearest")
            for component in field_mm.double().numpy()]))
        field = integrate_velocity(resize_field(field, shape), affine, kind["integration_steps"]).float()
    else:
        field = resize_field(field_mm, shape).float()
    return field, warp_image(template, field, affine).numpy()


def sample_unconditional_job(spec: dict) -> list[dict]:
    """``len(outputs)`` images from a generator without conditions (``spec['model']``).

    A network generator draws from noise (ddpm: an image; deform: a field), the statistical
    deformation model draws mode coefficients (a field). Written on the grid of
    ``spec['grid_image']`` (the template image on the model grid). A field warps the template
    (:func:`warped_template`); the displacement (mm) is written to ``spec['fields']`` too, and
    the table gets the fraction of voxels where the warp folds (Jacobian <= 0).
    """
    entry = registry_entry(spec["model"])
    device = _device_for_sampling(spec.get("device", "auto"))
    cuda = CudaSettings.from_dict(spec.get("cuda"))
    apply_cuda_settings(cuda, device)
    draw, kind = _network_draws(spec, device, cuda) if entry.network else _sdm_draws(spec)
    sampling = spec["settings"]["sampling"]
    reference = nib.load(spec["grid_image"])
    shape = reference.shape[:3]
    rows = []
    for batch in _batches(len(spec["outputs"]), sampling["batch_size"]):
        samples = [draw(index) for index in batch]
        for k, index in enumerate(batch):
            row = {"file": Path(spec["outputs"][index]).name, "seed": sampling["seed"], "index": index}
            if entry.data == "fields":
                template = torch.from_numpy(np.asarray(reference.get_fdata(dtype=np.float32)))
                field, image = warped_template(samples[k], kind, template, reference.affine)
                save_nifti(_field_image(field.numpy(), reference.affine), spec["fields"][index])
                row["folding_fraction"] = folding_fraction(field.numpy(), reference.affine)
                save_nifti(nib.Nifti1Image(np.clip(image, 0, 1).astype(np.float32), reference.affine),
                           spec["outputs"][index])
            else:
                save_nifti(_image(volumes.resize_volume(samples[k], shape), reference.affine), spec["outputs"][index])
            rows.append(row)
    write_table(rows, spec["table"])
    return rows


def folding_fraction(field_mm: np.ndarray, affine: np.ndarray) -> float:
    """Fraction of voxels where x -> x + u(x) folds (det of its Jacobian <= 0); field (3, X, Y, Z) in mm."""
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    # d u_i / d x_j in voxel-axis terms; the grid axes are the world axes up to sign/permutation here,
    # so the determinant's sign is what matters and it is invariant to that orthogonal change.
    rotation = np.asarray(affine)[:3, :3] / spacing
    jacobian = np.empty(field_mm.shape[1:] + (3, 3), dtype=np.float64)
    for i in range(3):
        for j, derivative in enumerate(np.gradient(field_mm[i], *spacing)):
            jacobian[..., i, j] = derivative
    # u is in world axes, derivatives along voxel axes: J_world = I + (du/dv) R^T.
    jacobian = np.eye(3) + jacobian @ rotation.T
    return float((np.linalg.det(jacobian) <= 0).mean())


def _image(volume: torch.Tensor, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(volumes.network_to_image(volume), affine)
    image.header.set_xyzt_units("mm", "sec")
    return image


def _field_image(field: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(np.moveaxis(field, 0, -1).astype(np.float32), affine)
    image.header.set_intent("vector")
    image.header.set_xyzt_units("mm", "sec")
    return image


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m cortexgen.diffusion.run spec.json``: run a training job (one process per GPU)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m cortexgen.diffusion.run <train spec.json>")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train_job(json.loads(Path(argv[0]).read_text()))


if __name__ == "__main__":
    main()
