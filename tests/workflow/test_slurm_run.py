"""The workflow through a real SLURM scheduler: the one-node cluster of tests/slurm_cluster.py
(one fake GPU) and the executor profile profiles/slurm-ci.

1. The ddpm generator's GPU jobs (train_generator, sample_ddpm, with ``gpu: 1``) and the CPU rule
   evaluate re-run through SLURM in a copy of the session's local diffusion run: SLURM's own
   job records show what each job asked for and got, and the outputs equal the local ones.
2. A training job that outlives its 1-minute time limit: SLURM sends SIGTERM, the job writes a
   checkpoint, Snakemake resubmits it, it resumes, and the final model equals an uninterrupted
   local training of the same config.

Both skip, with the reason, where no cluster can be started (slurm not installed, not root).
"""

from __future__ import annotations

import copy
import csv
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import REPO, run_snakemake, snakemake_command
from tests.workflow.conftest import DIFFUSION_TARGETS, build_diffusion_inputs

SLURM_CI_PROFILE = REPO / "profiles" / "slurm-ci"
GPU_RULES = ("train_generator", "sample_ddpm")
#: The ddpm's jobs (as :func:`rule_of` names them) and the evaluation -> their config resources key.
RESOURCE_KEYS = {"train_generator_wildcards_ddpm": "train_ddpm", "sample_ddpm": "sample_ddpm", "evaluate": "evaluate"}
#: Columns of the training log that do not depend on how fast the machine was.
LOG_VALUES = ("step", "train_loss", "val_loss", "learning_rate")
#: How long the interrupted training should take on this machine: over its 1-minute limit
#: (which it reaches after ~10 s of start-up) by more than SLURM's ~30 s between time-limit
#: checks and a calibration made under another load than the job's, short enough for a second
#: attempt to finish. At 70 s a job once finished its training before the kill arrived.
TRAINING_SECONDS = 90.0

pytestmark = pytest.mark.slow


def slurm_jobs(workdir: Path) -> list[dict[str, str]]:
    """SLURM's records (``scontrol show job``) of the jobs submitted from ``workdir``, oldest first.

    The cluster keeps finished jobs for its MinJobAge (15 minutes), so a whole test run is there.
    """
    out = subprocess.run(["scontrol", "--oneliner", "--details", "show", "job"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    jobs = []
    for line in out.splitlines():
        record: dict[str, str] = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                # First occurrence: --details repeats some keys (GRES=) per node.
                record.setdefault(key, value)
        if record.get("WorkDir") == str(workdir):
            jobs.append(record)
    return sorted(jobs, key=lambda job: int(job["JobId"]))


def rule_of(job: dict[str, str]) -> str:
    """The rule a job ran: the executor's job comment is ``rule_<name>``, with
    ``_wildcards_<values>`` after it for a rule with wildcards (``train_generator_wildcards_ddpm``)."""
    assert job["Comment"].startswith("rule_"), job["Comment"]
    return job["Comment"][len("rule_"):]


def time_limit(minutes: int) -> str:
    """A ``runtime`` (minutes, under a day) as scontrol prints the job's TimeLimit."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def assert_same_model(path: Path, reference: Path) -> None:
    """Both model files hold the same settings and bit-identical weights and generator state."""
    model = torch.load(path, map_location="cpu", weights_only=True)
    expected = torch.load(reference, map_location="cpu", weights_only=True)
    tensors = ("weights", "generator_state")
    settings = {key: value for key, value in model.items() if key not in tensors}
    assert settings == {key: value for key, value in expected.items() if key not in tensors}
    for key in tensors:
        assert model[key].keys() == expected[key].keys(), key
        for name, value in expected[key].items():
            assert torch.equal(model[key][name], value), (key, name)


def assert_same_training_log(path: Path, reference: Path) -> None:
    rows, expected = read_tsv(path), read_tsv(reference)
    assert [[row[c] for c in LOG_VALUES] for row in rows] == [[row[c] for c in LOG_VALUES] for row in expected]


def assert_requests(job: dict[str, str], rule: str, resources: dict, attempt: int = 1) -> None:
    """The job asked SLURM for the rule's threads, memory, runtime and (GPU rules) one GPU, and got it.

    A retried rule's memory grows with the attempt (rules/common.smk: retry_mem_mb)."""
    assert job["NumCPUs"] == str(resources["threads"]), (rule, job["NumCPUs"])
    assert job["MinMemoryNode"] == f"{resources['mem_mb'] * attempt}M", (rule, attempt, job["MinMemoryNode"])
    assert job["TimeLimit"] == time_limit(resources["runtime"]), (rule, job["TimeLimit"])
    if resources.get("gpu", 0) >= 1:
        # Requested (sbatch --gpus=1) and granted: the node's fake GPU was allocated to the job.
        assert job.get("TresPerJob") == "gres:gpu:1", (rule, job.get("TresPerJob"))
        assert job["JOB_GRES"] == "gpu:fake:1", (rule, job["JOB_GRES"])
    else:
        assert "TresPerJob" not in job and job["JOB_GRES"] == "(null)", (rule, job.get("TresPerJob"), job["JOB_GRES"])


def test_gpu_and_cpu_rules_through_slurm_match_the_local_run(slurm_cluster, diffusion_run, tmp_path):
    # slurm_cluster first: without a cluster the test skips before the local run is made.
    assert diffusion_run.result.returncode == 0, diffusion_run.result.stderr[-4000:]
    # The local run's folder, .snakemake records and file times included: only what is
    # deleted here (the ddpm's model and samples) and what depends on it (evaluate) is out of date.
    work = tmp_path / "work"
    shutil.copytree(diffusion_run.work, work, symlinks=True)
    for folder in ("results/models/ddpm", "results/samples/ddpm"):
        shutil.rmtree(work / folder)
    config = copy.deepcopy(diffusion_run.config)
    for key in ("train_ddpm", "sample_ddpm"):
        config["resources"][key]["gpu"] = 1
    # Only targets these rules make: with --allowed-rules, the other files are plain inputs.
    targets = [target for target in DIFFUSION_TARGETS if "/ddpm/" in target or "/evaluation/" in target]
    result = run_snakemake(work, config, "--profile", str(SLURM_CI_PROFILE), *targets,
                           "--allowed-rules", *GPU_RULES, "evaluate", timeout=900)
    assert result.returncode == 0, result.stderr[-6000:]

    jobs = slurm_jobs(work)
    # One job per rule: nothing else re-ran and nothing needed a second attempt.
    assert sorted(rule_of(job) for job in jobs) == sorted(RESOURCE_KEYS), jobs
    for job in jobs:
        assert job["JobState"] == "COMPLETED", job
        assert_requests(job, rule_of(job), config["resources"][RESOURCE_KEYS[rule_of(job)]])

    # CPU training and sampling with fixed seeds and the same thread count: bit-identical.
    local = diffusion_run.work
    assert_same_model(work / "results/models/ddpm/model.pt", local / "results/models/ddpm/model.pt")
    assert_same_training_log(work / "results/models/ddpm/train_log.tsv", local / "results/models/ddpm/train_log.tsv")
    samples = sorted((local / "results/samples/ddpm").glob("sample-*_T1w.nii.gz"))
    assert [path.name for path in samples] == ["sample-0001_T1w.nii.gz", "sample-0002_T1w.nii.gz"]
    for path in samples:
        image, expected = nib.load(work / "results/samples/ddpm" / path.name), nib.load(path)
        assert np.array_equal(image.affine, expected.affine)
        assert np.array_equal(image.get_fdata(), expected.get_fdata()), path.name
    assert (work / "results/samples/ddpm/samples.tsv").read_text() == (local / "results/samples/ddpm/samples.tsv").read_text()
    # Every metric (the ddpm's recomputed, the others' from unchanged samples), CI bounds and notes.
    metrics = read_tsv(work / "results/evaluation/metrics.tsv")
    assert metrics == read_tsv(local / "results/evaluation/metrics.tsv")
    assert any(row["generator"] == "ddpm" and row["metric"] == "mmd_linear_voxels" for row in metrics)


def seconds_per_step(work: Path, config: dict) -> float:
    """One ddpm training step of ``config`` on one thread, measured here and now (steps 11-30)."""
    from cortexgen.diffusion.run import train_job

    settings = copy.deepcopy(config["diffusion"]["ddpm"])
    settings["training"].update(steps=30, log_every=10, checkpoint_every=30)
    out = work.parent / "calibration"
    images = sorted(str(path) for path in (work / "results" / "preproc").glob("sub-0[12]/anat/*_desc-preproc_T1w.nii.gz"))
    assert len(images) == 2, images
    spec = {"model": "ddpm", "settings": settings, "device": "cpu", "checkpoints": str(out / "checkpoints"),
            "inputs": {"images": images}, "progress": False,
            "outputs": {"model": str(out / "model.pt"), "log": str(out / "train_log.tsv"), "png": str(out / "loss.png")}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_job(spec)
    finally:
        torch.set_num_threads(threads)
    rows = read_tsv(out / "train_log.tsv")
    return sum(float(row["seconds"]) for row in rows[1:]) / 20


def reached_step(log: str) -> int:
    """The step an attempt's training got to: where SIGTERM stopped it, or the last one."""
    stopped = re.search(r"stopped by SIGTERM at step (\d+); checkpoint written", log)
    if stopped:
        return int(stopped.group(1))
    # Killed after training finished (the limit came during Snakemake's own shutdown).
    return int(re.search(r"final training loss \S+ after (\d+) steps", log).group(1))


def test_training_killed_at_its_time_limit_resumes_and_equals_an_uninterrupted_run(slurm_cluster, tmp_path):
    slurm_work, config, _ = build_diffusion_inputs(tmp_path / "slurm")
    local_work = tmp_path / "local" / "work"
    shutil.copytree(slurm_work, local_work)
    # Steps for ~TRAINING_SECONDS here: a fixed count would not outlive the limit on a fast
    # machine, and would need many attempts on a slow one.
    steps = 10 * max(10, round(TRAINING_SECONDS / seconds_per_step(slurm_work, config) / 10))
    # Checkpoints only at the end and on SIGTERM: an attempt can only resume from what the
    # SIGTERM handler wrote.
    config["diffusion"]["ddpm"]["training"].update(steps=steps, log_every=steps // 10, checkpoint_every=steps,
                                                   seed=0)
    # One thread (the local reference runs beside it, on the other core), a 1-minute limit, a GPU.
    config["resources"]["train_ddpm"] = {"threads": 1, "mem_mb": 2000, "runtime": 1, "gpu": 1}
    target = "results/models/ddpm/model.pt"

    # The uninterrupted reference, at the lowest priority so the SLURM job's pace is what it would be alone.
    command = ["nice", "-n", "19", *snakemake_command(local_work, config, "--cores", "1", target,
                                                      "--allowed-rules", "train_generator")]
    # Its output goes to a file: a pipe nobody reads until the SLURM run ends would fill and stall it.
    local_log = tmp_path / "local.log"
    with open(local_log, "w") as out, subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO) as local:
        result = run_snakemake(slurm_work, config, "--profile", str(SLURM_CI_PROFILE), target,
                               "--allowed-rules", "train_generator", timeout=900)
        local.wait(timeout=600)
    assert local.returncode == 0, local_log.read_text()[-4000:]
    assert result.returncode == 0, result.stderr[-6000:]

    jobs = slurm_jobs(slurm_work)
    states = [job["JobState"] for job in jobs]
    # At least one attempt was stopped by the time limit; the last one finished.
    assert len(jobs) >= 2 and states[-1] == "COMPLETED" and set(states[:-1]) == {"TIMEOUT"}, states
    assert "Trying to restart job" in result.stderr
    for attempt, job in enumerate(jobs, start=1):
        assert rule_of(job) == "train_generator_wildcards_ddpm"
        assert_requests(job, "train_generator", config["resources"]["train_ddpm"], attempt)
    logs = [Path(job["StdOut"]).read_text(errors="replace") for job in jobs]
    interrupted = [reached_step(log) for log in logs[:-1]]
    assert any(f"stopped by SIGTERM at step {step}; checkpoint written" in log for step, log in zip(interrupted, logs)), (
        interrupted)
    assert all(0 < step <= steps for step in interrupted), (interrupted, steps)
    # Each attempt resumed exactly where the one before it stopped; the first started afresh.
    assert "resuming from checkpoint" not in logs[0]
    for step, log in zip(interrupted, logs[1:]):
        assert f"resuming from checkpoint at step {step}\n" in log, step
    # The checkpoints outlived the failed attempts (Snakemake removes only declared outputs).
    assert (slurm_work / "results/models/ddpm/checkpoints" / f"step-{steps:08d}.pt").exists()

    assert_same_model(slurm_work / target, local_work / target)
    assert_same_training_log(slurm_work / "results/models/ddpm/train_log.tsv",
                             local_work / "results/models/ddpm/train_log.tsv")
    assert [int(row["step"]) for row in read_tsv(slurm_work / "results/models/ddpm/train_log.tsv")] == list(
        range(steps // 10, steps + 1, steps // 10))
