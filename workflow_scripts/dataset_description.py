"""Rule dataset_description: each derivative dataset's dataset_description.json and .bidsignore.

One dataset per stage folder that holds subjects (results/preproc, results/surfaces,
results/deform: ``params.datasets``), each linked to the raw BIDS folder and to the datasets its
files are made from (``params.sources``, as paths relative to its root: ``../preproc``).
"""

import os
from pathlib import Path

from cortexgen.runtime import job_log

from cortexgen.derivatives import bids_ignore, dataset_description, write_json  # noqa: E402
from cortexgen.io import atomic_output  # noqa: E402

params = snakemake.params
with job_log(snakemake.log[0]) as log:
    for name, root in params.datasets.items():
        json_path, ignore_path = (os.path.join(root, file) for file in ("dataset_description.json", ".bidsignore"))
        assert json_path in snakemake.output.json and ignore_path in snakemake.output.bidsignore, root
        links = {source: os.path.relpath(params.datasets[source], root) for source in params.sources[name]}
        description = dataset_description(params.bids_dir, name=f"cortexgen {name}",
                                          workflow_dir=params.workflow_dir, derived_from=links)
        write_json(description, json_path)
        with atomic_output(ignore_path) as tmp:
            Path(tmp).write_text(bids_ignore())
        log.info("%s: derivative of %s%s", root, params.bids_dir,
                 "".join(f" and {location}" for location in links.values()))
    log.info("code: %s", description["GeneratedBy"][0].get("CodeURL", "no CodeURL (no Project-URL, no git remote)"))
    # Before each stage was a dataset of its own, results/ was described as one; that description
    # would now hide the stages' from tools that stop at the first one they find (pybids).
    parent = os.path.commonpath(list(params.datasets.values()))
    for stale in ("dataset_description.json", ".bidsignore"):
        if os.path.exists(os.path.join(parent, stale)):
            log.warning("%s is left from an earlier cortexgen: each of %s is a dataset now; delete it",
                        os.path.join(parent, stale), ", ".join(params.datasets.values()))
