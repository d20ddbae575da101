"""Rule evaluate: set metrics per generator and for the real-vs-real baseline, each image's nearest
training image (memorisation), paired fidelity and cycle consistency of the conditional generators
(the bridge) on held-out subjects beside their prior alone and the spread of two draws, fold
statistics of the field generators, figures."""

from cortexgen.runtime import job_inputs, job_log, limit_threads

limit_threads(snakemake.threads)

from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.diffusion.registry import generator as registry_entry  # noqa: E402
from cortexgen.evaluate.figures import gallery_figure, metrics_figure, training_figure  # noqa: E402
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
from cortexgen.evaluate.summary import (  # noqa: E402
    baseline_halves,
    failed_jobs,
    per_item_rows,
    read_train_log,
    write_metrics,
)
from cortexgen.io import atomic_output, read_table, voxel_sizes, write_table  # noqa: E402
from cortexgen.shards import complete_indices, select  # noqa: E402


def load_volumes(paths):
    return np.stack([np.asarray(nib.load(path).dataobj, dtype=np.float32) for path in paths]) if paths else None


def image_label(path):
    """A synthetic image's name (sample-0001, cond-sub03) or a real one's scan (sub-01_ses-1)."""
    return Path(path).name.replace("_T1w.nii.gz", "").split("_space-")[0]


def save(figure, path):
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png")


with job_log(snakemake.log[0]) as log:
    inputs = job_inputs(snakemake)
    settings = SetMetricSettings.from_config(snakemake.params.metrics)
    device = snakemake.params.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    medicalnet = None
    weights = snakemake.params.medicalnet["weights"]
    if weights:
        from cortexgen.evaluate.features import load_medicalnet

        medicalnet = load_medicalnet(weights, depth=snakemake.params.medicalnet["depth"]).to(device)
        log.info("MedicalNet ResNet-%d features from %s", snakemake.params.medicalnet["depth"], weights)
    else:
        log.info("no MedicalNet weights configured (evaluate.medicalnet.weights): FID is not computed")

    feature_options = {"medicalnet": medicalnet, "medicalnet_batch_size": snakemake.params.medicalnet["batch_size"],
                       "device": device}
    # Sharded runs: real images their shard did not make are left out.
    reference_paths = select(inputs.reference, complete_indices({"reference": inputs.reference}, log))
    reference = load_volumes(reference_paths)
    voxel_mm = voxel_sizes(nib.load(reference_paths[0])) if reference_paths else (1.0, 1.0, 1.0)
    # Memorisation: every image against every training image (streamed; a sharded run leaves out
    # the subjects its shards did not finish).
    train = complete_indices({"image": inputs.train_images, "mask": inputs.train_masks}, log)
    train_images, train_masks = select(inputs.train_images, train), select(inputs.train_masks, train)

    def load_train(index):
        return (np.asarray(nib.load(train_images[index]).dataobj, dtype=np.float32),
                np.asarray(nib.load(train_masks[index]).dataobj) > 0)

    def nearest(name, paths, volumes):
        if not train_images:
            log.warning("no training images: the memorisation check is not computed")
            return []
        log.info("%s: nearest training image of %d images among %d", name, len(paths), len(train_images))
        return memorisation_table({name: ([image_label(path) for path in paths], volumes)},
                                  [image_label(path) for path in train_images], load_train,
                                  **snakemake.params.memorisation)

    unseen = select(inputs.unseen_images, complete_indices({"image": inputs.unseen_images}, log))
    memorisation = nearest(BASELINE, unseen, load_volumes(unseen)) if unseen else []
    rows: list[MetricResult] = []
    generated = {}
    # Generators compared with the baseline each must beat (deform with the PCA): their samples are kept.
    baselines = {model: registry_entry(model).baseline for model in snakemake.params.generators
                 if registry_entry(model).baseline}
    compared = set(baselines) | set(baselines.values())

    def features_of(volumes):
        return set_features((volumes,), settings, **feature_options)[0]

    # Each set's RBF features once (MedicalNet's cost minutes on a CPU): the real set's serve
    # every generator and the real halves, a compared generator's also its baseline's difference.
    reference_features = features_of(reference)
    kept = {}
    for model in snakemake.params.generators:
        paths = list(getattr(inputs, f"{model}_images", []))
        if not paths:
            log.info("%s: no samples to evaluate", model)
            continue
        generated[model] = paths
        log.info("%s: %d samples against %d real images", model, len(paths), len(reference_paths))
        volumes = load_volumes(paths)
        features = features_of(volumes)
        rows += set_metrics(model, reference, volumes, settings, **feature_options,
                            features=(reference_features, features))
        memorisation += nearest(model, paths, volumes)
        if model in compared:
            kept[model] = volumes, features
    for model, baseline in baselines.items():
        if model in kept and baseline in kept:
            (volumes, features), (baseline_volumes, baseline_features) = kept[model], kept[baseline]
            rows.append(mmd_rbf_difference(model, baseline, reference, volumes, baseline_volumes, settings,
                                           **feature_options,
                                           features=(reference_features, features, baseline_features)))
    rows += memorisation_metrics(memorisation, settings)
    write_table(memorisation, snakemake.output.memorisation)

    # The baseline: how far two halves of the real set are from each other.
    first, second = baseline_halves(len(reference_paths), settings.seed)
    rows += set_metrics("real_vs_real", reference[first], reference[second], settings, **feature_options,
                        features=(reference_features[first], reference_features[second]))

    def cycle_rows(generator, paths):
        cycles = []
        for path in paths:
            for row in read_table(path):
                # The summary is over the hemisphere means (per hemisphere stays in the cycle tables).
                cycles.append({key: float(value) if value else float("nan") for key, value in row.items()
                               if key not in ("condition", "status") and not key.endswith(("_L", "_R"))})
        rows = []
        if cycles and not any(cycles):
            rows.append(MetricResult(generator, "cycle_consistency", float("nan"), float("nan"), float("nan"),
                                     "0", f"not computed: the surface stage failed on all {len(cycles)} images"))
        return rows + per_item_rows(generator, cycles, settings, prefix="cycle_")

    conditional = [model for model in generated if registry_entry(model).conditional]
    for model in conditional:
        # Paired fidelity: each held-out subject's sample against that subject's real image; beside
        # it what the network adds: the image the bridge starts from against the same real image
        # (<model>_prior), and how far a second draw with other noise lies from the sample (spread_).
        masks = dict(zip(inputs.held_out_images, inputs.held_out_masks))
        table = getattr(inputs, f"{model}_table")

        def volume(name):
            return np.asarray(nib.load(Path(table).parent / name).dataobj, dtype=np.float32)

        pairs, prior_pairs, spreads = [], [], []
        for row in read_table(table):
            if row["real_image"]:
                real = np.asarray(nib.load(row["real_image"]).dataobj, dtype=np.float32)
                fake = volume(row["file"])
                mask = np.asarray(nib.load(masks[row["real_image"]]).dataobj) > 0
                pairs.append(paired_fidelity(real, fake, mask))
                log.info("paired %s: %s", row["condition"], pairs[-1])
                if row.get("prior_file"):
                    prior_pairs.append(paired_fidelity(real, volume(row["prior_file"]), mask))
                    log.info("paired %s, its prior alone: %s", row["condition"], prior_pairs[-1])
                if row.get("redrawn_file"):
                    spreads.append(draw_spread(fake, volume(row["redrawn_file"]), mask))
                    log.info("%s drawn twice: %s", row["condition"], spreads[-1])
        rows += per_item_rows(model, pairs, settings, prefix="paired_")
        rows += per_item_rows(f"{model}_prior", prior_pairs, settings, prefix="paired_")
        rows += per_item_rows(model, spreads, settings, prefix="spread_")
        rows += cycle_rows(model, getattr(inputs, f"{model}_cycle"))
    if conditional:
        rows += cycle_rows("real_held_out", inputs.cycle_real)
    for model in generated:
        if registry_entry(model).data == "fields":
            table = read_table(getattr(inputs, f"{model}_table"))
            rows += per_item_rows(model, [{"folding_fraction": float(row["folding_fraction"])} for row in table],
                                  settings)

    failures = failed_jobs(snakemake.params.logs)
    for failure in failures:
        log.warning("failed job: %s: %s", failure["log"], failure["reason"])
    write_metrics(rows, snakemake.output.tsv, snakemake.output.json, failures,
                  extra={"reference": snakemake.params.reference, "reference_images": reference_paths})

    save(metrics_figure([row.as_row() for row in rows]), snakemake.output.metrics_png)
    save(training_figure({model: read_train_log(getattr(inputs, f"{model}_log")) for model in generated
                          if registry_entry(model).network}),
         snakemake.output.training_png)
    count = snakemake.params.gallery["n"]
    real_items = [(Path(path).name.split("_")[0], volume) for path, volume in zip(reference_paths[:count], reference[:count])]
    for model in snakemake.params.generators:
        paths = generated.get(model, [])[:count]
        items = [(Path(path).name.replace("_T1w.nii.gz", ""), np.asarray(nib.load(path).dataobj, dtype=np.float32))
                 for path in paths]
        save(gallery_figure(real_items, items, f"{model}: real (top) and synthetic (bottom)", voxel_mm),
             getattr(snakemake.output, f"gallery_{model}"))
