"""Rule shape_model_quality: compactness, generalisation, specificity (JSON + figure) and the modes figure."""

from cortexgen.runtime import job_inputs, job_log, limit_threads

limit_threads(snakemake.threads)

import json  # noqa: E402

import numpy as np  # noqa: E402

from cortexgen.io import atomic_output  # noqa: E402
from cortexgen.shape.figures import mode_figure, quality_figure  # noqa: E402
from cortexgen.shape.model import load_shape_model  # noqa: E402
from cortexgen.shards import complete_indices, select  # noqa: E402
from cortexgen.shape.quality import compactness, folding_agreement, generalisation, specificity  # noqa: E402
from cortexgen.surfaces.mesh import load_shape, load_surface  # noqa: E402

with job_log(snakemake.log[0]) as log:
    settings = snakemake.params.settings
    quality_settings = settings["quality"]
    model = load_shape_model(snakemake.input.model)
    inputs = job_inputs(snakemake)
    # The subjects the model was fitted on (sharded runs leave out those their shard did not make).
    keep = complete_indices({"midthickness": inputs.midthickness, "thickness": inputs.thickness}, log)
    mid = np.stack([load_surface(path).vertices for path in select(inputs.midthickness, keep)])
    thickness = np.stack([load_shape(path) for path in select(inputs.thickness, keep)])
    quality = {"hemi": model.hemi, "n_subjects": len(model.subjects), "n_modes": model.n_modes,
               "compactness": [round(float(value), 6) for value in compactness(model)]}
    if len(mid) >= 3:
        quality["generalisation"] = generalisation(mid, thickness, model.faces, quality_settings["modes"],
                                                   scaling=model.scaling, hemi=model.hemi)
    else:
        quality["generalisation"] = {"not_computed": f"leave-one-out needs at least 3 training subjects, "
                                                     f"the model has {len(mid)}"}
    if len(mid) >= 2:
        # the medial wall has thickness 0 in every subject; its flat cut has no folds to agree on
        quality["correspondence"] = folding_agreement(mid, model.faces, (thickness > 0).all(axis=0))
    quality["specificity"] = specificity(model, mid, quality_settings["specificity_samples"],
                                         np.random.default_rng(quality_settings["seed"]), quality_settings["modes"])
    log.info("%s", json.dumps(quality))
    with atomic_output(snakemake.output.json) as tmp:
        tmp.write_text(json.dumps(quality, indent=2) + "\n")
    title = f"hemi-{model.hemi} shape model: {model.n_modes} modes from {len(model.subjects)} subjects"
    for figure, path in ((quality_figure(quality, title), snakemake.output.png),
                         (mode_figure(model, n_modes=settings["figure_modes"]), snakemake.output.modes)):
        with atomic_output(path) as tmp:
            figure.savefig(tmp, dpi=80, format="png")
