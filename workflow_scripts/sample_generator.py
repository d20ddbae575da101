"""Rules sample_<model> (sample_bridge, sample_ddpm, ...): synthetic images from a trained generator."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

from cortexgen.diffusion.registry import generator  # noqa: E402
from cortexgen.diffusion.run import sample_bridge_job, sample_unconditional_job  # noqa: E402

with job_log(snakemake.log[0]) as log:
    model = snakemake.params.model
    spec = {
        "model": model,
        "model_file": snakemake.input.model,
        "settings": snakemake.params.settings,
        "device": snakemake.params.device,
        "cuda": snakemake.params.cuda,
        "outputs": list(snakemake.output.images),
        "table": snakemake.output.table,
    }
    if generator(model).conditional:
        spec["sdf_clip_mm"] = snakemake.params.sdf_clip_mm
        spec["conditions"] = snakemake.params.conditions
        spec["priors"] = list(snakemake.output.get("priors", []))
        spec["redrawn"] = list(snakemake.output.get("redrawn", []))
        rows = sample_bridge_job(spec)
    else:
        spec["grid_image"] = snakemake.input.grid
        spec["fields"] = list(snakemake.output.get("fields", []))
        rows = sample_unconditional_job(spec)
    log.info("%s: %d images written", model, len(rows))
