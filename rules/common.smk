# Scans, paths and per-rule resources shared by every stage.

import os

from cortexgen.bids import discover_scans


# Subjects come from the BIDS folder; a bad label stops the run here, before any job.
SCANS = {scan.prefix: scan for scan in discover_scans(config["bids_dir"], config.get("participants"))}
if not SCANS:
    raise ValueError(f"{config['bids_dir']}: no sub-*/[ses-*/]anat/*_T1w.nii[.gz] found (config key 'bids_dir')")

SPACE = config["preprocess"]["template_space"]
RES = "x".join(str(n) for n in config["preprocess"]["shape"])


wildcard_constraints:
    scan=r"sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?",
    subdir=r"sub-[A-Za-z0-9]+(/ses-[A-Za-z0-9]+)?",


# Derivatives: results/<stage>/<sub>/[<ses>/]anat/<prefix>_<entities>_<suffix>
PREPROC = "results/preproc/{subdir}/anat/{scan}"


def rule_resources(rule_name):
    """threads, mem_mb and runtime (min) of a rule, from config 'resources'."""
    return config["resources"][rule_name]


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


def format_scan(pattern, scan):
    """``pattern`` with its {subdir} and {scan} wildcards filled in for ``scan``."""
    return str(pattern).format(subdir=scan.subdir, scan=scan.prefix)


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
    return [format_scan(pattern, scan) for scan in SCANS.values()]


def preprocess_targets():
    """The model-ready images, their masks and the QC montages of every scan.

    Called after rules/preprocess.smk is included, so the paths are the rules' own.
    """
    return (
        scan_paths(rules.normalize.output.image)
        + scan_paths(rules.normalize.output.mask)
        + scan_paths(rules.qc_preproc.output.png)
    )


def surface_targets():
    """Every scan's surfaces, condition volumes (SDFs, ribbon) and surface QC.

    Called after rules/surfaces.smk is included, so the paths are the rules' own.
    """
    outputs = rules.surfaces.output
    return (
        [path for pattern in outputs.white + outputs.pial + outputs.midthickness + outputs.thickness
         for path in scan_paths(pattern)]
        + scan_paths(rules.surface_sdf.output.pial_sdf)
        + scan_paths(rules.surface_sdf.output.white_sdf)
        + scan_paths(rules.surface_sdf.output.ribbon)
        + scan_paths(rules.qc_surfaces.output.png)
        + scan_paths(rules.qc_surfaces.output.tsv)
    )
