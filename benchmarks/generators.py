"""Generators on a real cohort after a fixed training time each, evaluated as the workflow evaluates them, as JSON.

    python benchmarks/generators.py --results RESULTS --out DIR [--models bridge,ddpm,deform,sdm]
        [--minutes bridge=60,ddpm=30,deform=30] [--samples N] [--full-grid-steps K] [--subjects N] [--threads 2]

RESULTS is a cortexgen results folder with preprocessed images, brain masks and surface SDFs
(e.g. the workflow run on the 14 ds000022 heads). Subjects are split as the workflow splits
them (config ``split``: the shipped 0.25 held out, seed 0, gives 10 training and 4 held-out
heads of 14); ``--subjects N`` keeps the first N (a smoke run).

Each generator of ``--models`` is trained and sampled through the workflow's own jobs
(:func:`cortexgen.diffusion.run.train_job`, ``sample_bridge_job``, ``sample_unconditional_job``)
from the specs the rules train_generator and sample_<model> build, with its config section as
shipped except the number of training steps: a network trains for about its ``--minutes``
(steps from a 4-step probe's seconds per step), the statistical deformation model (sdm) is
fitted once. The unconditional generators write their samples on the template's grid, and the
field generators (deform, sdm) warp that template and train on each training subject's
displacement field: both built here as rules deform_template and deformation_field build them
(one ITK thread per field, ``--threads`` fields at a time) into DIR/deform, where a later run
into the same DIR reuses the fields.

Every training and sampling job runs in a fresh process, so its peak RSS is its own. Per
generator the JSON reports steps, seconds per step (the probe's median after its warm-up steps,
and the mean over the run from its training log), wall and CPU seconds and peak RSS of training
and sampling, and the evaluate rule's metrics of its samples against the workflow's reference
images (RBF and linear MMD, MS-SSIM within the samples and within the real images, FID only
with MedicalNet weights), the memorisation check (each sample's nearest training image by SSIM
and r, beside the held-out real images' in ``real_held_out``), the folding fraction of a field
generator's warps, for a DDPM centred on its training mean (``center: mean``) the same metrics
of that mean alone as its every sample (``training_mean_alone``: what the network adds is the
difference) and, for the bridge, paired fidelity on the held-out subjects beside two references
without a network (the surface prior alone and the training set's mean image), and how far two
draws of one cortex lie apart (``seed_spread``: each held-out subject sampled again with other
noise; draws that barely differ mean the network ignores its noise). A generator with a
baseline (deform: sdm) also gets its RBF MMD minus the baseline's on the same reference with a
paired bootstrap interval (``mmd_rbf_<features>_minus_<baseline>``). The real
reference's two halves against each other are ``real_vs_real``. ``--full-grid-steps K`` also
times K training steps (a fit for sdm) of each generator whose config trains on a coarser
grid, on the full image grid: timing and memory only, that network is not evaluated. Each
model's gallery (real images on top, its samples below) goes to DIR/gallery-<model>.png.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml
from nibabel.processing import resample_from_to

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_check import find_subjects  # noqa: E402
from benchmarks.measure import in_fresh_process  # noqa: E402
from cortexgen.diffusion.data import network_to_image, resize_volume  # noqa: E402
from cortexgen.diffusion.fields import FieldSettings, register_to_template, study_template, template_image  # noqa: E402
from cortexgen.diffusion.registry import generator as registry_entry  # noqa: E402
from cortexgen.diffusion.run import (  # noqa: E402
    folding_fraction,
    sample_bridge_job,
    sample_unconditional_job,
    train_job,
    warped_template,
)
from cortexgen.diffusion.training import load_model  # noqa: E402
from cortexgen.evaluate.figures import gallery_figure  # noqa: E402
from cortexgen.evaluate.memorisation import BASELINE, memorisation_metrics, memorisation_table  # noqa: E402
from cortexgen.evaluate.metrics import (  # noqa: E402
    MetricResult,
    SetMetricSettings,
    draw_spread,
    mmd_rbf_difference,
    paired_fidelity,
    set_features,
    set_metrics,
)
from cortexgen.evaluate.summary import baseline_halves, per_item_rows  # noqa: E402
from cortexgen.io import read_table, save_nifti, voxel_sizes  # noqa: E402
from cortexgen.planning import bridge_held_out, reference_kind, seeded_subset, template_scans  # noqa: E402
from cortexgen.runtime import limit_threads  # noqa: E402
from cortexgen.split import split_subjects  # noqa: E402
from cortexgen.surfaces.partition import HINDBRAIN, LEFT_FILL, RIGHT_FILL  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Steps of the probe that times a network's training step before its run; the first
#: PROBE_WARMUP_STEPS are not timed (one-time costs: a 14-head ddpm probe's first two steps took
#: 2.4 and 1.5 s, the rest 0.9 s, and a median over all four cut its training by a third).
PROBE_STEPS = 6
PROBE_WARMUP_STEPS = 2


def minutes_per_model(text: str) -> dict[str, float]:
    """``"bridge=60,ddpm=30"`` -> {"bridge": 60.0, "ddpm": 30.0} (training minutes per network generator)."""
    minutes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if not value:
            raise ValueError(f"--minutes: expected model=minutes, got {item!r}")
        minutes[name.strip()] = float(value)
    return minutes


def log_seconds_per_step(path: Path, warmup_steps: int = 0) -> tuple[float, float]:
    """(median, mean) seconds per optimiser step of a training log (train_log.tsv).

    Each row's ``seconds`` covers the steps since the previous row; the median is over rows
    of one step each (a probe logs every step) after the rows that end within the first
    ``warmup_steps`` steps; the mean is the rows' seconds over the last step (the whole run's
    training loop, without loading the data or writing the model).
    """
    rows = read_table(path)
    ends = np.array([int(row["step"]) for row in rows])
    steps = np.diff(np.concatenate([[0], ends]))
    seconds = np.array([float(row["seconds"]) for row in rows])
    timed = ends > warmup_steps
    timed = timed if timed.any() else np.ones(len(ends), dtype=bool)
    return float(np.median(seconds[timed] / steps[timed])), float(seconds.sum() / steps.sum())


def metric_values(rows: list[MetricResult]) -> dict:
    """{metric: {value, ci: [low, high], n, note}} of one generator's rows; NaN as null."""
    def number(value: float):
        return round(value, 6) if math.isfinite(value) else None

    return {row.metric: {"value": number(row.value), "ci": [number(row.ci_low), number(row.ci_high)],
                         "n": row.n, "note": row.note} for row in rows}


def load_volumes(paths) -> np.ndarray:
    """(N, X, Y, Z) float32 images."""
    return np.stack([np.asarray(nib.load(path).dataobj, dtype=np.float32) for path in paths])


def training_inputs(model: str, section: dict, subjects: list[dict]) -> dict:
    """A generator's training files as rule train_generator gives them: {role: [path per subject]}."""
    roles = registry_entry(model).training_roles(section.get("conditions", []))
    # A subject's model-ready image is its "image" (find_subjects); the rule's key is "images".
    return {role: [str(subject["image" if role == "images" else role]) for subject in subjects] for role in roles}


def train_spec(model: str, section: dict, config: dict, inputs: dict, folder: Path, steps: int | None) -> dict:
    """Rule train_generator's job description, training for ``steps`` steps (None: a fit, no network)."""
    settings = dict(section)
    if steps is not None:
        settings["training"] = {**section["training"], "steps": steps, "log_every": max(1, steps // 20),
                                "checkpoint_every": steps, "keep_checkpoints": 1}
    return {"model": model, "settings": settings, "device": config["diffusion"]["device"],
            "cuda": config["diffusion"]["cuda"], "sdf_clip_mm": float(config["surfaces"]["sdf_clip_mm"]),
            "checkpoints": str(folder / "checkpoints"), "progress": False, "inputs": inputs,
            "outputs": {"model": str(folder / "model.pt"), "log": str(folder / "train_log.tsv"),
                        "png": str(folder / "loss.png")}}


def train_measured(model: str, section: dict, config: dict, inputs: dict, folder: Path, steps: int | None,
                   threads: int) -> dict:
    """Train (or fit) in a fresh process, from scratch (an earlier run's checkpoints in ``folder``
    would be resumed); its {seconds, cpu_seconds, peak_rss_mb}."""
    shutil.rmtree(folder, ignore_errors=True)
    _, record = in_fresh_process(train_job, train_spec(model, section, config, inputs, folder, steps),
                                 threads=threads)
    return record


def _field_job(image: str, template: str, settings: dict, out: str) -> None:
    """Rule deformation_field for one image: the displacement that warps the template onto it."""
    save_nifti(register_to_template(nib.load(image), nib.load(template), FieldSettings.from_config(settings)), out)


def deform_template(config: dict, train: list[dict], folder: Path, threads: int) -> dict:
    """The brain deform and sdm warp, on the model grid, scaled as the subjects' images (rule
    deform_template): with ``diffusion.deform.template.kind: study`` the average of at most
    ``subjects`` training images (drawn with the split's seed), else the space's template brain.

    Built in a fresh process with ``threads`` threads; reused when already in ``folder``.
    Returns {path, kind, images, and the build's seconds, cpu_seconds, peak_rss_mb when built now}.
    """
    preprocess, settings = config["preprocess"], config["diffusion"]["deform"]["template"]
    scans = template_scans(train, settings, config["split"]["seed"])
    desc = "study" if scans else "brain"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tpl-{preprocess['template_space']}_desc-{desc}_T1w.nii.gz"
    report = {"path": str(path), "kind": desc, "images": [s["id"] for s in scans]}
    if not path.is_file():
        _, record = in_fresh_process(_template_job, config, train[0]["image"], [s["image"] for s in scans], str(path),
                                     threads=threads)
        report.update(record)
    return report


def _template_job(config: dict, like: str, images: list[str], out: str) -> None:
    preprocess, deform = config["preprocess"], config["diffusion"]["deform"]
    percentiles = tuple(preprocess["normalize"]["percentiles"])
    image = template_image(nib.load(REPO / preprocess["template"]), nib.load(REPO / preprocess["template_brain_mask"]),
                           nib.load(like), percentiles)
    if images:
        image = study_template([nib.load(path) for path in images], image,
                               FieldSettings.from_config(deform["registration"]),
                               iterations=deform["template"]["iterations"], percentiles=percentiles)
    save_nifti(image, out)


def deformation_fields(train: list[dict], config: dict, template: str, folder: Path, threads: int) -> dict:
    """Each training subject's displacement field from the template (rule deformation_field, one
    ITK thread each, ``threads`` at a time), into ``folder``.

    Adds ``fields`` to each subject of ``train``; a field already on disk is reused (SyN with one
    thread and its seed gives the same field). Returns {computed: fields made now, seconds: their wall time}.
    """
    space = config["preprocess"]["template_space"]
    missing = []
    for subject in train:
        subject["fields"] = str(folder / f"{subject['id']}_from-{space}_to-T1w_desc-displacement_xfm.nii.gz")
        if not Path(subject["fields"]).is_file():
            missing.append(subject)
    start = time.perf_counter()
    settings = config["diffusion"]["deform"]["registration"]
    with ProcessPoolExecutor(max_workers=threads, mp_context=multiprocessing.get_context("spawn"),
                             initializer=limit_threads, initargs=(1,)) as pool:
        for done in [pool.submit(_field_job, s["image"], template, settings, s["fields"]) for s in missing]:
            done.result()
    return {"computed": len(missing), "seconds": round(time.perf_counter() - start, 1)}


def sample_spec(model: str, section: dict, config: dict, model_file: Path, folder: Path, count: int | None,
                held_out: list[dict], template: str | None) -> dict:
    """Rule sample_<model>'s job description: the bridge one image per held-out subject it samples
    (from its own surfaces), another generator ``count`` images (None: its ``sampling.n``) on the
    template's grid."""
    spec = {"model": model, "model_file": str(model_file), "settings": section,
            "device": config["diffusion"]["device"], "cuda": config["diffusion"]["cuda"],
            "table": str(folder / "samples.tsv")}
    if registry_entry(model).conditional:
        held_out = bridge_held_out(held_out, section, config["split"]["seed"])
        spec["sdf_clip_mm"] = float(config["surfaces"]["sdf_clip_mm"])
        spec["conditions"] = [{"id": s["id"], "label": s["id"], "kind": "held_out", "real": s["image"],
                               "noise": s["id"], **{role: s[role] for role in section["conditions"]}}
                              for s in held_out]
        spec["outputs"] = [str(folder / f"cond-{s['id']}_T1w.nii.gz") for s in held_out]
        spec["redrawn"] = [str(folder / f"cond-{s['id']}_desc-redrawn_T1w.nii.gz") for s in held_out]
        if section.get("endpoint") == "prior":
            spec["priors"] = [str(folder / f"cond-{s['id']}_desc-prior_T1w.nii.gz") for s in held_out]
    else:
        count = count or section["sampling"]["n"]
        spec["grid_image"] = template
        spec["outputs"] = [str(folder / f"sample-{k:04d}_T1w.nii.gz") for k in range(1, count + 1)]
        spec["fields"] = [str(folder / f"sample-{k:04d}_desc-displacement_xfm.nii.gz") for k in range(1, count + 1)]
    return spec


#: Where a paired image's error is split, in this order (each voxel of the brain mask counts in
#: the first that holds it): the partition's cerebellum and brainstem and its filled ventricles
#: and deep nuclei, then by the conditioning surfaces (inside the white, the ribbon, outside the pial).
ERROR_REGIONS = ("hindbrain", "filled", "inside_white", "ribbon", "outside_pial")


def error_by_region(real: np.ndarray, fake: np.ndarray, mask: np.ndarray, partition: np.ndarray,
                    pial_sdf: np.ndarray, white_sdf: np.ndarray) -> dict:
    """Each region's share of the squared error in ``mask``, and the PSNR gain (dB) if ``fake``
    equalled ``real`` there. All (X, Y, Z) on one grid: images in [0, 1], the partition's labels
    (:data:`cortexgen.surfaces.partition.PARTITION_LABELS`), SDFs in mm (negative inside)."""
    mask = np.asarray(mask, dtype=bool)
    regions = {"hindbrain": partition == HINDBRAIN, "filled": np.isin(partition, (LEFT_FILL, RIGHT_FILL)),
               "inside_white": white_sdf < 0, "ribbon": pial_sdf < 0, "outside_pial": np.ones(mask.shape, bool)}
    squared = np.where(mask, (real.astype(np.float64) - fake.astype(np.float64)) ** 2, 0.0)
    total, taken = squared.sum(), np.zeros(mask.shape, dtype=bool)
    split = {}
    for name in ERROR_REGIONS:
        region = regions[name] & ~taken
        taken |= region
        error = squared[region].sum()
        gain = 10.0 * math.log10(total / (total - error)) if total > error else math.inf
        split[name] = {"share": round(float(error / total), 4) if total else 0.0,
                       "oracle_gain_db": round(gain, 3) if math.isfinite(gain) else None}
    return split


def paired_scores(pairs: list[tuple[dict, np.ndarray]]) -> dict:
    """Paired fidelity of each (held-out subject, image in [0, 1]) and the means; with the
    subject's partition on record (``partition``), where the error lies (:func:`error_by_region`)."""
    scores = {}
    for subject, fake in pairs:
        real = nib.load(subject["image"]).get_fdata(dtype=np.float32)
        mask = nib.load(subject["mask"]).get_fdata(dtype=np.float32) > 0
        scores[subject["id"]] = {key: round(value, 4) for key, value in
                                 paired_fidelity(real, fake.astype(np.float32), mask).items()}
        if subject.get("partition"):
            grid = nib.load(subject["image"])
            partition = np.asarray(resample_from_to(nib.load(subject["partition"]), grid, order=0).dataobj)
            sdf = {key: nib.load(subject[key]).get_fdata(dtype=np.float32) for key in ("pialsdf", "whitesdf")}
            scores[subject["id"]]["error_by_region"] = error_by_region(real, fake, mask, partition,
                                                                       sdf["pialsdf"], sdf["whitesdf"])
    means = {f"mean_{key}": round(float(np.mean([s[key] for s in scores.values()])), 4)
             for key in ("ssim", "psnr", "mae")}
    return {"per_subject": scores, **means}


def seed_spread(draws: list[tuple[dict, np.ndarray, np.ndarray]]) -> dict:
    """How far apart two draws of one cortex lie: for each (held-out subject, its sample, a
    sample of the same conditions with other noise), images (X, Y, Z) in [0, 1],
    :func:`~cortexgen.evaluate.metrics.draw_spread` in the subject's brain mask (``mask``), and the means."""
    scores = {}
    for subject, first, second in draws:
        mask = nib.load(subject["mask"]).get_fdata(dtype=np.float32) > 0
        spread = draw_spread(first, second, mask)
        scores[subject["id"]] = {"ssim": round(spread["ssim"], 4), "mae": round(spread["mae"], 5),
                                 "rms": round(spread["rms"], 5)}
    means = {f"mean_{key}": round(float(np.mean([s[key] for s in scores.values()])), 5)
             for key in ("ssim", "mae", "rms")}
    return {"per_subject": scores, **means}


def bridge_references(folder: Path, train: list[dict], held_out: list[dict], table: list[dict]) -> dict:
    """The bridge's paired fidelity on the held-out subjects it sampled (its sample ``table`` in
    ``folder``/samples), beside the training set's mean image and (with ``endpoint: prior``) the
    surface prior alone, which need no network; and how far its two draws of each lie
    (:func:`seed_spread`)."""
    trained = load_model(folder / "trained" / "model.pt")
    by_id = {s["id"]: s for s in held_out}
    samples = folder / "samples"

    def volume(name: str) -> np.ndarray:
        return np.asarray(nib.load(samples / name).dataobj, dtype=np.float32)

    mean_image = load_volumes([t["image"] for t in train]).mean(axis=0)
    report = {
        "endpoint": trained.generator.settings.endpoint, "packing": trained.generator.settings.packing,
        "paired": paired_scores([(by_id[row["condition"]], volume(row["file"])) for row in table]),
        "train_mean_image": paired_scores([(by_id[row["condition"]], mean_image) for row in table]),
        "seed_spread": seed_spread([(by_id[row["condition"]], volume(row["file"]), volume(row["redrawn_file"]))
                                    for row in table]),
    }
    if all(row["prior_file"] for row in table):
        report["surface_prior_alone"] = paired_scores([(by_id[row["condition"]], volume(row["prior_file"]))
                                                       for row in table])
    return report


class Evaluation:
    """What the evaluate rule measures a generator's samples with: the reference images, the
    metric settings and features, the training images for the memorisation check."""

    def __init__(self, config: dict, train: list[dict], held_out: list[dict]):
        section = config["evaluate"]
        seed = config["split"]["seed"]
        self.kind = reference_kind(section, len(held_out))
        chosen = held_out if self.kind == "held_out" else sorted(train + held_out, key=lambda s: s["id"])
        self.reference_subjects = seeded_subset(chosen, section["max_reference_images"], seed)
        self.reference = load_volumes([s["image"] for s in self.reference_subjects])
        self.voxel_mm = voxel_sizes(nib.load(self.reference_subjects[0]["image"]))
        self.settings = SetMetricSettings.from_config(section["metrics"])
        self.memorisation_settings = section["memorisation"]
        self.gallery_count = section["gallery"]["n"]
        self.features = {"medicalnet": None, "medicalnet_batch_size": section["medicalnet"]["batch_size"],
                         "device": "cpu"}
        if section["medicalnet"]["weights"]:
            from cortexgen.evaluate.features import load_medicalnet

            self.features["medicalnet"] = load_medicalnet(section["medicalnet"]["weights"],
                                                          depth=section["medicalnet"]["depth"])
        # The reference's RBF features once, for every generator (as the evaluate rule).
        self.reference_features = self.features_of(self.reference)
        self.train = train
        unseen = seeded_subset(held_out, section["max_reference_images"], seed)
        self.baseline_table = self.nearest(BASELINE, [s["id"] for s in unseen],
                                           load_volumes([s["image"] for s in unseen]))

    def features_of(self, volumes: np.ndarray) -> np.ndarray:
        """The RBF MMD's features of a set of volumes (N, D), with the evaluate rule's settings."""
        return set_features((volumes,), self.settings, **self.features)[0]

    def _load_train(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        subject = self.train[index]
        return (np.asarray(nib.load(subject["image"]).dataobj, dtype=np.float32),
                np.asarray(nib.load(subject["mask"]).dataobj) > 0)

    def nearest(self, name: str, labels: list[str], volumes: np.ndarray) -> list[dict]:
        """Memorisation rows: each image's nearest training image by SSIM and r."""
        return memorisation_table({name: (labels, volumes)}, [s["id"] for s in self.train], self._load_train,
                                  **self.memorisation_settings)

    def baselines(self) -> dict:
        """The real reference's two halves against each other, and the held-out real images'
        nearest training images (what not copying looks like)."""
        first, second = baseline_halves(len(self.reference), self.settings.seed)
        halves = (self.reference_features[first], self.reference_features[second])
        return {"real_vs_real": metric_values(set_metrics("real_vs_real", self.reference[first], self.reference[second],
                                                          self.settings, **self.features, features=halves)),
                BASELINE: metric_values(memorisation_metrics(self.baseline_table, self.settings))}

    def generator(self, model: str, table: list[dict], folder: Path) -> dict:
        """The evaluate rule's metrics of one generator's samples (its sample table's files in ``folder``)."""
        paths = [folder / row["file"] for row in table]
        volumes = load_volumes(paths)
        rows = set_metrics(model, self.reference, volumes, self.settings, **self.features,
                           features=(self.reference_features, self.features_of(volumes)))
        nearest = self.nearest(model, [path.name.replace("_T1w.nii.gz", "") for path in paths], volumes)
        rows += [row for row in memorisation_metrics(self.baseline_table + nearest, self.settings)
                 if row.generator == model]
        if registry_entry(model).data == "fields":
            rows += per_item_rows(model, [{"folding_fraction": float(row["folding_fraction"])} for row in table],
                                  self.settings)
        return {"metrics": metric_values(rows),
                "memorisation": [{key: row[key] for key in ("image", "nearest_ssim", "nearest_ssim_train",
                                                            "nearest_corr", "nearest_corr_train")} for row in nearest]}

    def against_baseline(self, model: str, baseline: str, samples: dict[str, list[Path]]) -> dict:
        """The evaluate rule's paired RBF MMD difference of ``model`` and its ``baseline`` (their sample files)."""
        volumes, baseline_volumes = load_volumes(samples[model]), load_volumes(samples[baseline])
        features = (self.reference_features, self.features_of(volumes), self.features_of(baseline_volumes))
        row = mmd_rbf_difference(model, baseline, self.reference, volumes, baseline_volumes, self.settings,
                                 **self.features, features=features)
        return metric_values([row])

    def gallery(self, model: str, table: list[dict], folder: Path, out: Path) -> None:
        """Real reference images (top) and the first samples (bottom), as the evaluate rule draws them."""
        count = self.gallery_count
        real = [(s["id"], volume) for s, volume in zip(self.reference_subjects[:count], self.reference[:count])]
        synthetic = [(row["file"].replace("_T1w.nii.gz", ""), np.asarray(nib.load(folder / row["file"]).dataobj,
                                                                       dtype=np.float32)) for row in table[:count]]
        figure = gallery_figure(real, synthetic, f"{model}: real (top) and synthetic (bottom)", self.voxel_mm)
        figure.savefig(out, dpi=90, format="png")


def run_generator(model: str, config: dict, train: list[dict], held_out: list[dict], minutes: float | None,
                  samples: int | None, template: str | None, folder: Path, threads: int) -> tuple[dict, list[dict]]:
    """Train (or fit) and sample one generator as the workflow does; its timings and its sample table."""
    section = config["diffusion"][model]
    entry = registry_entry(model)
    inputs = training_inputs(model, section, train)
    report = {"grid": section.get("grid"), "network": section.get("network"), "load_average_before": os.getloadavg()}
    if entry.network:
        probe = train_measured(model, section, config, inputs, folder / "probe", PROBE_STEPS, threads)
        probe_step, _ = log_seconds_per_step(folder / "probe" / "train_log.tsv", PROBE_WARMUP_STEPS)
        steps = max(PROBE_STEPS, int(minutes * 60.0 / probe_step))
        report.update(minutes=minutes, probe_seconds_per_step=round(probe_step, 3), probe=probe, steps=steps)
        report["train"] = train_measured(model, section, config, inputs, folder / "trained", steps, threads)
        report["seconds_per_step"] = round(log_seconds_per_step(folder / "trained" / "train_log.tsv")[1], 3)
        final = read_table(folder / "trained" / "train_log.tsv")[-1]
        report["final_train_loss"] = float(final["train_loss"])
    else:
        report["train"] = train_measured(model, section, config, inputs, folder / "trained", None, threads)
        spectrum = read_table(folder / "trained" / "train_log.tsv")
        report.update(modes=len(spectrum), explained_variance=float(spectrum[-1]["cumulative_explained_variance"]))
    report["load_average_after_training"] = os.getloadavg()
    spec = sample_spec(model, section, config, folder / "trained" / "model.pt", folder / "samples", samples, held_out,
                       template)
    job = sample_bridge_job if entry.conditional else sample_unconditional_job
    table, report["sample"] = in_fresh_process(job, spec, threads=threads)
    report["samples"] = len(table)
    # A conditional generator draws each held-out subject twice (the second for its seed spread).
    drawn = len(table) + sum(bool(row.get("redrawn_file")) for row in table)
    report["sample_seconds_per_volume"] = round(report["sample"]["seconds"] / drawn, 2)
    return report, table


def training_mean_samples(model_file: Path, template: str, count: int, folder: Path) -> list[dict]:
    """A centred DDPM's training mean (``center: mean``) written as its sampling job writes a
    sample (an image upsampled to the template's grid; a field's mean velocity integrated and
    warping the template), listed ``count`` times: what the network adds is the difference
    between its samples and this. Returns the sample table."""
    trained = load_model(model_file)
    mean = trained.generator.mean
    reference = nib.load(template)
    folder.mkdir(parents=True, exist_ok=True)
    row = {"file": "mean_T1w.nii.gz"}
    if "field_scale_mm" in trained.extra:
        grid_image = torch.from_numpy(np.asarray(reference.get_fdata(dtype=np.float32)))
        field, image = warped_template(mean * trained.extra["field_scale_mm"], trained.extra["field"], grid_image,
                                       reference.affine)
        row["folding_fraction"] = folding_fraction(field.numpy(), reference.affine)
        image = np.clip(image, 0, 1).astype(np.float32)
    else:
        image = network_to_image(resize_volume(mean, reference.shape[:3]))
    save_nifti(nib.Nifti1Image(image, reference.affine), folder / row["file"])
    return [dict(row) for _ in range(count)]


def full_grid_timing(model: str, config: dict, train: list[dict], steps: int, folder: Path, threads: int) -> dict:
    """``steps`` training steps (a network) or the fit (sdm) of a generator on the images' own
    grid instead of its config ``grid``: its cost there, not a model to evaluate. A job that
    fails (e.g. out of memory) is reported as such."""
    section = {**config["diffusion"][model], "grid": None}
    steps = steps if registry_entry(model).network else None
    report = {"grid": list(nib.load(train[0]["image"]).shape[:3]), "steps": steps}
    try:
        report["train"] = train_measured(model, section, config, training_inputs(model, section, train), folder,
                                         steps, threads)
    except Exception as error:  # a timing that could not be made (out of memory) is a result too
        report["failed"] = f"{type(error).__name__}: {error}"
        return report
    if steps is not None:
        report["seconds_per_step"] = round(log_seconds_per_step(folder / "train_log.tsv")[0], 3)
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--models", default="bridge", help="comma-separated generators of the registry")
    parser.add_argument("--minutes", type=minutes_per_model, default="bridge=60",
                        help="training minutes per network generator, e.g. bridge=60,ddpm=30,deform=30")
    parser.add_argument("--samples", type=int, default=None,
                        help="samples of each unconditional generator (default: its sampling.n)")
    parser.add_argument("--full-grid-steps", type=int, default=0,
                        help="also time this many training steps on the images' grid (0: no)")
    parser.add_argument("--subjects", type=int, default=None, help="only the first N subjects (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    for model in models:
        registry_entry(model)  # an unknown name fails here, before any training
        if registry_entry(model).network and model not in args.minutes:
            parser.error(f"--minutes has no training time for {model}")
    limit_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    subjects = {s["id"]: s for s in find_subjects(args.results)[:args.subjects]}
    split = split_subjects(sorted(subjects), config["split"]["held_out"], config["split"]["held_out_fraction"],
                           config["split"]["seed"])
    train = [subjects[name] for name in split.train]
    held_out = [subjects[name] for name in split.held_out]
    args.out.mkdir(parents=True, exist_ok=True)
    evaluation = Evaluation(config, train, held_out)
    report = {"results": str(args.results), "config": str(args.config), "threads": args.threads,
              "cpu_count": os.cpu_count(), "train": list(split.train), "held_out": list(split.held_out),
              "reference": {"kind": evaluation.kind, "images": [s["id"] for s in evaluation.reference_subjects]},
              **evaluation.baselines(), "models": {}}
    template = None
    if any(not registry_entry(model).conditional for model in models):
        report["template"] = deform_template(config, train, args.out / "deform", args.threads)
        template = report["template"]["path"]
    if any(registry_entry(model).data == "fields" for model in models):
        report["deformation_fields"] = deformation_fields(train, config, template, args.out / "deform", args.threads)
    samples = {}
    for model in models:
        folder = args.out / model
        result, table = run_generator(model, config, train, held_out, args.minutes.get(model), args.samples,
                                      template, folder, args.threads)
        samples[model] = [folder / "samples" / row["file"] for row in table]
        result.update(evaluation.generator(model, table, folder / "samples"))
        if config["diffusion"][model].get("center", "none") == "mean":
            mean_table = training_mean_samples(folder / "trained" / "model.pt", template, len(table),
                                               folder / "mean_alone")
            result["training_mean_alone"] = evaluation.generator(model, mean_table, folder / "mean_alone")
        if registry_entry(model).conditional:
            result.update(bridge_references(folder, train, held_out, table))
        evaluation.gallery(model, table, folder / "samples", args.out / f"gallery-{model}.png")
        report["models"][model] = result
        # Written after every model, so a run stopped later keeps what it finished.
        (args.out / "generators.json").write_text(json.dumps(report, indent=1) + "\n")
        if args.full_grid_steps and config["diffusion"][model].get("grid") is not None:
            result["full_grid_timing_only"] = full_grid_timing(model, config, train, args.full_grid_steps,
                                                               folder / "full_grid", args.threads)
            (args.out / "generators.json").write_text(json.dumps(report, indent=1) + "\n")
    for model in models:
        baseline = registry_entry(model).baseline
        if baseline in samples:
            report["models"][model]["metrics"].update(evaluation.against_baseline(model, baseline, samples))
            (args.out / "generators.json").write_text(json.dumps(report, indent=1) + "\n")
    text = json.dumps(report, indent=1)
    print(text)
    return report


if __name__ == "__main__":
    main()
