"""Rule surface_sdf: signed distances (mm, negative inside) of pial and white surfaces on the model grid."""

from cortexgen.runtime import exit_without_teardown, job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.derivatives import bids_uri, resolution_sidecar, write_json  # noqa: E402
from cortexgen.io import save_nifti, voxel_sizes  # noqa: E402
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

    # Sidecars: what the res- label means, what the values are, and what they come from (BIDS URIs:
    # the surfaces are in this dataset, results/surfaces; the grid is a preprocessed image).
    def sources(*surfaces):
        files = [path for group in surfaces for path in group] + [snakemake.input.grid]
        return [bids_uri(path, snakemake.output.ribbon_json) for path in files]

    def sidecar(**fields):
        return resolution_sidecar(grid.shape[:3], voxel_sizes(grid).round(4).tolist(), snakemake.params.space,
                                  skull_stripped=None, **fields)

    clip = snakemake.params.clip_mm
    clipped = f", clipped to +-{clip:g} mm" if clip else ""
    for surface, files in (("pial", snakemake.input.pial), ("white", snakemake.input.white)):
        write_json(sidecar(Description=f"Signed distance to the {surface} surfaces of both hemispheres at each "
                                       f"voxel centre, negative inside{clipped}",
                           Units="mm", Sources=sources(files)),
                   getattr(snakemake.output, f"{surface}_sdf_json"))
    write_json(sidecar(Description="Cortical ribbon: inside the pial and outside the white surfaces",
                       Type="ROI", Sources=sources(snakemake.input.white, snakemake.input.pial)),
               snakemake.output.ribbon_json)
exit_without_teardown()
