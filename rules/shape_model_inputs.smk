# Input functions and targets of the shape-model stage (rules/shape_model.smk); the new
# cortices themselves are planned by cortexgen.planning.shape_specs.


def shape_specs():
    """Every new cortex the config asks for: {shape id: spec} (see cortexgen.planning.shape_specs)."""
    return planning.shape_specs(config["shape_model"], SPLIT)


def held_out_atrophy():
    """Every atrophy applied to the own cortex of a few held-out scans the bridge samples: {id: spec}
    (see cortexgen.planning.held_out_atrophy)."""
    seed = config["split"]["seed"]
    sampled = planning.bridge_held_out(HELD_OUT_SCANS, config["diffusion"]["bridge"], seed)
    return planning.held_out_atrophy(sampled, SHAPE_SPECS, config["shape_model"]["atrophy_held_out"], seed)


def thinned_scans(wildcards):
    """The held-out scan a held-out atrophy thins."""
    return [SCANS[HELD_OUT_ATROPHY[wildcards.thinned]["scan"]]]


def thinned_files(wildcards):
    """The held-out scan's white and pial surfaces (in HEMIS order) and its preprocessed image,
    the grid of its own SDFs (rule surface_sdf)."""
    (scan,) = thinned_scans(wildcards)
    return {"white": [format_scan(path, scan) for path in rules.surfaces.output.white],
            "pial": [format_scan(path, scan) for path in rules.surfaces.output.pial],
            "grid": format_scan(rules.preprocess.output.image, scan)}


def shape_model_files(wildcards):
    """One hemisphere's midthickness and thickness of every training scan (in TRAIN_SCANS order)."""
    i = HEMIS.index(wildcards.hemi)
    return {"midthickness": scans_paths(rules.surfaces.output.midthickness[i], TRAIN_SCANS),
            "thickness": scans_paths(rules.surfaces.output.thickness[i], TRAIN_SCANS)}


def interpolation_scans(wildcards):
    """The two scans an interpolation runs between (none for other shapes)."""
    return planning.interpolation_scans(SHAPE_SPECS[wildcards.shape], SCANS.values())


def interpolation_endpoints(wildcards):
    """The two subjects' midthickness and thickness files of an interpolation (none otherwise)."""
    files = {}
    for end, scan in zip(("from", "to"), interpolation_scans(wildcards)):
        for i, hemi in enumerate(HEMIS):
            files[f"{end}_{hemi}_mid"] = format_scan(rules.surfaces.output.midthickness[i], scan)
            files[f"{end}_{hemi}_thickness"] = format_scan(rules.surfaces.output.thickness[i], scan)
    return files


def shape_model_targets():
    """Both hemispheres' shape models with their quality, every new cortex, and the shapes' QC.

    Called after rules/shape_model.smk is included, so the paths are the rules' own.
    """
    per_hemi = [rules.fit_shape_model.output.model] + list(rules.shape_model_quality.output)
    return (
        [pattern.format(hemi=hemi) for pattern in per_hemi for hemi in HEMIS]
        + [str(path) for path in rules.qc_shapes.output]
    )
