# Cohorts of thousands (sharded: config sharding.subjects_per_shard N > 0, or auto above 200
# scans): one job per shard of subjects
# runs that shard's per-subject steps, the very rules above, in a Snakemake run of its own on
# the job's cores, and writes the shard's manifest (one row per subject: ok, or what failed).
# The cohort-level rules wait for the manifests; the DAG of the whole run then has a few
# hundred jobs, not one per subject and step.

wildcard_constraints:
    shard=r"[0-9]+",


rule subject_shard:
    input:
        # Made once, before any shard: the shards' own runs would otherwise race to make them.
        template_white=rules.surface_template.output.white,
        template_pial=rules.surface_template.output.pial,
        template_cortex=rules.surface_template.output.cortex,
        template_label=rules.surface_template.output.label,
        template_mask=rules.surface_template.output.mask,
        deform_template=rules.deform_template.output.image,
        template=config["preprocess"]["template"],
        template_brain_mask=config["preprocess"]["template_brain_mask"],
    output:
        manifest=SHARD_MANIFEST,
    params:
        subjects=shard_subjects,
        patterns=shard_patterns(),
        snakefile=workflow.main_snakefile,
    log:
        "logs/subject_shard/shard-{shard}.log",
    benchmark:
        "results/benchmarks/subject_shard/shard-{shard}.tsv"
    threads: rule_resources("subject_shard")["threads"]
    resources:
        mem_mb=retry_mem_mb("subject_shard"),
        runtime=rule_resources("subject_shard")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/subject_shard.py"
