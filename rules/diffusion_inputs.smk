# Input functions and targets of the diffusion stage (rules/diffusion.smk); what each generator
# trains on and what the bridge samples from are planned by cortexgen.planning.

GENERATORS = ["bridge", "ddpm", "deform"]


def condition_patterns():
    """Condition role -> (per-scan pattern, per-shape pattern) of the bridge's condition volumes."""
    return {
        "pialsdf": (rules.surface_sdf.output.pial_sdf, rules.make_shape.output.pial_sdf),
        "whitesdf": (rules.surface_sdf.output.white_sdf, rules.make_shape.output.white_sdf),
        "ribbon": (rules.surface_sdf.output.ribbon, rules.make_shape.output.ribbon),
    }


def generator_inputs(model):
    """Input function: a generator's training (and ``val_``-prefixed validation) volumes
    (see cortexgen.planning.generator_files)."""

    def inputs(wildcards):
        patterns = {"image": rules.preprocess.output.image, "field": rules.deformation_field.output.field}
        patterns.update({role: scan_pattern for role, (scan_pattern, _) in condition_patterns().items()})
        return planning.generator_files(model, TRAIN_SCANS, VALIDATION_SCANS,
                                        config["diffusion"]["bridge"]["conditions"], patterns)

    return inputs


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
