# What a shard job (rules/shards.smk) runs for its subjects: the per-subject steps and their
# files (cortexgen.shards).

import cortexgen.shards

# The per-subject steps a shard job runs, in the order they run (their logs are where a
# failure is explained); a training subject also gets its deformation field.
SUBJECT_RULES = ["preprocess", "qc_preproc", "segment", "surfaces", "surface_sdf", "qc_surfaces"]
TRAIN_SUBJECT_RULES = ["deformation_field"]
TRAIN_PREFIXES = {scan.prefix for scan in TRAIN_SCANS}


def shard_patterns():
    """Path patterns (with {subdir} and {scan}) a shard job fills in for each of its subjects, so
    that its params stay a few dozen strings however many subjects it holds (cortexgen.shards):
    targets: the files whose jobs pull in every step (the QC figures: all of preprocessing, and
    segmentation with surfaces; the SDFs); outputs: every file of the steps; logs: their logs.
    ``train_``: the same for training subjects only. Call after the rules are defined."""
    patterns = {
        "targets": [rules.qc_preproc.output.png, rules.qc_surfaces.output.png, rules.surface_sdf.output.pial_sdf],
        "train_targets": [rules.deformation_field.output.field],
        "outputs": [path for name in SUBJECT_RULES for path in getattr(rules, name).output],
        "train_outputs": [path for name in TRAIN_SUBJECT_RULES for path in getattr(rules, name).output],
        "logs": [getattr(rules, name).log[0] for name in SUBJECT_RULES + TRAIN_SUBJECT_RULES],
    }
    return {key: [str(path) for path in paths] for key, paths in patterns.items()}


def shard_subjects(wildcards):
    """The shard's scans: [{scan, subdir, train}] (see cortexgen.shards.shard_subjects)."""
    return cortexgen.shards.shard_subjects(SHARDS[wildcards.shard], TRAIN_PREFIXES)
