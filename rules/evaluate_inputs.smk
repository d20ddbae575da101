# Input functions and targets of the evaluation stage (rules/evaluate.smk); which samples go
# through cycle consistency and which real images are the reference: cortexgen.planning.

# The generators whose samples are conditioned on a cortex (the bridge): paired with the
# held-out subjects' real images, and re-extracted by cycle consistency.
CONDITIONAL_GENERATORS = [model for model, entry in GENERATOR_ENTRIES.items() if entry.conditional]


def reference_kind():
    """config evaluate.reference with 'auto' resolved (see cortexgen.planning.reference_kind)."""
    return planning.reference_kind(config["evaluate"], len(HELD_OUT_SCANS))


def reference_scans():
    """The real scans the synthetic sets are compared with (see cortexgen.planning.reference_scans)."""
    return planning.reference_scans(list(SCANS.values()), HELD_OUT_SCANS, config["evaluate"], config["split"]["seed"])


def cycle_items():
    """The bridge samples whose cortex is re-extracted: {label: condition item} (see
    cortexgen.planning.cycle_items)."""
    return planning.cycle_items(BRIDGE_CONDITIONS, config["evaluate"]["cycle_consistency"], config["split"]["seed"])


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
    if wildcards.source != "real":
        files["image"] = f"{SAMPLES}/{wildcards.source}/cond-{item['label']}_T1w.nii.gz"
    if item["kind"] != "held_out":
        files.update(conditioning_surfaces(item))
        files["pial_sdf"] = condition_path(item, "pialsdf")
        files["white_sdf"] = condition_path(item, "whitesdf")
    return files


def atrophy_pairs():
    """Each atrophied cortex the bridge samples with its unthinned twin (see
    cortexgen.planning.twin_pairs): [{atrophied, twin: sample labels, kind, atrophy: its spec}]."""
    specs = {**SHAPE_SPECS, **HELD_OUT_ATROPHY}
    return [{"atrophied": item["label"], "twin": twin["label"], "kind": item["kind"], "atrophy": specs[item["id"]]}
            for item, twin in planning.twin_pairs(BRIDGE_CONDITIONS)]


def twin_files(twin):
    """A twin condition item's ribbon and white and pial surfaces, keyed ribbon_<label>, white_L_<label>..."""
    files = {f"ribbon_{twin['label']}": condition_path(twin, "ribbon")}
    surfaces = conditioning_surfaces(twin)
    for name in ("white", "pial"):
        files.update({f"{name}_{hemi}_{twin['label']}": surfaces[f"{name}_{hemi}"] for hemi in HEMIS})
    return files


def atrophy_twins(held_out):
    """The twin items of the atrophy pairs that are (``held_out``) or are not held-out scans, once each."""
    twins = {twin["label"]: twin for _, twin in planning.twin_pairs(BRIDGE_CONDITIONS)}
    return [twin for twin in twins.values() if (twin["kind"] == "held_out") == held_out]


def atrophy_subject_files(wildcards):
    """Per-subject inputs of atrophy_effect: held-out twins' own ribbons and surfaces."""
    return {key: path for twin in atrophy_twins(held_out=True) for key, path in twin_files(twin).items()}


def atrophy_subject_scans(wildcards):
    """The held-out scans whose own samples are atrophy twins."""
    return [SCANS[twin["id"]] for twin in atrophy_twins(held_out=True)]


def atrophy_other_files(wildcards):
    """The rest of atrophy_effect's inputs: both samples and the atrophied ribbon of each pair, a
    shape twin's ribbon and surfaces."""
    files = {key: path for twin in atrophy_twins(held_out=False) for key, path in twin_files(twin).items()}
    for item, twin in planning.twin_pairs(BRIDGE_CONDITIONS):
        files[f"ribbon_{item['label']}"] = condition_path(item, "ribbon")
        for label in (item["label"], twin["label"]):
            files[f"image_{label}"] = f"results/samples/bridge/cond-{label}_T1w.nii.gz"
    return files


def evaluation_subject_files(wildcards):
    """Per-subject inputs of evaluate: reference images, the real images and masks of the
    held-out subjects the bridge sampled (paired fidelity), and for the memorisation check the
    training images with their masks and the held-out images (at most max_reference_images)."""
    paired = [SCANS[item["id"]] for item in BRIDGE_CONDITIONS if item["kind"] == "held_out"]
    unseen = planning.seeded_subset(HELD_OUT_SCANS, config["evaluate"]["max_reference_images"],
                                    config["split"]["seed"])
    return {
        "reference": scans_paths(rules.preprocess.output.image, reference_scans()),
        "held_out_images": scans_paths(rules.preprocess.output.image, paired),
        "held_out_masks": scans_paths(rules.preprocess.output.image_mask, paired),
        "train_images": scans_paths(rules.preprocess.output.image, TRAIN_SCANS),
        "train_masks": scans_paths(rules.preprocess.output.image_mask, TRAIN_SCANS),
        "unseen_images": scans_paths(rules.preprocess.output.image, unseen),
    }


def evaluation_inputs(wildcards):
    """The rest of evaluate's inputs: every generator's samples and table, the network
    generators' training logs, the conditional generators' cycle tables (``<model>_cycle``) and
    held-out references (``<model>_references``: priors and second draws), and the real images'
    cycle tables (``cycle_real``)."""
    files = {
        "cycle_real": [str(rules.cycle_consistency.output.table).format(source="real", label=label)
                       for label, item in CYCLE_ITEMS.items() if item["kind"] == "held_out"],
    }
    for model, entry in GENERATOR_ENTRIES.items():
        if entry.conditional and not BRIDGE_CONDITIONS:
            continue
        sample_rule = getattr(rules, f"sample_{model}")
        files[f"{model}_images"] = list(sample_rule.output.images)
        files[f"{model}_table"] = sample_rule.output.table
        if entry.network:
            files[f"{model}_log"] = str(rules.train_generator.output.log).format(model=model)
        if entry.conditional:
            files[f"{model}_cycle"] = [str(rules.cycle_consistency.output.table).format(source=model, label=label)
                                       for label in CYCLE_ITEMS]
            # Each held-out subject's prior and second draw, which its table names.
            files[f"{model}_references"] = [path for key in ("priors", "redrawn")
                                            for path in sample_rule.output.get(key, [])]
    return files


def evaluation_targets():
    """The metrics table, its JSON and the evaluation figures, and the atrophy twins' differences
    (nothing without training subjects)."""
    if not TRAIN_SCANS:
        return []
    targets = [str(path) for path in rules.evaluate.output]
    if ATROPHY_PAIRS:
        targets += [str(path) for path in rules.atrophy_effect.output]
    return targets
