# cortexgen: raw T1w (BIDS) -> preprocessed MNI-space volumes -> ... -> synthetic brains.
#
#   snakemake --cores all                      # the embedded demo
#   snakemake --profile profiles/slurm         # on a SLURM cluster
#   snakemake --until preprocess --cores all   # stop after a stage (or surface_sdf, make_shape, evaluate)
#   snakemake --dry-run                        # show what would run

import os
import sys

from snakemake.utils import min_version, validate

# The library lives beside this file, importable with or without `pip install -e .`:
# here through sys.path, in jobs' scripts through workflow_scripts/cortexgen (a link
# to ../cortexgen; Snakemake puts a script's folder on its sys.path).
sys.path.insert(0, workflow.basedir)

min_version("9.0")


# The shipped config, from the workflow's folder whatever the working directory.
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, "config/schema.yaml")


# With --sdm apptainer every rule runs in this image (the repository's Dockerfile, pushed;
# config 'container' names another). Without --sdm it is not used.
container: config["container"]

from cortexgen.paths import resolve_shipped

# The demo data and templates the config names resolve from the workflow's folder when they
# are not found from the working directory (see cortexgen/paths.py).
config["bids_dir"] = resolve_shipped(config["bids_dir"], workflow.basedir)
for key in ("template", "template_brain_mask"):
    config["preprocess"][key] = resolve_shipped(config["preprocess"][key], workflow.basedir)


report: "report/workflow.rst"


# Each stage: its input functions and targets, then its rules (a file of rules holds no
# functions: `snakemake --lint` asks for that).
include: "rules/common.smk"
include: "rules/preprocess_inputs.smk"
include: "rules/preprocess.smk"
include: "rules/surfaces_inputs.smk"
include: "rules/surfaces.smk"
include: "rules/shape_model_inputs.smk"
include: "rules/shape_model.smk"
include: "rules/diffusion_inputs.smk"
include: "rules/diffusion.smk"
include: "rules/evaluate_inputs.smk"
include: "rules/evaluate.smk"
include: "rules/shards_inputs.smk"
include: "rules/shards.smk"


rule all:
    default_target: True
    input:
        rules.dataset_description.output.json,
        rules.dataset_description.output.bidsignore,
        preprocess_targets(),
        surface_targets(),
        shape_model_targets(),
        diffusion_targets(),
        evaluation_targets(),
