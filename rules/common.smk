# Scans, paths and per-rule resources shared by every stage.

import os

import sys

from cortexgen.bids import discover
from cortexgen.shards import make_shards, subjects_per_shard


# Scans come from the BIDS folder: one per T1w image. What cannot be used is skipped and listed
# in one summary, before any job; the run stops here only if nothing is left.
DISCOVERY = discover(config["bids_dir"], config.get("participants"), config.get("exclude_participants"))
print(DISCOVERY.summary(), file=sys.stderr)
SCANS = {scan.prefix: scan for scan in DISCOVERY.scans}
if not SCANS:
    raise ValueError(f"{config['bids_dir']}: no usable sub-*/[ses-*/]anat/*_T1w.nii[.gz] (config key 'bids_dir'); "
                     "see the summary above for what was skipped and why")

SPACE = config["preprocess"]["template_space"]
RES = "x".join(str(n) for n in config["preprocess"]["shape"])


wildcard_constraints:
    scan=r"sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?(_(task|acq|ce|rec|run|echo|flip|inv|mt|part|chunk)-[A-Za-z0-9]+)*",
    subdir=r"sub-[A-Za-z0-9]+(/ses-[A-Za-z0-9]+)?",


# Derivatives: results/<stage>/<sub>/[<ses>/]anat/<prefix>_<entities>_<suffix>
PREPROC = "results/preproc/{subdir}/anat/{scan}"


# Cohorts of thousands (config 'sharding'): shards of subjects, in scan order. 'auto' (the
# default): one job per subject and step for a small cohort, shards for a large one.
SUBJECTS_PER_SHARD = subjects_per_shard(config["sharding"].get("subjects_per_shard", "auto"), len(SCANS))
SHARDS = make_shards(list(SCANS.values()), SUBJECTS_PER_SHARD)
if SHARDS:
    print(f"sharding: {len(SCANS)} scans in {len(SHARDS)} shards of up to {SUBJECTS_PER_SHARD} "
          f"(config sharding.subjects_per_shard: {config['sharding'].get('subjects_per_shard', 'auto')})",
          file=sys.stderr)
SHARD_MANIFEST = "results/shards/shard-{shard}.tsv"
SHARD_OF = {scan.prefix: shard for shard, scans in SHARDS.items() for scan in scans}


def shard_manifests(scans=None):
    """The manifests of the shards that hold ``scans`` (default: every shard), in shard order."""
    shards = SHARDS if scans is None else sorted({SHARD_OF[scan.prefix] for scan in scans})
    return [SHARD_MANIFEST.format(shard=shard) for shard in shards]


def subject_inputs(files_of, scans_of=None):
    """Input function of a cohort-level rule for the per-subject files it reads.

    ``files_of(wildcards)`` gives them as {name: path or [paths]}. One job per subject (no
    sharding): those files are the job's inputs. Sharded: the manifests of the shards that
    make them are (of the scans ``scans_of(wildcards)`` names; default every shard), and the
    paths reach the script through ``params.subject_files`` (see :func:`subject_params`), so
    the DAG holds a few hundred shard files instead of every subject's files.
    """

    def inputs(wildcards):
        if not SUBJECTS_PER_SHARD:
            return files_of(wildcards)
        return {"shards": shard_manifests(None if scans_of is None else scans_of(wildcards))}

    return inputs


# The per-subject steps a shard job runs, in the order they run (their logs are where a
# failure is explained); a training subject also gets its deformation field.
SUBJECT_RULES = ["denoise", "n4", "mni_affine", "skullstrip", "normalize", "qc_preproc", "segment", "surfaces",
                 "surface_sdf", "qc_surfaces"]
TRAIN_SUBJECT_RULES = ["deformation_field"]


def shard_patterns():
    """Path patterns (with {subdir} and {scan}) a shard job fills in for each of its subjects, so
    that its params stay a few dozen strings however many subjects it holds (cortexgen.shards):
    targets: the files whose jobs pull in every step (the QC figures: all of preprocessing, and
    segmentation with surfaces; the SDFs); outputs: every file of the steps; logs: their logs.
    ``train_``: the same for training subjects only. Call after the rules are defined."""
    patterns = {
        "targets": [rules.qc_preproc.output.png, rules.qc_surfaces.output.png, rules.surface_sdf.output.pial_sdf],
        "train_targets": [rules.deformation_field.output.field],
        "outputs": [path for name in SUBJECT_RULES for path in getattr(rules, name).output],
        "train_outputs": [path for name in TRAIN_SUBJECT_RULES for path in getattr(rules, name).output],
        "logs": [getattr(rules, name).log[0] for name in SUBJECT_RULES + TRAIN_SUBJECT_RULES],
    }
    return {key: [str(path) for path in paths] for key, paths in patterns.items()}


def shard_subjects(wildcards):
    """The shard's scans: [{scan, subdir, train}]."""
    return [{"scan": scan.prefix, "subdir": scan.subdir, "train": scan.prefix in TRAIN_PREFIXES}
            for scan in SHARDS[wildcards.shard]]


def subject_params(files_of):
    """Param function paired with :func:`subject_inputs`: the per-subject paths when sharded, else {}.

    Scripts read both through ``cortexgen.runtime.job_inputs``.
    """
    return lambda wildcards: files_of(wildcards) if SUBJECTS_PER_SHARD else {}


def rule_resources(rule_name):
    """threads, mem_mb and runtime (min) of a rule, from config 'resources'."""
    return config["resources"][rule_name]


def retry_mem_mb(rule_name):
    """mem_mb of the jobs profiles/slurm retries (training, sampling, shards). It is
    config 'resources' for the first attempt, twice that for the second, and so on, so a job
    killed for memory gets more when it is resubmitted."""
    base = rule_resources(rule_name)["mem_mb"]
    return lambda wildcards, attempt: base * attempt


def raw_t1w_path(wildcards):
    """The scan's T1w file as found in the BIDS folder (it may be missing)."""
    return str(SCANS[wildcards.scan].path)


def raw_t1w_input(wildcards):
    """The T1w as a job input if it exists.

    A missing file (e.g. a DataLad/git-annex link that was never fetched) is not declared
    as input: Snakemake would then refuse to build the DAG for the whole cohort. Instead
    that subject's first job fails with a message naming the file, and --keep-going lets
    the other subjects finish.
    """
    path = raw_t1w_path(wildcards)
    return [path] if os.path.exists(path) else []


def format_scan(pattern, scan):
    """``pattern`` with its {subdir} and {scan} wildcards filled in for ``scan``."""
    return str(pattern).format(subdir=scan.subdir, scan=scan.prefix)


def scan_file(pattern):
    """Input function: ``pattern`` (e.g. another rule's output, or a list of them) for the job's {scan}.

    For rules whose output has no {subdir}: that folder is derived from the scan.
    """

    def path(wildcards):
        scan = SCANS[wildcards.scan]
        if isinstance(pattern, (list, tuple)):
            return [format_scan(item, scan) for item in pattern]
        return format_scan(pattern, scan)

    return path


def scans_paths(pattern, scans):
    """``pattern`` for each of ``scans``."""
    return [format_scan(pattern, scan) for scan in scans]


def scan_paths(pattern):
    """``pattern`` for every scan."""
    return scans_paths(pattern, SCANS.values())


def preprocess_targets():
    """The model-ready images, their masks and the QC montages of every scan.

    Called after rules/preprocess.smk is included, so the paths are the rules' own. Sharded:
    the shard manifests (the subjects' files are made inside the shard jobs).
    """
    if SUBJECTS_PER_SHARD:
        return shard_manifests()
    return (
        scan_paths(rules.normalize.output.image)
        + scan_paths(rules.normalize.output.mask)
        + scan_paths(rules.qc_preproc.output.png)
    )


def surface_targets():
    """Every scan's surfaces, condition volumes (SDFs, ribbon) and surface QC.

    Called after rules/surfaces.smk is included, so the paths are the rules' own. Sharded:
    the shard manifests.
    """
    if SUBJECTS_PER_SHARD:
        return shard_manifests()
    outputs = rules.surfaces.output
    return (
        [path for pattern in outputs.white + outputs.pial + outputs.midthickness + outputs.thickness
         + outputs.native_thickness for path in scan_paths(pattern)]
        + scan_paths(rules.surface_sdf.output.pial_sdf)
        + scan_paths(rules.surface_sdf.output.white_sdf)
        + scan_paths(rules.surface_sdf.output.ribbon)
        + scan_paths(rules.qc_surfaces.output.png)
        + scan_paths(rules.qc_surfaces.output.tsv)
    )


# Subjects held out of every model (shape model, generators) for evaluation; see config 'split'.
from cortexgen.split import split_subjects, subject_id

SPLIT = split_subjects(
    [f"sub-{scan.subject}" for scan in SCANS.values()],
    config["split"]["held_out"],
    config["split"]["held_out_fraction"],
    config["split"]["seed"],
    config["split"]["validation_fraction"],
)


def seeded_subset(items, limit):
    """At most ``limit`` of ``items`` (None: all of them): a subset drawn with the split's seed, kept in order."""
    items = list(items)
    if limit is None or len(items) <= limit:
        return items
    import numpy as np

    keep = np.sort(np.random.default_rng(config["split"]["seed"]).choice(len(items), limit, replace=False))
    return [items[index] for index in keep]


def scans_of(subjects):
    """The scans of these subjects ("sub-<label>"), in scan order."""
    subjects = set(subjects)  # a set: cohorts of tens of thousands
    return [scan for scan in SCANS.values() if f"sub-{scan.subject}" in subjects]


TRAIN_SCANS = scans_of(SPLIT.train)
TRAIN_PREFIXES = {scan.prefix for scan in TRAIN_SCANS}


def train_scan_paths(pattern):
    """``pattern`` for every scan of a training subject."""
    return scans_paths(pattern, TRAIN_SCANS)


def shape_model_targets():
    """Both hemispheres' shape models with their quality, every new cortex, and the shapes' QC.

    Called after rules/shape_model.smk is included, so the paths are the rules' own.
    """
    per_hemi = [rules.fit_shape_model.output.model] + list(rules.shape_model_quality.output)
    return (
        [pattern.format(hemi=hemi) for pattern in per_hemi for hemi in HEMIS]
        + [str(path) for path in rules.qc_shapes.output]
    )


# Shape model (rules/shape_model.smk): the new cortices the config asks for, and input functions.


def shape_specs():
    """Every new cortex the config asks for: {shape id: spec} (see cortexgen/shape/synthesis.py).

    Ids are file-name labels: sample0001, interp01to02w050 (subject labels, weight in %),
    atrophy01.
    """
    settings = config["shape_model"]
    specs = {}
    for index in range(1, settings["samples"]["n"] + 1):
        specs[f"sample{index:04d}"] = {"kind": "sample", "index": index, "seed": settings["samples"]["seed"],
                                       "truncation": settings["samples"]["truncation"]}
    interpolation = settings["interpolation"]
    # By default between the first two training subjects (none if there are fewer).
    pairs = interpolation["pairs"] or ([list(SPLIT.train[:2])] if len(SPLIT.train) >= 2 else [])
    weights = [(k + 1) / (interpolation["steps"] + 1) for k in range(interpolation["steps"])]
    for pair in pairs:
        ends = [subject_id(name) for name in pair]
        unknown = [name for name in ends if name not in set(SPLIT.train + SPLIT.held_out)]
        if unknown:
            raise ValueError(f"shape_model.interpolation.pairs: {unknown} not in the dataset")
        for weight in weights:
            label = f"interp{ends[0][4:]}to{ends[1][4:]}w{round(100 * weight):03d}"
            specs[label] = {"kind": "interpolation", "from": ends[0], "to": ends[1], "weight": weight,
                            "method": interpolation["method"]}
    for index, atrophy in enumerate(settings["atrophy"], start=1):
        specs[f"atrophy{index:02d}"] = {"kind": "atrophy", **atrophy}
    return specs


def shape_model_files(wildcards):
    """One hemisphere's midthickness and thickness of every training scan (in TRAIN_SCANS order)."""
    i = HEMIS.index(wildcards.hemi)
    return {"midthickness": train_scan_paths(rules.surfaces.output.midthickness[i]),
            "thickness": train_scan_paths(rules.surfaces.output.thickness[i])}


def interpolation_scans(wildcards):
    """The two scans an interpolation runs between (none for other shapes)."""
    spec = SHAPE_SPECS[wildcards.shape]
    if spec["kind"] != "interpolation":
        return []
    scans = {f"sub-{scan.subject}": scan for scan in SCANS.values()}
    return [scans[spec["from"]], scans[spec["to"]]]


def interpolation_endpoints(wildcards):
    """The two subjects' midthickness and thickness files of an interpolation (none otherwise)."""
    files = {}
    for end, scan in zip(("from", "to"), interpolation_scans(wildcards)):
        for i, hemi in enumerate(HEMIS):
            files[f"{end}_{hemi}_mid"] = format_scan(rules.surfaces.output.midthickness[i], scan)
            files[f"{end}_{hemi}_thickness"] = format_scan(rules.surfaces.output.thickness[i], scan)
    return files


# Diffusion generators (rules/diffusion.smk): their training volumes and what they sample.

VALIDATION_SCANS = scans_of(SPLIT.validation)
HELD_OUT_SCANS = scans_of(SPLIT.held_out)
GENERATORS = ["bridge", "ddpm", "deform"]


def condition_patterns():
    """Condition role -> (per-scan pattern, per-shape pattern) of the bridge's condition volumes."""
    return {
        "pialsdf": (rules.surface_sdf.output.pial_sdf, rules.make_shape.output.pial_sdf),
        "whitesdf": (rules.surface_sdf.output.white_sdf, rules.make_shape.output.white_sdf),
        "ribbon": (rules.surface_sdf.output.ribbon, rules.make_shape.output.ribbon),
    }


def generator_inputs(model):
    """Input function: a generator's training (and ``val_``-prefixed validation) volumes.

    bridge: images and the configured condition volumes; ddpm: images; deform: fields.
    """

    def inputs(wildcards):
        files = {}
        for prefix, scans in (("", TRAIN_SCANS), ("val_", VALIDATION_SCANS)):
            if not scans:
                continue
            if model == "deform":
                files[f"{prefix}fields"] = scans_paths(rules.deformation_field.output.field, scans)
                continue
            files[f"{prefix}images"] = scans_paths(rules.normalize.output.image, scans)
            if model == "bridge":
                patterns = condition_patterns()
                for role in config["diffusion"]["bridge"]["conditions"]:
                    files[f"{prefix}{role}"] = scans_paths(patterns[role][0], scans)
        return files

    return inputs


def bridge_conditions():
    """What the bridge samples from: each held-out scan's own SDFs (paired with its real image;
    at most diffusion.bridge.sampling.max_held_out of them, a seeded subset), then every new
    cortex of the shape model. [{id, label, kind, real, <role>: path}]."""
    roles = config["diffusion"]["bridge"]["conditions"]
    items = []
    for scan in seeded_subset(HELD_OUT_SCANS, config["diffusion"]["bridge"]["sampling"]["max_held_out"]):
        items.append({"id": scan.prefix, "label": scan.prefix.replace("-", "").replace("_", ""), "kind": "held_out",
                      "real": format_scan(rules.normalize.output.image, scan)})
    for shape, spec in SHAPE_SPECS.items():
        items.append({"id": shape, "label": shape, "kind": spec["kind"], "real": ""})
    for item in items:
        item.update({role: condition_path(item, role) for role in roles})
    return items


def bridge_condition_files(wildcards):
    """Input function: every condition volume the bridge samples from, by role."""
    return {role: [item[role] for item in BRIDGE_CONDITIONS] for role in config["diffusion"]["bridge"]["conditions"]}


def sample_names(model, suffix):
    """results/samples/<model>/sample-0001_<suffix> ... for the configured number of samples."""
    count = config["diffusion"][model]["sampling"]["n"]
    return [f"results/samples/{model}/sample-{index:04d}_{suffix}" for index in range(1, count + 1)]


def diffusion_targets():
    """The trained generators (model, log, loss curve) and their samples.

    A dataset with no training subject has nothing to train on; the bridge samples only if
    there is a held-out subject or a new cortex to condition on.
    """
    if not TRAIN_SCANS:
        return []
    targets = []
    for rule_name in ("train_bridge", "train_ddpm", "train_deform"):
        targets += [str(path) for path in getattr(rules, rule_name).output]
    if BRIDGE_CONDITIONS:
        targets += [str(path) for path in rules.sample_bridge.output]
    targets += [str(path) for path in rules.sample_ddpm.output]
    targets += [str(path) for path in rules.sample_deform.output]
    return targets


# Evaluation (rules/evaluate.smk).


def reference_scans():
    """The real scans the synthetic sets are compared with (config evaluate.reference), at most
    evaluate.max_reference_images of them: a subset drawn with the split's seed, in scan order."""
    scans = HELD_OUT_SCANS if config["evaluate"]["reference"] == "held_out" else SCANS.values()
    return seeded_subset(scans, config["evaluate"]["max_reference_images"])


def cycle_items():
    """The bridge samples whose cortex is re-extracted: {label: condition item} of the kinds
    in config evaluate.cycle_consistency.kinds (see bridge_conditions), at most max_items of
    them: a subset drawn with the split's seed, in condition order."""
    settings = config["evaluate"]["cycle_consistency"]
    items = [item for item in BRIDGE_CONDITIONS if item["kind"] in set(settings["kinds"])]
    return {item["label"]: item for item in seeded_subset(items, settings["max_items"])}


def conditioning_surfaces(item):
    """The surfaces a bridge condition was made from: {white_L, pial_L, thickness_L, ...: path}."""
    if item["kind"] == "held_out":
        scan = SCANS[item["id"]]
        outputs = {name: [format_scan(path, scan) for path in getattr(rules.surfaces.output, name)]
                   for name in ("white", "pial", "thickness")}
    else:
        outputs = {name: [str(path).format(shape=item["id"]) for path in getattr(rules.make_shape.output, name)]
                   for name in ("white", "pial", "thickness")}
    return {f"{name}_{hemi}": paths[i] for name, paths in outputs.items() for i, hemi in enumerate(HEMIS)}


def cycle_subject_files(wildcards):
    """Per-subject inputs of cycle_consistency: a held-out subject's conditioning surfaces and
    SDFs (and, source 'real', its own image); none for a new cortex of the shape model."""
    item = CYCLE_ITEMS[wildcards.label]
    if item["kind"] != "held_out":
        if wildcards.source == "real":
            raise ValueError(f"cycle_consistency: {item['label']} has no real image (a {item['kind']} cortex)")
        return {}
    files = conditioning_surfaces(item)
    files["pial_sdf"] = condition_path(item, "pialsdf")
    files["white_sdf"] = condition_path(item, "whitesdf")
    if wildcards.source == "real":
        files["image"] = item["real"]
    return files


def cycle_scans(wildcards):
    """The held-out scan a cycle item was conditioned on (none for a new cortex)."""
    item = CYCLE_ITEMS[wildcards.label]
    return [SCANS[item["id"]]] if item["kind"] == "held_out" else []


def cycle_other_files(wildcards):
    """The rest of cycle_consistency's inputs: the bridge sample, and a new cortex's surfaces and SDFs."""
    item = CYCLE_ITEMS[wildcards.label]
    files = {}
    if wildcards.source == "bridge":
        files["image"] = f"results/samples/bridge/cond-{item['label']}_T1w.nii.gz"
    if item["kind"] != "held_out":
        files.update(conditioning_surfaces(item))
        files["pial_sdf"] = condition_path(item, "pialsdf")
        files["white_sdf"] = condition_path(item, "whitesdf")
    return files


def condition_path(item, role):
    """One condition volume of a bridge condition item, whether or not the bridge uses that role."""
    if item["kind"] == "held_out":
        return format_scan(condition_patterns()[role][0], SCANS[item["id"]])
    return str(condition_patterns()[role][1]).format(shape=item["id"])


def evaluation_subject_files(wildcards):
    """Per-subject inputs of evaluate: reference images, and the real images and masks of the
    held-out subjects the bridge sampled (paired fidelity)."""
    paired = [SCANS[item["id"]] for item in BRIDGE_CONDITIONS if item["kind"] == "held_out"]
    return {
        "reference": scans_paths(rules.normalize.output.image, reference_scans()),
        "held_out_images": scans_paths(rules.normalize.output.image, paired),
        "held_out_masks": scans_paths(rules.normalize.output.mask, paired),
    }


def evaluation_inputs(wildcards):
    """The rest of evaluate's inputs: every generator's samples and tables, cycle tables, training logs."""
    files = {
        "cycle": [str(rules.cycle_consistency.output.table).format(source="bridge", label=label)
                  for label in CYCLE_ITEMS],
        "cycle_real": [str(rules.cycle_consistency.output.table).format(source="real", label=label)
                       for label, item in CYCLE_ITEMS.items() if item["kind"] == "held_out"],
    }
    for model in GENERATORS:
        if model == "bridge" and not BRIDGE_CONDITIONS:
            continue
        sample_rule = getattr(rules, f"sample_{model}")
        files[f"{model}_images"] = list(sample_rule.output.images)
        files[f"{model}_table"] = sample_rule.output.table
        files[f"{model}_log"] = getattr(rules, f"train_{model}").output.log
    return files


def evaluation_targets():
    """The metrics table, its JSON and the evaluation figures (nothing without training subjects)."""
    if not TRAIN_SCANS:
        return []
    return [str(path) for path in rules.evaluate.output]
