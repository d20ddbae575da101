# Input functions and targets of the diffusion stage (rules/diffusion.smk). What each generator
# is (what it trains on, whether it is conditioned, what its sampling writes) is its entry in
# cortexgen.diffusion.registry; what it trains on and what the bridge samples from are planned
# by cortexgen.planning.

from cortexgen.diffusion.registry import GENERATORS as GENERATOR_ENTRIES

GENERATORS = list(GENERATOR_ENTRIES)
#: The training subjects the deform model's study template averages (none: the space's template).
#: Sharded runs warp the space's template: each shard computes its subjects' fields, so the
#: template must exist before any shard starts, and one failed subject among those averaged
#: would then stop every shard.
DEFORM_TEMPLATE_SCANS = [] if SUBJECTS_PER_SHARD else planning.template_scans(
    TRAIN_SCANS, config["diffusion"]["deform"]["template"], config["split"]["seed"])
DEFORM_TEMPLATE_DESC = "study" if DEFORM_TEMPLATE_SCANS else "brain"


def deform_template_inputs(wildcards):
    """Input function of deform_template: the images its study template averages, if any."""
    return {"images": planning.scans_paths(rules.preprocess.output.image, DEFORM_TEMPLATE_SCANS)}


def condition_patterns():
    """Condition role -> (per-scan pattern, per-shape pattern) of the bridge's condition volumes."""
    return {
        "pialsdf": (rules.surface_sdf.output.pial_sdf, rules.make_shape.output.pial_sdf),
        "whitesdf": (rules.surface_sdf.output.white_sdf, rules.make_shape.output.white_sdf),
        "ribbon": (rules.surface_sdf.output.ribbon, rules.make_shape.output.ribbon),
    }


def generator_inputs(wildcards):
    """Input function of train_generator: its generator's training (and ``val_``-prefixed validation)
    volumes (see cortexgen.planning.generator_files)."""
    patterns = {"images": rules.preprocess.output.image, "fields": rules.deformation_field.output.field}
    patterns.update({role: scan_pattern for role, (scan_pattern, _) in condition_patterns().items()})
    return planning.generator_files(wildcards.model, TRAIN_SCANS, VALIDATION_SCANS,
                                    config["diffusion"][wildcards.model].get("conditions", []), patterns)


def generator_settings(wildcards):
    """Param function of train_generator: its generator's config section diffusion.<model>."""
    return config["diffusion"][wildcards.model]


def bridge_conditions():
    """What the bridge samples from: [{id, label, kind, real, noise, twin, <role>: path}] (see
    cortexgen.planning.bridge_conditions); held-out atrophies' volumes follow the shapes' patterns."""
    specs = {**SHAPE_SPECS, **HELD_OUT_ATROPHY}
    return planning.bridge_conditions(HELD_OUT_SCANS, specs, config["diffusion"]["bridge"],
                                      config["split"]["seed"], rules.preprocess.output.image, condition_patterns())


def condition_path(item, role):
    """One condition volume of a bridge condition item, whether or not the bridge uses that role."""
    return planning.condition_path(item, role, condition_patterns(), SCANS)


def bridge_condition_files(wildcards):
    """Input function: every condition volume the bridge samples from, by role."""
    return {role: [item[role] for item in BRIDGE_CONDITIONS] for role in config["diffusion"]["bridge"]["conditions"]}


def sample_names(model, suffix):
    """results/samples/<model>/sample-0001_<suffix> ... for the configured number of samples."""
    return planning.sample_names(model, suffix, config["diffusion"][model]["sampling"]["n"])


def sample_inputs(model):
    """Input function of sample_<model> besides its model: a conditional generator's condition
    volumes (as subject_inputs gives them), else the template image whose grid its samples are
    written on."""
    if GENERATOR_ENTRIES[model].conditional:
        return subject_inputs(bridge_condition_files)
    return lambda wildcards: {"grid": rules.deform_template.output.image}


def sample_outputs(model):
    """What sample_<model> writes: ``images`` (a conditional generator's: one per condition,
    cond-<label>_T1w.nii.gz; else sample-0001_T1w.nii.gz ...), for a field generator the
    ``fields`` that warped the template into them, and the ``table`` of samples.

    For each held-out subject a conditional generator also writes what its network adds is
    measured against: ``priors``, the image it starts from (cond-<label>_desc-prior_T1w.nii.gz,
    with ``endpoint: prior``), and ``redrawn``, a second draw with other noise
    (cond-<label>_desc-redrawn_T1w.nii.gz, with ``sampling.redraw_held_out``)."""
    entry = GENERATOR_ENTRIES[model]
    if entry.conditional:
        section = config["diffusion"][model]
        outputs = {"images": [f"{SAMPLES}/{model}/cond-{item['label']}_T1w.nii.gz" for item in BRIDGE_CONDITIONS]}
        held_out = [item["label"] for item in BRIDGE_CONDITIONS if item["real"]]
        if section["endpoint"] == "prior" and held_out:
            outputs["priors"] = [f"{SAMPLES}/{model}/cond-{label}_desc-prior_T1w.nii.gz" for label in held_out]
        if section["sampling"]["redraw_held_out"] and held_out:
            outputs["redrawn"] = [f"{SAMPLES}/{model}/cond-{label}_desc-redrawn_T1w.nii.gz" for label in held_out]
    else:
        outputs = {"images": sample_names(model, "T1w.nii.gz")}
    if "fields" in entry.sample_outputs:
        outputs["fields"] = sample_names(model, f"from-{SPACE}_desc-displacement_xfm.nii.gz")
    outputs["table"] = f"{SAMPLES}/{model}/samples.tsv"
    return outputs


def sample_params(model):
    """sample_<model>'s own params: a conditional generator's conditions and SDF clip distance."""
    if GENERATOR_ENTRIES[model].conditional:
        return {"sdf_clip_mm": config["surfaces"]["sdf_clip_mm"], "conditions": BRIDGE_CONDITIONS}
    return {}


def diffusion_targets():
    """The trained generators (model, log, loss curve) and their samples.

    A dataset with no training subject has nothing to train on; a conditional generator (the
    bridge) samples only if there is a held-out subject or a new cortex to condition on.
    """
    if not TRAIN_SCANS:
        return []
    targets = []
    for model, entry in GENERATOR_ENTRIES.items():
        targets += [str(path).format(model=model) for path in rules.train_generator.output]
        if BRIDGE_CONDITIONS or not entry.conditional:
            targets += [str(path) for path in getattr(rules, f"sample_{model}").output]
    return targets
