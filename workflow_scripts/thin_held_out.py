"""Rule thin_held_out: an atrophy applied to a held-out subject's own surfaces, as surfaces and
condition volumes made the way rule surface_sdf makes the subject's own (so those are its twin)."""

from cortexgen.runtime import job_inputs, job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import save_nifti  # noqa: E402
from cortexgen.shape.synthesis import thin_hemisphere  # noqa: E402
from cortexgen.surfaces.extract import HemisphereSurfaces  # noqa: E402
from cortexgen.surfaces.mesh import load_shape, load_surface, save_shape, save_surface  # noqa: E402
from cortexgen.surfaces.sdf import condition_volumes  # noqa: E402

with job_log(snakemake.log[0]) as log:
    inputs = job_inputs(snakemake)
    atrophy = snakemake.params.atrophy
    log.info("%s: %s", snakemake.wildcards.thinned, atrophy)
    thinned = {}
    for i, hemi in enumerate(snakemake.params.hemis):
        own = HemisphereSurfaces.from_white_pial(load_surface(inputs.white[i]), load_surface(inputs.pial[i]),
                                                 load_shape(inputs.cortex[i]) > 0.5)
        thinned[hemi] = thin_hemisphere(own, hemi, atrophy)
        reached = thinned[hemi].thickness < own.thickness
        log.info("hemi-%s: %d of %d vertices thinned, mean thickness there %.2f -> %.2f mm", hemi, reached.sum(),
                 len(reached), own.thickness[reached].mean() if reached.any() else float("nan"),
                 thinned[hemi].thickness[reached].mean() if reached.any() else float("nan"))
        save_surface(thinned[hemi].white, snakemake.output.white[i])
        save_surface(thinned[hemi].pial, snakemake.output.pial[i])
        save_surface(thinned[hemi].midthickness, snakemake.output.midthickness[i])
        save_shape(thinned[hemi].thickness, snakemake.output.thickness[i])
    grid = nib.load(inputs.grid)
    volumes = condition_volumes([s.white for s in thinned.values()], [s.pial for s in thinned.values()],
                                grid.shape[:3], grid.affine, clip_mm=snakemake.params.clip_mm)
    log.info("ribbon: %d voxels", int(volumes.ribbon.sum()))
    save_nifti(nib.Nifti1Image(volumes.pial_sdf, grid.affine), snakemake.output.pial_sdf)
    save_nifti(nib.Nifti1Image(volumes.white_sdf, grid.affine), snakemake.output.white_sdf)
    save_nifti(nib.Nifti1Image(volumes.ribbon.astype(np.uint8), grid.affine), snakemake.output.ribbon)
