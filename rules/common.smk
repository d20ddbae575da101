# What every stage shares: the scans, the train/held-out split, shards of subjects, path
# helpers and per-rule resources. Each stage's own input functions and targets are in
# rules/<stage>_inputs.smk; what they plan is worked out by cortexgen.planning.

import sys

from cortexgen import planning
from cortexgen.bids import discover
from cortexgen.planning import format_scan, scans_paths
from cortexgen.shards import make_shards, shard_of, shards_holding, subjects_per_shard
from cortexgen.split import split_subjects


# Scans come from the BIDS folder: one per T1w image. What cannot be used is skipped and listed
# in one summary, before any job; the run stops here only if nothing is left.
DISCOVERY = discover(config["bids_dir"], config.get("participants"), config.get("exclude_participants"))
print(DISCOVERY.summary(), file=sys.stderr)
SCANS = {scan.prefix: scan for scan in DISCOVERY.scans}
if not SCANS:
    raise ValueError(f"{config['bids_dir']}: no usable sub-*/[ses-*/]anat/*_T1w.nii[.gz] (config key 'bids_dir'); "
                     "see the summary above for what was skipped and why")

SPACE = config["preprocess"]["template_space"]
RES = "x".join(str(n) for n in config["preprocess"]["shape"])

# The BIDS-derivative datasets: each stage folder that holds subjects is one of its own (sub-*/ at
# its root, a dataset_description.json and .bidsignore from rule dataset_description), and
# results/ holds them as a raw dataset's derivatives/ folder does. Name -> root, and the datasets
# each one's files are made from (its DatasetLinks, named by folder: sidecars cite their files as
# bids:<folder>:<path>, see cortexgen.derivatives.bids_uri).
DATASETS = {name: f"results/{name}" for name in ("preproc", "surfaces", "deform")}
DATASET_SOURCES = {"preproc": [], "surfaces": ["preproc"], "deform": ["preproc"]}


wildcard_constraints:
    scan=r"sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?(_(task|acq|ce|rec|run|echo|flip|inv|mt|part|chunk)-[A-Za-z0-9]+)*",
    subdir=r"sub-[A-Za-z0-9]+(/ses-[A-Za-z0-9]+)?",


# Cohorts of thousands (config 'sharding'): shards of subjects, in scan order. 'auto' (the
# default): one job per subject and step for a small cohort, shards for a large one.
SUBJECTS_PER_SHARD = subjects_per_shard(config["sharding"].get("subjects_per_shard", "auto"), len(SCANS))
SHARDS = make_shards(list(SCANS.values()), SUBJECTS_PER_SHARD)
if SHARDS:
    print(f"sharding: {len(SCANS)} scans in {len(SHARDS)} shards of up to {SUBJECTS_PER_SHARD} "
          f"(config sharding.subjects_per_shard: {config['sharding'].get('subjects_per_shard', 'auto')})",
          file=sys.stderr)
SHARD_MANIFEST = "results/shards/shard-{shard}.tsv"
SHARD_OF = shard_of(SHARDS)


def shard_manifests(scans=None):
    """The manifests of the shards that hold ``scans`` (default: every shard), in shard order."""
    shards = SHARDS if scans is None else shards_holding(SHARD_OF, scans)
    return [SHARD_MANIFEST.format(shard=shard) for shard in shards]


def subject_inputs(files_of, scans_of=None):
    """Input function of a cohort-level rule for the per-subject files it reads.

    ``files_of(wildcards)`` gives them as {name: path or [paths]}. One job per subject (no
    sharding): those files are the job's inputs. Sharded: the manifests of the shards that
    make them are (of the scans ``scans_of(wildcards)`` names; default every shard), and the
    paths reach the script through ``params.subject_files`` (see :func:`subject_params`), so
    the DAG holds a few hundred shard files instead of every subject's files.
    """

    def inputs(wildcards):
        if not SUBJECTS_PER_SHARD:
            return files_of(wildcards)
        return {"shards": shard_manifests(None if scans_of is None else scans_of(wildcards))}

    return inputs


def subject_params(files_of):
    """Param function paired with :func:`subject_inputs`: the per-subject paths when sharded, else {}.

    Scripts read both through ``cortexgen.runtime.job_inputs``.
    """
    return lambda wildcards: files_of(wildcards) if SUBJECTS_PER_SHARD else {}


def rule_resources(rule_name):
    """threads, mem_mb and runtime (min) of a rule, from config 'resources'."""
    return config["resources"][rule_name]


def job_resources(key, wildcards):
    """config 'resources' of a job: resources.<key> with the job's wildcards filled in, so that
    each generator's training job asks for its own (``train_{model}`` gives the bridge's job
    resources.train_bridge)."""
    return rule_resources(key.format(**dict(wildcards.items())))


def job_resource(key, name, default=None):
    """Input function: resource ``name`` (threads, runtime, gpu) of :func:`job_resources`."""
    return lambda wildcards: job_resources(key, wildcards).get(name, default)


def retry_mem_mb(key):
    """mem_mb of the jobs profiles/slurm retries (training, sampling, shards). It is
    config 'resources' (``key`` as for :func:`job_resources`) for the first attempt, twice that
    for the second, and so on, so a job killed for memory gets more when it is resubmitted."""
    return lambda wildcards, attempt: job_resources(key, wildcards)["mem_mb"] * attempt


def scan_file(pattern):
    """Input function: ``pattern`` (e.g. another rule's output, or a list of them) for the job's {scan}.

    For rules whose output has no {subdir}: that folder is derived from the scan.
    """

    def path(wildcards):
        scan = SCANS[wildcards.scan]
        if isinstance(pattern, (list, tuple)):
            return [format_scan(item, scan) for item in pattern]
        return format_scan(pattern, scan)

    return path


def scan_paths(pattern):
    """``pattern`` for every scan."""
    return scans_paths(pattern, SCANS.values())


# Subjects held out of every model (shape model, generators) for evaluation; see config 'split'.
SPLIT = split_subjects(
    [f"sub-{scan.subject}" for scan in SCANS.values()],
    config["split"]["held_out"],
    config["split"]["held_out_fraction"],
    config["split"]["seed"],
    config["split"]["validation_fraction"],
)
TRAIN_SCANS = planning.scans_of(SCANS.values(), SPLIT.train)
VALIDATION_SCANS = planning.scans_of(SCANS.values(), SPLIT.validation)
HELD_OUT_SCANS = planning.scans_of(SCANS.values(), SPLIT.held_out)
