"""The generators on one GPU, as one time-bounded check; writes JSON and a gallery PNG.

    python benchmarks/gpu_check.py --out DIR [--results RESULTS] [--budget-s 450] [--train-s 240]
    python benchmarks/gpu_check.py --out DIR --tiny          # the CPU version the tests run

Measures, in the order 1, 2, 4 but compile, 3, compile (each measurement's JSON is written as soon as it is done, so a
run killed by its time limit still leaves everything measured before):

1. ``train_step_<model>``: each generator's (bridge, ddpm, deform) optimiser step at config/gpu.yaml's
   sizes (84×128×84, UNet 128/128/256, bf16 autocast), the step the training loop takes
   (loss, backward, gradient clipping, AdamW, EMA): volumes/s (median of the timed steps)
   and peak memory (CUDA: max allocated; CPU: peak RSS) for each ``--batches`` size, with
   the ``diffusion.cuda`` flags of config/config.yaml (TF32, cudnn.benchmark). From the
   peak memories, the largest batch whose linear extrapolation fits 80 GB.
2. ``sampling``: seconds per volume, bridge at 10 steps and DDPM at 100 DDIM steps, under the
   sampling jobs' own bf16 autocast (untrained weights: speed does not depend on them).
3. ``real_training``: with ``--results`` (a cortexgen run's results/ folder with preprocessed
   images and surface SDFs, e.g. of the ds000022 heads), the workflow's own training job
   trains the bridge on all but ``--held-out`` subjects for about ``--train-s`` seconds
   (steps = seconds × the eager step rate measured in 1; with ``compile_training`` on, the job
   adds its compilation and steps faster), then its sampling job samples the
   held-out subjects, scored against their real images by paired SSIM/PSNR/MAE
   (cortexgen.evaluate.metrics.paired_fidelity). Without ``--results`` the JSON says so.
4. ``variants_bridge``: the bridge at batch 2 with one change each: TF32 and cudnn.benchmark off,
   channels_last_3d (both before 3), torch.compile (after 3, if at least 150 s are left:
   ``--train-s 60`` leaves it room). CUDA-only options are reported as skipped on CPU.

Every measurement runs in its own try/except: an error (an out-of-memory at batch 4) is
recorded as its string and the check goes on. ``--budget-s`` bounds the whole run: a
measurement that would not fit in what is left is skipped with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.measure import PeakRSS  # noqa: E402
from cortexgen.diffusion.generators import make_generator  # noqa: E402
from cortexgen.diffusion.networks import NetworkSettings, build_unet, check_grid  # noqa: E402
from cortexgen.diffusion.registry import generator as registry_entry  # noqa: E402
from cortexgen.diffusion.run import sample_bridge_job, train_job  # noqa: E402
from cortexgen.diffusion.training import (  # noqa: E402
    EMA,
    CudaSettings,
    TrainSettings,
    apply_cuda_settings,
    sampling_autocast,
    training_autocast,
)
from cortexgen.io import atomic_output  # noqa: E402

MODELS = ("bridge", "ddpm", "deform")
CUDA_KEYS = tuple(field.name for field in dataclasses.fields(CudaSettings))
GB80_MB = 80 * 1024
#: The CPU version: the same code paths on a grid and UNet small enough for a test.
TINY_GRID = [8, 8, 8]
TINY_NETWORK = {"channels": [4, 8, 8], "attention_levels": [False, False, True], "num_res_blocks": 1,
                "norm_num_groups": 4, "num_head_channels": 0, "use_flash_attention": True}


def model_configs(tiny: bool) -> tuple[dict, dict]:
    """Per model, config.yaml's section overlaid with gpu.yaml's (tiny: a small grid and UNet); and diffusion.cuda."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    gpu = yaml.safe_load((REPO / "config" / "gpu.yaml").read_text())["diffusion"]
    configs = {}
    for model in MODELS:
        section = {**base["diffusion"][model], **gpu[model]}
        if tiny:
            section.update(grid=list(TINY_GRID), network=dict(TINY_NETWORK))
        configs[model] = section
    return configs, {**base["diffusion"]["cuda"], "sdf_clip_mm": base["surfaces"]["sdf_clip_mm"]}


class Check:
    """The report, its file, and the time budget."""

    def __init__(self, out: Path, budget_s: float):
        self.out = out
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.report: dict = {}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def save(self) -> None:
        self.report["seconds"] = round(time.perf_counter() - self.start, 1)
        with atomic_output(self.out / "gpu_check.json") as tmp:
            tmp.write_text(json.dumps(self.report, indent=1, default=str))

    def run(self, section: str, key: str | None, function, needs_s: float = 0.0, skip: str | None = None):
        """``report[section][key] = function()`` (``report[section]`` when ``key`` is None), or its
        error, or why it was skipped; saved at once."""
        place, key = (self.report, section) if key is None else (self.report.setdefault(section, {}), key)
        if skip is None and self.left() < needs_s:
            skip = f"time budget: {self.left():.0f} s left, this needs about {needs_s:.0f} s"
        if skip is not None:
            place[key] = {"skipped": skip}
        else:
            started = time.perf_counter()
            try:
                place[key] = function()
            except Exception as err:  # an OOM or a CUDA-only bug is a result here, not the end of the check
                place[key] = {"error": f"{type(err).__name__}: {err}"[:2000]}
            place[key]["wall_seconds"] = round(time.perf_counter() - started, 2)
            release()
        self.save()
        return place[key]


def release() -> None:
    """Free what the last measurement left (compiled graphs, cached CUDA blocks)."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(model: str, generator, batch: int, grid, device, channels_last: bool) -> dict:
    """A batch of uniform [-1, 1] volumes (a step's cost does not depend on the values), the generator fitted on it."""
    rng = torch.Generator().manual_seed(0)
    shapes = {"image": (batch, generator.channels, *grid)}
    if model == "bridge":
        shapes["condition"] = (batch, generator.condition_channels, *grid)
    values = {key: (torch.rand(shape, generator=rng) * 2 - 1).to(device) for key, shape in shapes.items()}
    # What a generator fits without gradients (the bridge's surface prior) is fitted on the same values.
    generator.fit({key: value.cpu() for key, value in values.items()})
    if channels_last:
        values = {key: value.to(memory_format=torch.channels_last_3d) for key, value in values.items()}
    return values


def train_step(model: str, section: dict, batch: int, device: torch.device, cuda: CudaSettings,
               steps: int, warmup: int, compile: bool = False, channels_last: bool = False) -> dict:
    """Volumes/s and peak memory of the training loop's optimiser step (see the module docstring)."""
    apply_cuda_settings(cuda, device)
    generator = make_generator(model, registry_entry(model).generator_settings(section))
    network_settings = NetworkSettings.from_dict(section["network"])
    grid = section["grid"]
    check_grid(network_settings, generator.network_grid(grid))
    training = section["training"]
    torch.manual_seed(training["seed"])
    network = build_unet(network_settings, generator.in_channels, generator.out_channels).to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    trained = torch.compile(network) if compile else network
    optimizer = torch.optim.AdamW(network.parameters(), lr=training["learning_rate"])
    ema = EMA(network, training["ema_decay"])
    data = random_batch(model, generator, batch, grid, device, channels_last)
    autocast = training_autocast(TrainSettings(**training), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with PeakRSS() as rss:
        for step in range(warmup + steps):
            synchronize(device)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = generator.loss(trained, data, list(range(step * batch, (step + 1) * batch)), training["seed"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), training["grad_clip"])
            optimizer.step()
            ema.update(network)
            synchronize(device)
            if step >= warmup:  # warm-up steps pay for allocation, cuDNN's search, compilation
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss.peak_mb
    return {"volumes_per_second": round(batch / seconds, 3), "step_seconds": round(seconds, 4),
            "peak_memory_mb": round(peak, 1), "memory": "cuda max allocated" if device.type == "cuda" else "peak RSS",
            "loss": round(float(loss.detach()), 5), "timed_steps": steps,
            "parameters": sum(p.numel() for p in network.parameters())}


def largest_batch(points: dict) -> dict:
    """The largest batch whose peak memory, extrapolated linearly from the measured batches, fits 80 GB."""
    measured = [(int(key.split("_")[1]), value["peak_memory_mb"]) for key, value in points.items()
                if "peak_memory_mb" in value]
    if len(measured) < 2:
        return {"skipped": "needs peak memory at two batch sizes"}
    sizes, memory = np.array(measured, dtype=float).T
    slope, intercept = np.polyfit(sizes, memory, 1)
    if slope <= 0:
        return {"skipped": f"memory does not grow with the batch (slope {slope:.1f} MB)"}
    return {"batch": int((GB80_MB - intercept) // slope), "mb_per_volume": round(float(slope), 1),
            "mb_fixed": round(float(intercept), 1)}


def sample_speed(model: str, section: dict, steps: int, device: torch.device, cuda: CudaSettings) -> dict:
    """Seconds per volume of the sampler at ``steps`` network evaluations, batch 1, under sampling's autocast."""
    apply_cuda_settings(cuda, device)
    generator = make_generator(model, registry_entry(model).generator_settings(section))
    torch.manual_seed(0)
    network = build_unet(NetworkSettings.from_dict(section["network"]), generator.in_channels,
                         generator.out_channels).to(device).eval()
    grid = section["grid"]
    rng = torch.Generator(device=device).manual_seed(0)
    # Fits what the generator learns without gradients (prior, training mean), outside the timing.
    condition = random_batch(model, generator, 1, grid, device, False).get("condition")

    def once():
        with sampling_autocast(cuda, device):
            if model == "bridge":
                return generator.sample(network, condition, generator=rng, sample_steps=steps)
            return generator.sample(network, (1, generator.channels, *grid), generator=rng,
                                    sample_steps=steps, device=device)

    with torch.no_grad():
        once()  # warm-up: allocation and cuDNN's search are not sampling
        synchronize(device)
        start = time.perf_counter()
        volume = once()
        synchronize(device)
    return {"seconds_per_volume": round(time.perf_counter() - start, 3), "network_evaluations": steps,
            "bf16_autocast": cuda.bf16_sampling and device.type == "cuda",
            "finite": bool(torch.isfinite(volume).all())}


# --- a short real training of the bridge --------------------------------------------------------


def find_subjects(results: Path) -> list[dict]:
    """Subjects of a cortexgen results folder with a preprocessed image, both surface SDFs and a brain
    mask, and the cortex partition (``partition``) where the surface stage wrote one."""
    subjects = []
    for image in sorted((results / "preproc").rglob("*_desc-preproc_T1w.nii.gz")):
        surfaces = results / "surfaces" / image.parent.relative_to(results / "preproc")
        files = {"id": image.name.split("_space-")[0], "image": image,
                 "pialsdf": surfaces / image.name.replace("desc-preproc_T1w", "desc-pial_sdf"),
                 "whitesdf": surfaces / image.name.replace("desc-preproc_T1w", "desc-white_sdf"),
                 "mask": image.with_name(image.name.replace("desc-preproc_T1w", "desc-brain_mask"))}
        partition = surfaces / f"{image.name.split('_res-')[0]}_desc-cortex_dseg.nii.gz"
        if partition.is_file():
            files["partition"] = partition
        if all(Path(files[key]).is_file() for key in ("pialsdf", "whitesdf", "mask")):
            subjects.append({key: str(value) for key, value in files.items()})
    return subjects


def real_training(check: Check, results: Path, section: dict, cuda: dict, device: torch.device,
                  train_s: float, held_out: int, step_rate: float | None) -> dict:
    """The workflow's training job trains the bridge for about ``train_s`` s; paired fidelity of held-out samples."""
    from cortexgen.evaluate.metrics import paired_fidelity

    subjects = find_subjects(results)
    if len(subjects) <= held_out:
        return {"skipped": f"{results}: {len(subjects)} subjects with image, SDFs and mask; need more than {held_out}"}
    order = np.random.default_rng(0).permutation(len(subjects))
    test = [subjects[i] for i in sorted(order[:held_out])]
    train = [subjects[i] for i in sorted(order[held_out:])]
    training = dict(section["training"])
    batch = training["batch_size"] * training["grad_accumulation"]
    # Steps that fit the time: the measured optimiser-step rate of this batch (a probe rate when unmeasured).
    steps = max(2, int(train_s * (step_rate or 1.0)))
    training.update(steps=steps, log_every=max(1, steps // 20), checkpoint_every=steps, keep_checkpoints=1)
    folder = check.out / "bridge"
    spec = {
        "model": "bridge", "settings": {**section, "training": training}, "device": device.type,
        "cuda": {key: cuda[key] for key in CUDA_KEYS},
        "sdf_clip_mm": cuda["sdf_clip_mm"], "checkpoints": str(folder / "checkpoints"), "progress": False,
        "inputs": {"images": [s["image"] for s in train], "pialsdf": [s["pialsdf"] for s in train],
                   "whitesdf": [s["whitesdf"] for s in train]},
        "outputs": {"model": str(folder / "model.pt"), "log": str(folder / "train_log.tsv"),
                    "png": str(folder / "loss.png")},
    }
    start = time.perf_counter()
    train_job(spec)
    train_seconds = time.perf_counter() - start
    lines = (folder / "train_log.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, map(float, line.split("\t")))) for line in lines[1:]]
    start = time.perf_counter()
    samples = [str(folder / f"{s['id']}_sample.nii.gz") for s in test]
    sample_bridge_job({
        "model_file": spec["outputs"]["model"], "settings": {"sampling": {"seed": 0, "batch_size": 1}},
        "device": device.type, "cuda": spec["cuda"], "sdf_clip_mm": spec["sdf_clip_mm"],
        "conditions": [{"id": s["id"], "kind": "held_out", "noise": s["id"], "real": s["image"],
                        "pialsdf": s["pialsdf"], "whitesdf": s["whitesdf"]} for s in test],
        "outputs": samples, "table": str(folder / "samples.tsv"),
    })
    sample_seconds = time.perf_counter() - start
    scores = {}
    for subject, sample in zip(test, samples):
        real = nib.load(subject["image"]).get_fdata(dtype=np.float32)
        fake = nib.load(sample).get_fdata(dtype=np.float32)
        mask = nib.load(subject["mask"]).get_fdata(dtype=np.float32) > 0
        scores[subject["id"]] = {key: round(value, 4) for key, value in paired_fidelity(real, fake, mask).items()}
    return {
        "results": str(results), "train_subjects": len(train), "held_out": [s["id"] for s in test],
        "grid": section["grid"], "batch": batch, "steps": steps, "train_job_seconds": round(train_seconds, 1),
        "final_train_loss": rows[-1]["train_loss"],
        "volumes_per_second_last_window": rows[-1]["volumes_per_second"],
        "sample_seconds_per_volume": round(sample_seconds / len(test), 2),
        "paired": scores, "mean_ssim": round(float(np.mean([s["ssim"] for s in scores.values()])), 4),
        "gallery_items": [{"real": s["image"], "sample": sample, "condition": s["pialsdf"]}
                          for s, sample in zip(test, samples)],
    }


def gallery(check: Check, items: list[dict], path: Path) -> None:
    """Mid-axial slices of each held-out subject (a row): real image, the bridge's sample, its pial SDF."""
    from cortexgen.plotting import agg_figure

    columns = [("real", "gray", (0, 1)), ("sample", "gray", (0, 1)), ("condition", "coolwarm", (None, None))]
    fig = agg_figure((9, 2.6 * max(1, len(items))))
    for row, item in enumerate(items):
        for col, (key, cmap, (vmin, vmax)) in enumerate(columns):
            volume = nib.load(item[key]).get_fdata(dtype=np.float32)
            ax = fig.add_subplot(max(1, len(items)), 3, row * 3 + col + 1)
            ax.imshow(np.rot90(volume[:, :, volume.shape[2] // 2]), cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(f"{key}: {Path(item['real']).name.split('_space-')[0]}" if col == 0 else key, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"bridge after {check.report['real_training'].get('steps')} steps on "
                 f"{check.report['device']['name']}", fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80)


def untrained_gallery(check: Check, configs: dict, device: torch.device, cuda: CudaSettings, path: Path) -> None:
    """Without data: one bridge and one DDPM sample of untrained networks (shows the samplers run, not quality)."""
    from cortexgen.plotting import agg_figure

    fig = agg_figure((6, 3))
    for col, model in enumerate(("bridge", "ddpm")):
        section = configs[model]
        generator = make_generator(model, registry_entry(model).generator_settings(section))
        torch.manual_seed(0)
        network = build_unet(NetworkSettings.from_dict(section["network"]), generator.in_channels,
                             generator.out_channels).to(device).eval()
        rng = torch.Generator(device=device).manual_seed(0)
        condition = random_batch(model, generator, 1, section["grid"], device, False).get("condition")
        with torch.no_grad(), sampling_autocast(cuda, device):
            if model == "bridge":
                volume = generator.sample(network, condition, generator=rng, sample_steps=2)
            else:
                volume = generator.sample(network, (1, 1, *section["grid"]), generator=rng, sample_steps=2,
                                          device=device)
        volume = volume[0, 0].float().cpu().numpy()
        ax = fig.add_subplot(1, 2, col + 1)
        ax.imshow(np.rot90(volume[:, :, volume.shape[2] // 2]), cmap="gray")
        ax.set_title(f"{model}, untrained (no --results)", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gallery.png")
    parser.add_argument("--results", type=Path, help="a cortexgen results/ folder (preproc/, surfaces/) to train on")
    parser.add_argument("--tiny", action="store_true", help="a grid and UNet small enough for a CPU test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop measuring after this (seconds)")
    parser.add_argument("--train-s", type=float, default=240.0, help="the real training's length (seconds)")
    parser.add_argument("--held-out", type=int, default=2, help="subjects kept out of the real training")
    parser.add_argument("--batches", type=int, nargs="+", help="training batches (default 1 2 4; tiny 1 2)")
    parser.add_argument("--steps", type=int, help="timed training steps per measurement (default 5; tiny 2)")
    parser.add_argument("--ddim-steps", type=int, help="DDPM sampling steps (default 100; tiny 10)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batches = args.batches or ([1, 2] if args.tiny else [1, 2, 4])
    steps = args.steps or (2 if args.tiny else 5)
    warmup = 1 if args.tiny else 2
    ddim_steps = args.ddim_steps or (10 if args.tiny else 100)
    configs, cuda_config = model_configs(args.tiny)
    cuda = CudaSettings.from_dict({key: cuda_config[key] for key in CUDA_KEYS})
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.budget_s)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"
    check.report.update({
        "device": {"name": name,
                   "type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
                   "cpus": os.cpu_count(), "threads": torch.get_num_threads()},
        "settings": {"tiny": args.tiny, "grid": configs["bridge"]["grid"], "network": configs["bridge"]["network"],
                     "batches": batches, "timed_steps": steps, "warmup_steps": warmup, "cuda": cuda_config,
                     "budget_s": args.budget_s, "train_s": args.train_s},
    })
    check.save()
    per_step = 10.0 if device.type == "cuda" and not args.tiny else 0.0  # rough seconds one measurement needs
    for model in MODELS:
        for batch in batches:
            check.run(f"train_step_{model}", f"batch_{batch}",
                      lambda: train_step(model, configs[model], batch, device, cuda, steps, warmup), per_step)
        check.report[f"train_step_{model}"]["largest_batch_80gb"] = largest_batch(
            {k: v for k, v in check.report[f"train_step_{model}"].items() if k.startswith("batch_")}
        ) if device.type == "cuda" else {"skipped": "CUDA only: a CPU's peak RSS is not GPU memory"}
    check.save()
    check.run("sampling", "bridge", lambda: sample_speed("bridge", configs["bridge"], 10, device, cuda), per_step)
    check.run("sampling", "ddpm", lambda: sample_speed("ddpm", configs["ddpm"], ddim_steps, device, cuda), per_step)

    bridge_batch = configs["bridge"]["training"]["batch_size"]
    measured = check.report["train_step_bridge"].get(f"batch_{bridge_batch}", {})
    # One change each from the bridge's baseline (config flags on, eager, contiguous). The cheap
    # ones come before the real training; torch.compile (minutes of compilation) after it, if time is left.
    cuda_only = None if device.type == "cuda" else "CUDA only: TF32 and cuDNN autotuning do not exist on CPU"
    flags_off = dataclasses.replace(cuda, tf32=False, cudnn_benchmark=False)
    compile_skip = "tiny CPU run: inductor takes minutes to compile a UNet on a CPU; measured on CUDA"

    def variant(name: str, flags: CudaSettings, options: dict, skip: str | None, needs_s: float) -> None:
        check.run("variants_bridge", f"{name}_batch_{bridge_batch}",
                  lambda: train_step("bridge", configs["bridge"], bridge_batch, device, flags, steps, warmup,
                                     **options), needs_s if device.type == "cuda" else 0.0, skip)
        check.report["variants_bridge"][f"baseline_batch_{bridge_batch}"] = measured
        apply_cuda_settings(cuda, device)

    variant("flags_off", flags_off, {}, cuda_only, 30.0)
    variant("channels_last_3d", cuda, {"channels_last": True}, None, 30.0)

    step_rate = 1.0 / measured["step_seconds"] if "step_seconds" in measured else None
    # The real training gets what is left of its time after ~60 s for sampling and scoring the held-out subjects.
    train_s = min(args.train_s, check.left() - 60.0)
    if args.results is None:
        check.run("real_training", None, None, skip="no --results given: no real data, nothing was trained")
    else:
        check.run("real_training", None,
                  lambda: real_training(check, args.results, configs["bridge"], cuda_config, device, train_s,
                                        args.held_out, step_rate),
                  skip=None if train_s >= (2.0 if args.tiny else 30.0) else f"time budget: {train_s:.0f} s to train")
    items = check.report["real_training"].pop("gallery_items", None)
    gallery_path = args.out / "gallery.png"
    try:
        if items:
            gallery(check, items, gallery_path)
        else:
            untrained_gallery(check, configs, device, cuda, gallery_path)
        check.report["gallery"] = str(gallery_path)
    except Exception as err:
        check.report["gallery"] = {"error": f"{type(err).__name__}: {err}"[:2000]}
    check.save()
    variant("torch_compile", cuda, {"compile": True}, compile_skip if args.tiny else None, 150.0)
    print(json.dumps(check.report, indent=1, default=str))
    return check.report


if __name__ == "__main__":
    main()
