"""Rule surfaces: the fsaverage template carried onto the subject's cerebrum and fitted to its tissue."""

from cortexgen.runtime import exit_without_teardown, job_log, limit_threads

limit_threads(snakemake.threads)

import ants  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.preprocess.register import itk_affine_to_ras  # noqa: E402
from cortexgen.surfaces.extract import extract_surfaces, native_thickness  # noqa: E402
from cortexgen.surfaces.fit import FitSettings  # noqa: E402
from cortexgen.surfaces.mesh import save_shape, save_surface  # noqa: E402
from cortexgen.surfaces.segment import tissue_from_fractions  # noqa: E402
from cortexgen.surfaces.template import load_template  # noqa: E402
from cortexgen.surfaces.warp import WarpSettings  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.input.gm) as log:
    hemis = snakemake.params.hemis
    template = load_template(
        hemis, snakemake.input.template_white, snakemake.input.template_pial, snakemake.input.template_cortex,
        snakemake.input.template_label, snakemake.input.template_mask,
    )
    gm = nib.load(snakemake.input.gm)
    tissue = tissue_from_fractions(
        *(nib.load(path).get_fdata(dtype=np.float32) for path in (snakemake.input.csf, snakemake.input.gm, snakemake.input.wm))
    )
    partition = np.asarray(nib.load(snakemake.input.partition).dataobj)
    to_native = itk_affine_to_ras(ants.read_transform(snakemake.input.xfm))
    surfaces = extract_surfaces(
        tissue,
        gm.affine,
        template,
        WarpSettings.from_config(snakemake.params.warp),
        FitSettings.from_config(snakemake.params.fit),
        snakemake.params.max_thickness_mm,
        repair=snakemake.params.repair,
        partition=partition,
        workers=snakemake.threads,
    )
    for i, hemi in enumerate(hemis):
        result = surfaces[hemi]
        native = native_thickness(result.white, result.pial, to_native)
        log.info("hemi-%s: mean thickness %.2f mm over the cortex (native space %.2f mm)", hemi,
                 result.thickness[result.cortex].mean(), native[result.cortex].mean())
        save_surface(result.white, snakemake.output.white[i])
        save_surface(result.pial, snakemake.output.pial[i])
        save_surface(result.midthickness, snakemake.output.midthickness[i])
        save_shape(result.thickness, snakemake.output.thickness[i])
        save_shape(native, snakemake.output.native_thickness[i])
exit_without_teardown()
