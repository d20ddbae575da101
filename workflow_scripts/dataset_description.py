"""Rule dataset_description: the output folder's dataset_description.json (a BIDS derivative)."""

from cortexgen.runtime import job_log

from cortexgen.derivatives import dataset_description, write_json  # noqa: E402

with job_log(snakemake.log[0]) as log:
    write_json(dataset_description(snakemake.params.bids_dir), snakemake.output.json)
    log.info("derivative of %s", snakemake.params.bids_dir)
