"""Rule make_shape: one new cortex (sample, interpolation or atrophy) as surfaces and condition volumes."""

from cortexgen.runtime import job_inputs, job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import save_nifti  # noqa: E402
from cortexgen.preprocess.normalize import resized_affine  # noqa: E402
from cortexgen.shape.model import load_shape_model  # noqa: E402
from cortexgen.shape.synthesis import shape_coefficients, shape_qc, synthesize_hemisphere  # noqa: E402
from cortexgen.surfaces.fit import FitSettings  # noqa: E402
from cortexgen.surfaces.mesh import load_shape, load_surface, save_shape, save_surface  # noqa: E402
from cortexgen.surfaces.qc import write_qc_tsv  # noqa: E402
from cortexgen.surfaces.sdf import condition_volumes  # noqa: E402

with job_log(snakemake.log[0]) as log:
    spec = snakemake.params.spec
    inputs = job_inputs(snakemake)
    log.info("%s: %s", snakemake.wildcards.shape, spec)
    surfaces = {}
    for i, hemi in enumerate(snakemake.params.hemis):
        model = load_shape_model(snakemake.input.models[i])
        endpoints = None
        if spec["kind"] == "interpolation":
            endpoints = {
                spec[end]: (load_surface(inputs[f"{end}_{hemi}_mid"]).vertices,
                            load_shape(inputs[f"{end}_{hemi}_thickness"]))
                for end in ("from", "to")
            }
        z = shape_coefficients(model, spec, endpoints)
        atrophy = spec if spec["kind"] == "atrophy" else None
        surfaces[hemi] = synthesize_hemisphere(model, z, atrophy, repair=snakemake.params.repair,
                                               flow=FitSettings.from_config(snakemake.params.fit))
        log.info("hemi-%s: z = %s, mean thickness %.2f mm", hemi, np.round(z, 2).tolist(),
                 surfaces[hemi].thickness[surfaces[hemi].cortex].mean())
        save_surface(surfaces[hemi].white, snakemake.output.white[i])
        save_surface(surfaces[hemi].pial, snakemake.output.pial[i])
        save_surface(surfaces[hemi].midthickness, snakemake.output.midthickness[i])
        save_shape(surfaces[hemi].thickness, snakemake.output.thickness[i])
    # The model grid: the template's 1 mm box on preprocess.shape voxels, as the preprocessed images.
    template = nib.load(snakemake.input.template)
    shape = tuple(snakemake.params.grid_shape)
    affine = resized_affine(template.affine, template.shape, shape)
    volumes = condition_volumes([s.white for s in surfaces.values()], [s.pial for s in surfaces.values()], shape,
                                affine, clip_mm=snakemake.params.clip_mm)
    save_nifti(nib.Nifti1Image(volumes.pial_sdf, affine), snakemake.output.pial_sdf)
    save_nifti(nib.Nifti1Image(volumes.white_sdf, affine), snakemake.output.white_sdf)
    save_nifti(nib.Nifti1Image(volumes.ribbon.astype(np.uint8), affine), snakemake.output.ribbon)
    rows = [shape_qc(snakemake.wildcards.shape, hemi, hemi_surfaces) for hemi, hemi_surfaces in surfaces.items()]
    for row in rows:
        log.info("%s", row)
    write_qc_tsv(rows, snakemake.output.qc)
