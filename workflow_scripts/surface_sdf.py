"""Rule surface_sdf: signed distances (mm, negative inside) of pial and white surfaces on the model grid."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import save_nifti  # noqa: E402
from cortexgen.surfaces.mesh import load_surface  # noqa: E402
from cortexgen.surfaces.sdf import condition_volumes  # noqa: E402

with job_log(snakemake.log[0]) as log:
    grid = nib.load(snakemake.input.grid)
    volumes = condition_volumes(
        [load_surface(path) for path in snakemake.input.white],
        [load_surface(path) for path in snakemake.input.pial],
        grid.shape[:3],
        grid.affine,
        clip_mm=snakemake.params.clip_mm,
    )
    log.info("ribbon: %d voxels", int(volumes.ribbon.sum()))
    save_nifti(nib.Nifti1Image(volumes.pial_sdf, grid.affine), snakemake.output.pial_sdf)
    save_nifti(nib.Nifti1Image(volumes.white_sdf, grid.affine), snakemake.output.white_sdf)
    save_nifti(nib.Nifti1Image(volumes.ribbon.astype(np.uint8), grid.affine), snakemake.output.ribbon)
