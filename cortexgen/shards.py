"""Shards of subjects: the per-subject steps of many subjects in one job (config 'sharding').

A shard job runs the workflow's own per-subject rules for its subjects in a Snakemake run of
its own (local, on the job's cores), then writes a manifest: one row per subject, ``ok`` or
``failed: <reason>``. The cohort-level rules read the manifests' subjects' files; a subject
whose files are missing is left out of what is learnt from the cohort and the log says so.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

#: Columns of a shard manifest.
MANIFEST_COLUMNS = ("scan", "status", "log")

#: ``subjects_per_shard: auto``: cohorts of up to this many scans keep one job per subject and
#: step (every file a declared output). Measured with benchmarks/dag_scale.py on 2 shared cores,
#: unsharded: 200 scans 2,269 jobs, 10 s, 204 MB; 1,000 scans 10,870 jobs, 38 s, 435 MB; 33,000
#: scans killed at 90 s and 1.6 GB. Sharded by 100, 33,000 scans: 450 jobs, 6 s, 250 MB.
AUTO_MAX_UNSHARDED = 200

#: ``subjects_per_shard: auto`` above :data:`AUTO_MAX_UNSHARDED`: scans per shard, so that a
#: 33,000-scan cohort has 330 shard jobs (a shard job's runtime grows with it: see config
#: resources.subject_shard).
AUTO_SUBJECTS_PER_SHARD = 100


def subjects_per_shard(setting: int | str, n_scans: int) -> int:
    """Scans per shard for config ``sharding.subjects_per_shard`` and a cohort of ``n_scans``.

    An integer is taken as given (0: one job per subject and step). ``"auto"``: 0 for a cohort
    of at most :data:`AUTO_MAX_UNSHARDED` scans, else :data:`AUTO_SUBJECTS_PER_SHARD`.
    """
    if isinstance(setting, str):
        if setting.strip().lower() != "auto":
            raise ValueError(f"sharding.subjects_per_shard: {setting!r} is neither an integer >= 0 nor 'auto'")
        return 0 if n_scans <= AUTO_MAX_UNSHARDED else AUTO_SUBJECTS_PER_SHARD
    if isinstance(setting, bool) or int(setting) != setting or setting < 0:
        raise ValueError(f"sharding.subjects_per_shard: {setting!r} is neither an integer >= 0 nor 'auto'")
    return int(setting)


def make_shards(scans: Sequence, size: int) -> dict[str, list]:
    """{shard label: [scans]}: ``scans`` in chunks of ``size`` (labels 0001, 0002, ...); none if size is 0."""
    if not size:
        return {}
    scans = list(scans)
    count = -(-len(scans) // size)
    width = max(4, len(str(count)))
    return {f"{index + 1:0{width}d}": scans[index * size:(index + 1) * size] for index in range(count)}


def shard_of(shards: Mapping[str, Sequence]) -> dict[str, str]:
    """{scan prefix: shard label} of every scan in ``shards`` (:func:`make_shards`)."""
    return {scan.prefix: shard for shard, scans in shards.items() for scan in scans}


def shards_holding(shard_by_prefix: Mapping[str, str], scans: Iterable) -> list[str]:
    """The labels of the shards that hold ``scans``, each once, in shard order."""
    return sorted({shard_by_prefix[scan.prefix] for scan in scans})


def shard_subjects(scans: Sequence, train_prefixes: Collection[str]) -> list[dict]:
    """A shard job's params.subjects: [{scan, subdir, train}] of its scans, in order (``train``:
    the scan's prefix is in ``train_prefixes``, so the job also makes its training files)."""
    return [{"scan": scan.prefix, "subdir": scan.subdir, "train": scan.prefix in train_prefixes} for scan in scans]


def subject_paths(patterns: Mapping[str, Sequence[str]], subject: Mapping, kind: str) -> list[str]:
    """``patterns[kind]`` (and, for a training subject, ``patterns["train_" + kind]``) filled in
    for ``subject`` ({scan, subdir, train}: a shard job's params.subjects entry)."""
    chosen = list(patterns[kind]) + (list(patterns.get(f"train_{kind}", [])) if subject["train"] else [])
    return [pattern.format(subdir=subject["subdir"], scan=subject["scan"]) for pattern in chosen]


def inner_run_command(snakefile: str | Path, workdir: str | Path, configfile: str | Path, cores: int, mem_mb: int,
                      targets: Sequence[str]) -> list[str]:
    """The argv of a shard's own Snakemake run (an argument list: no shell, so no id is ever parsed as shell text).

    ``--nolock``: the run that submitted the shard holds the working directory's lock.
    ``--keep-going``: one subject's failure does not stop the others. ``--rerun-incomplete``:
    a shard killed at its time limit resumes, redoing only the jobs it had not finished.
    ``--workflow-profile none``: the shard runs here, on the job's cores, not through the
    profile that submitted it.
    """
    return [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
            "--configfile", str(configfile), "--cores", str(int(cores)), "--resources", f"mem_mb={int(mem_mb)}",
            "--nolock", "--keep-going", "--rerun-incomplete", "--workflow-profile", "none", "--printshellcmds",
            "--", *targets]


def inner_run_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a shard's own run: the job's, without a profile that would submit its jobs again."""
    environment = dict(os.environ if environ is None else environ)
    environment.pop("SNAKEMAKE_PROFILE", None)
    return environment


def first_failure(log_paths: Sequence[str | Path]) -> str | None:
    """``rule-log: reason`` of the first log (in step order) that records ``FAILED: <reason>``."""
    for path in log_paths:
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if "FAILED: " in line:
                return f"{path}: {line.split('FAILED: ', 1)[1].strip()}"
    return None


def subject_status(outputs: Sequence[str | Path], log_paths: Sequence[str | Path]) -> str:
    """``ok`` if every output of a subject's steps exists, else ``failed: <why>``.

    The reason is the first failure a step's log records; a step that never ran (its input
    failed) or left no log is reported by its first missing output.
    """
    missing = [str(path) for path in outputs if not Path(path).exists()]
    if not missing:
        return "ok"
    return f"failed: {first_failure(log_paths) or f'{missing[0]} was not made'}"


def complete_indices(lists: Mapping[str, Sequence[str]], log: logging.Logger | None = None) -> list[int]:
    """Positions at which every one of these parallel per-subject file lists has an existing file.

    Sharded runs leave out the subjects that failed in their shard; one job per subject never
    gets here with a missing file (Snakemake waits for every input). Each left-out position is
    logged with its first missing file. Raises ValueError if the lists differ in length.
    """
    lengths = {name: len(paths) for name, paths in lists.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-subject file lists differ in length: {lengths}")
    count = next(iter(lengths.values()), 0)
    keep = []
    for index in range(count):
        missing = [paths[index] for paths in lists.values() if not Path(paths[index]).exists()]
        if missing:
            if log is not None:
                log.warning("left out (its shard did not make it): %s", missing[0])
        else:
            keep.append(index)
    return keep


def select(paths: Sequence, indices: Sequence[int]) -> list:
    """``paths`` at ``indices``."""
    return [paths[index] for index in indices]
