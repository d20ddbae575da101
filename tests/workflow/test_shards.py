"""Sharded runs (config sharding.subjects_per_shard): the DAG of a cohort holds one job per shard
instead of one per subject and step, and a shard job really runs the per-subject rules in a
Snakemake run of its own, lists a subject that fails, and lets the others through."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from tests.conftest import demo_config, discovery_bids, run_snakemake
from tests.workflow.test_dag import PREPROC_RULES, SURFACE_RULES, job_blocks, job_counts

LABELS = ["01", "02", "03", "04", "05"]


def sharded_config(bids, subjects_per_shard):
    config = demo_config(bids_dir=str(bids))
    config["sharding"] = {"subjects_per_shard": subjects_per_shard}
    return config


def test_sharded_dag_has_one_job_per_shard_and_no_per_subject_jobs(tmp_path):
    bids = discovery_bids(tmp_path / "bids", LABELS)
    result = run_snakemake(tmp_path / "work", sharded_config(bids, 2), "--dry-run")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # 5 subjects in shards of 2: 0001 (01, 02), 0002 (03, 04), 0003 (05).
    assert counts["subject_shard"] == 3
    for rule in PREPROC_RULES + SURFACE_RULES + ["deformation_field"]:
        assert rule not in counts
    # The cohort-level rules are all there, waiting on the manifests.
    for rule in ("fit_shape_model", "sample_bridge", "sample_ddpm", "sample_deform", "sample_sdm", "evaluate"):
        assert counts[rule] >= 1
    assert counts["train_generator"] == 4
    blocks = {re.search(r"rule (\w+):", block).group(1) + re.search(r"jobid: (\d+)", block).group(1): block
              for block in job_blocks(result.stdout)}
    fit = next(block for name, block in blocks.items() if name.startswith("fit_shape_model"))
    inputs = re.search(r"input: (.*)", fit).group(1)
    assert sorted(inputs.split(", ")) == [f"results/shards/shard-000{k}.tsv" for k in (1, 2, 3)]
    shard_jobs = [block for name, block in blocks.items() if name.startswith("subject_shard")]
    assert sorted(re.search(r"output: (\S+)", block).group(1) for block in shard_jobs) == [
        f"results/shards/shard-000{k}.tsv" for k in (1, 2, 3)]
    # The templates are made once, before the shards (their own runs would race to make them).
    for block in shard_jobs:
        assert "results/surfaces/tpl-fsaverage/tpl-fsaverage_desc-tissue_dseg.nii.gz" in block
        assert "results/deform/tpl-MNIColin27/" in block


def test_cycle_items_wait_only_for_their_own_shard(tmp_path):
    bids = discovery_bids(tmp_path / "bids", LABELS)
    config = sharded_config(bids, 2)
    config["split"]["held_out"] = ["03"]
    result = run_snakemake(tmp_path / "work", config, "--dry-run", "--until", "cycle_consistency")
    assert result.returncode == 0, result.stderr
    real = [block for block in job_blocks(result.stdout)
            if "rule cycle_consistency:" in block and "cycle/real/" in block]
    assert len(real) == 1
    assert re.search(r"input: (.*)", real[0]).group(1).split(", ")[0] == "results/shards/shard-0002.tsv"
    assert "shard-0001" not in real[0] and "shard-0003" not in real[0]


def test_held_out_atrophy_waits_only_for_its_subjects_shard(tmp_path):
    bids = discovery_bids(tmp_path / "bids", LABELS)
    config = sharded_config(bids, 2)
    config["split"]["held_out"] = ["03"]
    result = run_snakemake(tmp_path / "work", config, "--dry-run")
    assert result.returncode == 0, result.stderr
    for rule in ("thin_held_out", "atrophy_effect"):
        (block,) = [block for block in job_blocks(result.stdout) if f"rule {rule}:" in block]
        inputs = re.search(r"input: (.*)", block).group(1).split(", ")
        assert [path for path in inputs if path.startswith("results/shards/")] == ["results/shards/shard-0002.tsv"]
        assert "results/surfaces/sub-03/" not in block  # its files are the shard's, read through params


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory):
    """Shard 0001 of four subjects: three whose steps are already done (marked with --touch, as
    a rerun after most subjects finished) and one, sub-03 (a training subject), whose T1w is
    not an image. The shard job runs its own Snakemake run, which really runs sub-03's first step."""
    root = tmp_path_factory.mktemp("shard_run")
    bids = discovery_bids(root / "bids", ["01", "02", "03", "04"])
    (bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz").write_bytes(b"this is not a NIfTI file")
    work = root / "work"
    config = demo_config(bids_dir=str(bids))
    config["split"]["held_out"] = ["02"]
    done_labels = ("01", "02", "04")
    # Everything the others need from the per-subject steps, and the two templates.
    done = [f"results/qc/sub-{label}_{kind}.png" for label in done_labels for kind in ("preproc", "surfaces")]
    done += [f"results/surfaces/sub-{label}/anat/sub-{label}_space-MNIColin27_res-84x128x84_desc-pial_sdf.nii.gz"
             for label in done_labels]
    done += [f"results/deform/sub-{label}/anat/sub-{label}_from-MNIColin27_to-T1w_res-84x128x84_desc-displacement_xfm.nii.gz"
             for label in ("01", "04")]
    targets = ["surface_template", "deform_template", *done]
    config["sharding"] = {"subjects_per_shard": 4}  # planned as run: a sharded run's deform template is Colin27's
    # --touch only touches files that exist: make every output of those jobs first (empty files;
    # nothing reads them here), then let --touch date them in the DAG's order.
    planned = run_snakemake(work, config, "--dry-run", *targets)
    assert planned.returncode == 0, planned.stderr
    for line in planned.stdout.splitlines():
        if line.strip().startswith("output: "):
            for path in line.strip().removeprefix("output: ").split(", "):
                (work / path).parent.mkdir(parents=True, exist_ok=True)
                (work / path).touch()
    touched = run_snakemake(work, config, "--touch", "--cores", "1", *targets)
    assert touched.returncode == 0, touched.stderr
    result = run_snakemake(work, config, "--cores", "2", "results/shards/shard-0001.tsv", timeout=600)
    return work, config, result


def test_shard_manifest_lists_each_subject_and_why_one_failed(shard_run):
    work, _, result = shard_run
    assert result.returncode == 0, result.stderr
    with open(work / "results/shards/shard-0001.tsv", newline="") as handle:
        rows = {row["scan"]: row for row in csv.DictReader(handle, delimiter="\t")}
    assert list(rows) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert [rows[scan]["status"] for scan in ("sub-01", "sub-02", "sub-04")] == ["ok"] * 3
    # The broken scan's first step failed, and its log says so, naming the file.
    status = rows["sub-03"]["status"]
    assert status.startswith("failed: logs/preprocess/sub-03/sub-03.log: ")
    assert "sub-03_T1w.nii.gz" in status


def test_shard_ran_its_steps_in_its_own_run(shard_run):
    work, _, result = shard_run
    inner = (work / "logs/subject_shard/shard-0001.snakemake.log").read_text()
    # Only the broken subject had work left; its later steps never started.
    assert re.search(r"rule preprocess:\n(.*\n)*?.*wildcards: subdir=sub-03, scan=sub-03", inner)
    assert "rule qc_preproc:" not in inner and "rule segment:" not in inner
    assert re.findall(r"wildcards: .*", inner) == ["wildcards: subdir=sub-03, scan=sub-03"]
    log = (work / "logs/subject_shard/shard-0001.log").read_text()
    assert "3 of 4 subjects done" in log
    assert not (work / "results/preproc/sub-03/anat/sub-03_desc-denoised_T1w.nii.gz").exists()


def test_sharded_shape_model_leaves_out_the_subject_that_failed(shard_run):
    """fit_shape_model, sharded: its inputs are the manifest, its subjects come through params,
    and the failed training subject (sub-03) is left out of the model, not fatal."""
    work, config, _ = shard_run
    from cortexgen.shape.model import load_shape_model
    from cortexgen.surfaces.mesh import save_shape, save_surface
    from cortexgen.surfaces.template import load_fsaverage

    # Real surfaces in fsaverage order for the training subjects that came through.
    rng = np.random.default_rng(0)
    for label in ("01", "04"):
        for hemi in ("L", "R"):
            meshes = load_fsaverage(hemi, subdivisions=0)
            mid = meshes.white.with_vertices(0.5 * (meshes.white.vertices + meshes.pial.vertices)
                                             + rng.normal(0, 0.5, meshes.white.vertices.shape))
            anat = work / "results" / "surfaces" / f"sub-{label}" / "anat"
            save_surface(mid, anat / f"sub-{label}_hemi-{hemi}_midthickness.surf.gii")
            save_shape(rng.uniform(2, 3, len(mid.vertices)).astype(np.float32),
                       anat / f"sub-{label}_hemi-{hemi}_thickness.shape.gii")
    result = run_snakemake(work, config, "--cores", "1", "results/shape_model/hemi-L_ssm.npz")
    assert result.returncode == 0, result.stderr
    model = load_shape_model(work / "results/shape_model/hemi-L_ssm.npz")
    assert list(model.subjects) == ["sub-01", "sub-04"]
    log = (work / "logs/fit_shape_model/hemi-L.log").read_text()
    assert "left out (its shard did not make it): results/surfaces/sub-03/anat/sub-03_hemi-L_midthickness" in log


def test_a_shard_where_every_subject_fails_fails(tmp_path):
    bids = discovery_bids(tmp_path / "bids", ["01", "02", "03"])
    for label in ("01", "02"):
        (bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz").write_bytes(b"broken")
    work = tmp_path / "work"
    config = demo_config(bids_dir=str(bids))
    config["sharding"] = {"subjects_per_shard": 2}
    for path in ("results/surfaces/tpl-fsaverage", "results/deform/tpl-MNIColin27"):
        (work / path).mkdir(parents=True)
    planned = run_snakemake(work, config, "--dry-run", "surface_template", "deform_template")
    for line in planned.stdout.splitlines():
        if line.strip().startswith("output: "):
            for path in line.strip().removeprefix("output: ").split(", "):
                (work / path).touch()
    result = run_snakemake(work, config, "--cores", "2", "results/shards/shard-0001.tsv", timeout=600)
    assert result.returncode != 0
    assert "no subject of shard 0001 came through" in (work / "logs/subject_shard/shard-0001.log").read_text()
    # No half-written manifest survives.
    assert not (work / "results/shards/shard-0001.tsv").exists()
