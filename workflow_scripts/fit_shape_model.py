"""Rule fit_shape_model: PCA of one hemisphere over the training scans' midthickness and thickness."""

from cortexgen.runtime import job_inputs, job_log, limit_threads

limit_threads(snakemake.threads)

import numpy as np  # noqa: E402

from cortexgen.shape.model import fit_shape_model, save_shape_model  # noqa: E402
from cortexgen.shards import complete_indices, select  # noqa: E402
from cortexgen.surfaces.mesh import load_shape, load_surface  # noqa: E402

with job_log(snakemake.log[0]) as log:
    settings = snakemake.params.settings
    inputs = job_inputs(snakemake)
    # Sharded runs: subjects whose shard did not make their surfaces are left out.
    keep = complete_indices({"midthickness": inputs.midthickness, "thickness": inputs.thickness}, log)
    meshes = [load_surface(path) for path in select(inputs.midthickness, keep)]
    model = fit_shape_model(
        np.stack([mesh.vertices for mesh in meshes]),
        np.stack([load_shape(path) for path in select(inputs.thickness, keep)]),
        meshes[0].faces,
        snakemake.wildcards.hemi,
        select(snakemake.params.subjects, keep),
        variance_threshold=settings["variance_threshold"],
        max_modes=settings["max_modes"],
        scaling=settings["scaling"],
    )
    explained = np.cumsum(model.variances) / model.total_variance
    log.info("hemi-%s: %d subjects, %d modes, %.1f %% of the variance", model.hemi, len(model.subjects),
             model.n_modes, 100 * explained[-1])
    save_shape_model(model, snakemake.output.model)
