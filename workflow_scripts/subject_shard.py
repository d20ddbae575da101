"""Rule subject_shard: the per-subject steps of one shard of subjects, then the shard's manifest.

The steps are the workflow's own rules, run by a Snakemake run of this job's own (see
cortexgen/shards.py); its output goes to this job's log. The job fails only if no subject of
the shard came through: a few bad scans in a cohort of thousands are listed, not fatal.
"""

from cortexgen.runtime import job_log

import copy  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from cortexgen.io import atomic_output, write_table  # noqa: E402
from cortexgen.shards import inner_run_command, inner_run_environment, subject_paths, subject_status  # noqa: E402

with job_log(snakemake.log[0]) as log:
    subjects = list(snakemake.params.subjects)
    patterns = snakemake.params.patterns
    scans = [subject["scan"] for subject in subjects]
    # The same configuration, unsharded: inside the shard each subject's step is a job.
    config = copy.deepcopy(snakemake.config)
    config["sharding"]["subjects_per_shard"] = 0
    folder = Path(snakemake.output.manifest).parent / f".{Path(snakemake.output.manifest).stem}"
    folder.mkdir(parents=True, exist_ok=True)
    configfile = folder / "config.yaml"
    with atomic_output(configfile) as tmp:
        Path(tmp).write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [path for subject in subjects for path in subject_paths(patterns, subject, "targets")]
    command = inner_run_command(snakemake.params.snakefile, os.getcwd(), configfile, snakemake.threads,
                                snakemake.resources.mem_mb, targets)
    inner_log = Path(snakemake.log[0]).with_suffix(".snakemake.log")
    log.info("%d subjects (%s ... %s); the shard's own run logs to %s", len(scans), scans[0], scans[-1], inner_log)
    with open(inner_log, "w") as out:
        returncode = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                    env=inner_run_environment()).returncode
    log.info("the shard's run exited with %d", returncode)
    rows = []
    for subject in subjects:
        status = subject_status(subject_paths(patterns, subject, "outputs"), subject_paths(patterns, subject, "logs"))
        if status != "ok":
            log.warning("%s %s", subject["scan"], status)
        rows.append({"scan": subject["scan"], "status": status, "log": str(inner_log)})
    done = sum(row["status"] == "ok" for row in rows)
    log.info("%d of %d subjects done", done, len(rows))
    if not done:
        raise RuntimeError(f"no subject of shard {snakemake.wildcards.shard} came through "
                           f"(the shard's run exited with {returncode}; see {inner_log})")
    write_table(rows, snakemake.output.manifest)
