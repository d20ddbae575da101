"""Rule dataset_description: the output folder's dataset_description.json (a BIDS derivative) and
its .bidsignore."""

from pathlib import Path

from cortexgen.runtime import job_log

from cortexgen.derivatives import bids_ignore, dataset_description, write_json  # noqa: E402
from cortexgen.io import atomic_output  # noqa: E402

with job_log(snakemake.log[0]) as log:
    description = dataset_description(snakemake.params.bids_dir, workflow_dir=snakemake.params.workflow_dir)
    write_json(description, snakemake.output.json)
    with atomic_output(snakemake.output.bidsignore) as tmp:
        Path(tmp).write_text(bids_ignore())
    log.info("derivative of %s; code: %s", snakemake.params.bids_dir,
             description["GeneratedBy"][0].get("CodeURL", "no CodeURL (no Project-URL, no git remote)"))
