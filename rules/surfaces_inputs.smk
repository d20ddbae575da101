# Targets of the surface stage (rules/surfaces.smk).


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
