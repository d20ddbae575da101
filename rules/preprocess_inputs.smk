# Input functions and targets of the preprocessing stage (rules/preprocess.smk).

import os


def raw_t1w_path(wildcards):
    """The scan's T1w file as found in the BIDS folder (it may be missing)."""
    return str(SCANS[wildcards.scan].path)


def raw_t1w_input(wildcards):
    """The T1w as a job input if it exists.

    A missing file (e.g. a DataLad/git-annex link that was never fetched) is not declared
    as input: Snakemake would then refuse to build the DAG for the whole cohort. Instead
    that subject's first job fails with a message naming the file, and --keep-going lets
    the other subjects finish.
    """
    path = raw_t1w_path(wildcards)
    return [path] if os.path.exists(path) else []


def preprocess_targets():
    """The model-ready images, their masks and the QC montages of every scan.

    Called after rules/preprocess.smk is included, so the paths are the rules' own. Sharded:
    the shard manifests (the subjects' files are made inside the shard jobs).
    """
    if SUBJECTS_PER_SHARD:
        return shard_manifests()
    return (
        scan_paths(rules.preprocess.output.image)
        + scan_paths(rules.preprocess.output.image_mask)
        + scan_paths(rules.qc_preproc.output.png)
    )
