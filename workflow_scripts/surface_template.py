"""Rule surface_template: fsaverage (from nilearn's wheel) split and drawn as a tissue label, once per run."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

from cortexgen.io import save_nifti  # noqa: E402
from cortexgen.surfaces.mesh import save_shape, save_surface  # noqa: E402
from cortexgen.surfaces.template import build_template  # noqa: E402

with job_log(snakemake.log[0]) as log:
    template = build_template(
        subdivisions=snakemake.params.subdivisions, resolution_mm=snakemake.params.resolution_mm
    )
    for i, hemi in enumerate(snakemake.params.hemis):
        meshes = template.hemispheres[hemi]
        log.info("hemi-%s: %d vertices, %d on the medial wall", hemi, len(meshes.white.vertices), (~meshes.cortex).sum())
        save_surface(meshes.white, snakemake.output.white[i])
        save_surface(meshes.pial, snakemake.output.pial[i])
        save_shape(meshes.cortex.astype("float32"), snakemake.output.cortex[i])
    save_nifti(template.label, snakemake.output.label)
    save_nifti(template.mask, snakemake.output.mask)
