"""Dry-runs of the whole DAG, --until, the SLURM profile, lint, and config/BIDS refusals."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import DEMO_BIDS, DS000022, REPO, demo_config, discovery_bids, requires_shared, run_snakemake

PREPROC_RULES = ["preprocess", "qc_preproc"]
SURFACE_RULES = ["segment", "surfaces", "surface_sdf", "qc_surfaces"]
# The demo config: 2 samples, 1 interpolation, 1 atrophy and its twin, the mean shape; one model
# (and quality) per hemisphere; the atrophy applied to the held-out subject's own cortex.
SHAPE_JOBS = {"fit_shape_model": 2, "shape_model_quality": 2, "make_shape": 5, "qc_shapes": 1, "thin_held_out": 1}
# Four generators, each trained once (train_generator over {model}) and sampled once (a rule
# each); a field per training subject (2 of 3).
DIFFUSION_JOBS = {"deform_template": 1, "deformation_field": 2, "train_generator": 4, "sample_bridge": 1,
                  "sample_ddpm": 1, "sample_deform": 1, "sample_sdm": 1}
# Cycle consistency on the held-out subject's and the atrophy's bridge samples and on the held-out
# subject's real image; one evaluation; the atrophy twins' differences.
EVALUATION_JOBS = {"cycle_consistency": 3, "evaluate": 1, "atrophy_effect": 1}


def job_blocks(stdout: str) -> list[str]:
    """A dry-run's jobs, one text block each (every job starts with a '[timestamp]' line)."""
    return re.split(r"^\[[^\]\n]+\]$", stdout, flags=re.M)[1:]


def job_counts(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry-run as {rule: count}."""
    table = stdout[stdout.index("Job stats:") :]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def test_full_dag_dry_run_schedules_every_step_per_subject(tmp_path):
    result = run_snakemake(tmp_path, demo_config(), "--dry-run")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    n_demo = len(list(DEMO_BIDS.glob("sub-*/anat/*_T1w.nii.gz")))
    assert n_demo == 3
    per_subject = PREPROC_RULES + SURFACE_RULES
    assert counts == {
        **{rule: n_demo for rule in per_subject}, **SHAPE_JOBS, **DIFFUSION_JOBS, **EVALUATION_JOBS,
        "surface_template": 1, "dataset_description": 1, "all": 1,
        "total": len(per_subject) * n_demo + 3 + sum(SHAPE_JOBS.values()) + sum(DIFFUSION_JOBS.values())
        + sum(EVALUATION_JOBS.values()),
    }
    for model in ("bridge", "ddpm", "deform", "sdm"):
        assert f"results/models/{model}/model.pt" in result.stdout
    assert "results/samples/ddpm/sample-0004_T1w.nii.gz" in result.stdout
    # The bridge samples from the held-out subject's SDFs and from every new cortex: the mean
    # shape (the atrophy's twin) and the held-out subject's own cortex thinned (its twin: sub03).
    for condition in ("sub03", "sample0001", "sample0002", "interp01to02w050", "atrophy01", "mean",
                      "sub03atrophy01"):
        assert f"results/samples/bridge/cond-{condition}_T1w.nii.gz" in result.stdout
    for shape in ("sample0001", "sample0002", "atrophy01", "mean", "sub03atrophy01"):
        assert f"results/shapes/{shape}/{shape}_space-MNIColin27_res-84x128x84_desc-pial_sdf.nii.gz" in result.stdout
    (block,) = [block for block in job_blocks(result.stdout) if "rule thin_held_out:" in block]
    assert "results/surfaces/sub-03/anat/sub-03_hemi-R_pial.surf.gii" in block
    assert "results/preproc/sub-03/anat/sub-03_space-MNIColin27_res-84x128x84_desc-preproc_T1w.nii.gz" in block
    (block,) = [block for block in job_blocks(result.stdout) if "rule atrophy_effect:" in block]
    for path in ("results/samples/bridge/cond-sub03atrophy01_T1w.nii.gz", "results/samples/bridge/cond-mean_T1w.nii.gz",
                 "results/surfaces/sub-03/anat/sub-03_space-MNIColin27_res-84x128x84_desc-ribbon_mask.nii.gz",
                 "results/shapes/mean/mean_hemi-L_white.surf.gii", "results/evaluation/atrophy.tsv"):
        assert path in block
    assert "results/shape_model/hemi-L_ssm.npz" in result.stdout
    assert "results/surfaces/sub-01/anat/sub-01_hemi-L_white.surf.gii" in result.stdout
    assert "results/surfaces/sub-01/anat/sub-01_space-MNIColin27_res-84x128x84_desc-pial_sdf.nii.gz" in result.stdout
    assert "results/preproc/sub-01/anat/sub-01_space-MNIColin27_res-84x128x84_desc-preproc_T1w.nii.gz" in result.stdout
    assert "results/preproc/sub-01/anat/sub-01_from-T1w_to-MNIColin27_mode-image_xfm.mat" in result.stdout


def test_until_schedules_only_the_steps_before(tmp_path):
    result = run_snakemake(tmp_path, demo_config(), "--dry-run", "--until", "segment")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {"preprocess": 3, "segment": 3, "total": 6}


def test_until_surface_sdf_skips_qc_and_template_runs_once(tmp_path):
    result = run_snakemake(tmp_path, demo_config(), "--dry-run", "--until", "surface_sdf")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["surface_template"] == 1
    assert counts["surface_sdf"] == counts["surfaces"] == counts["segment"] == 3
    assert "qc_surfaces" not in counts and "qc_preproc" not in counts


def test_until_evaluate_schedules_only_what_evaluation_needs(tmp_path):
    """--until evaluate: everything the metrics read, and none of the QC figures or shape-model
    quality that only the report shows."""
    result = run_snakemake(tmp_path, demo_config(), "--dry-run", "--until", "evaluate")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    full = run_snakemake(tmp_path, demo_config(), "--dry-run")
    skipped = {rule: count for rule, count in job_counts(full.stdout).items() if counts.get(rule) != count}
    assert skipped == {"qc_preproc": 3, "qc_surfaces": 3, "qc_shapes": 1, "shape_model_quality": 2,
                       "atrophy_effect": 1, "dataset_description": 1, "all": 1,
                       "total": job_counts(full.stdout)["total"]}
    assert counts["total"] == job_counts(full.stdout)["total"] - 12
    # The cycle runs on the held-out subject's and the atrophy's samples, against their surfaces.
    (block,) = [block for block in job_blocks(result.stdout)
                if "rule cycle_consistency:" in block and "label=sub03" in block and "source=bridge" in block]
    assert "results/surfaces/sub-03/anat/sub-03_hemi-L_white.surf.gii" in block
    assert "results/samples/bridge/cond-sub03_T1w.nii.gz" in block
    assert "results/evaluation/cycle/bridge/cond-atrophy01_cycle.tsv" in result.stdout
    # The held-out subject's real image gets the same treatment (the ceiling); a new cortex has none.
    assert "results/evaluation/cycle/real/cond-sub03_cycle.tsv" in result.stdout
    assert "results/evaluation/cycle/real/cond-atrophy01" not in result.stdout


def test_evaluation_reference_is_capped_by_a_seeded_subset(tmp_path):
    """evaluate.max_reference_images: the set metrics read at most that many real images."""

    def evaluate_images(config):
        result = run_snakemake(tmp_path, config, "--dry-run", "--until", "evaluate")
        assert result.returncode == 0, result.stderr
        (block,) = [block for block in job_blocks(result.stdout) if "rule evaluate:" in block]
        inputs = next(line for line in block.splitlines() if line.strip().startswith("input:"))
        return inputs.count("desc-preproc_T1w")

    config = demo_config()
    # Reference 'all' (3 images; 'auto' with one subject held out), the held-out subject's image
    # for the paired metrics, and for the memorisation check the 2 training images and the
    # held-out one.
    assert evaluate_images(config) == 3 + 1 + 2 + 1
    config["evaluate"]["max_reference_images"] = 2
    assert evaluate_images(config) == 2 + 1 + 2 + 1


def test_evaluation_reference_leaves_training_subjects_out_once_enough_are_held_out(tmp_path):
    """evaluate.reference 'auto' (the default): held-out subjects only once at least
    reference_min_held_out are held out, every subject below that."""

    def evaluate_block(config):
        result = run_snakemake(tmp_path, config, "--dry-run", "--until", "evaluate")
        assert result.returncode == 0, result.stderr
        (block,) = [block for block in job_blocks(result.stdout) if "rule evaluate:" in block]
        return next(line for line in block.splitlines() if line.strip().startswith("input:"))

    labels = ["01", "02", "03", "04", "05", "06"]
    config = demo_config(bids_dir=str(discovery_bids(tmp_path / "bids", labels)))
    config["split"].update(held_out=["03", "04", "05", "06"])
    counts = {}
    for reference, minimum in (("auto", 4), ("held_out", 4), ("all", 4), ("auto", 5)):
        config["evaluate"].update(reference=reference, reference_min_held_out=minimum)
        counts[reference, minimum] = evaluate_block(config).count("desc-preproc_T1w")
    # 'all' adds the 2 training subjects' images to the reference; 4 held out are enough for 'auto'.
    assert counts["auto", 4] == counts["held_out", 4] == counts["all", 4] - 2
    assert counts["auto", 5] == counts["all", 4]


def test_shape_model_trains_on_the_training_split_only(tmp_path):
    config = demo_config()
    config["split"] = {"held_out": ["02"], "held_out_fraction": 0.25, "seed": 0}
    result = run_snakemake(tmp_path, config, "--dry-run", "--until", "fit_shape_model")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["fit_shape_model"] == 2
    blocks = [block for block in result.stdout.split("rule ") if block.startswith("fit_shape_model:")]
    assert len(blocks) == 2
    for block in blocks:
        inputs = next(line for line in block.splitlines() if line.strip().startswith("input:"))
        assert "sub-01_hemi-" in inputs and "sub-03_hemi-" in inputs
        assert "sub-02" not in inputs
    # The interpolation runs between the first two training subjects.
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert "results/shapes/interp01to03w050/" in result.stdout


def test_generators_train_on_the_training_split_only(tmp_path):
    config = demo_config()
    config["split"] = {"held_out": ["02"], "held_out_fraction": 0.25, "seed": 0}
    result = run_snakemake(tmp_path, config, "--dry-run", "--until", "train_generator")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train_generator"] == 4
    assert counts["deformation_field"] == 2 and "sample_bridge" not in counts and "make_shape" not in counts
    blocks = {model: next(block for block in job_blocks(result.stdout)
                          if "rule train_generator:" in block and f"wildcards: model={model}\n" in block)
              for model in ("bridge", "ddpm", "deform", "sdm")}
    for block in blocks.values():
        inputs = next(line for line in block.splitlines() if line.strip().startswith("input:"))
        assert "sub-01_" in inputs and "sub-03_" in inputs and "sub-02" not in inputs
    assert "desc-pial_sdf" in blocks["bridge"] and "desc-white_sdf" in blocks["bridge"]
    assert "desc-pial_sdf" not in blocks["ddpm"] and "desc-preproc_T1w" in blocks["ddpm"]
    for model in ("deform", "sdm"):
        assert "desc-displacement_xfm" in blocks[model] and "desc-preproc_T1w" not in blocks[model]
    # The template they warp is the training subjects' average, not the held-out subject's.
    (template,) = [block for block in job_blocks(result.stdout) if "rule deform_template:" in block]
    inputs = next(line for line in template.splitlines() if line.strip().startswith("input:"))
    assert "sub-01_" in inputs and "sub-03_" in inputs and "sub-02" not in inputs and "desc-study_T1w" in template


def test_sharded_runs_warp_the_space_template(tmp_path):
    config = demo_config()
    config["sharding"] = {"subjects_per_shard": 2}
    result = run_snakemake(tmp_path, config, "--dry-run", "deform_template")
    assert result.returncode == 0, result.stderr
    (template,) = [block for block in job_blocks(result.stdout) if "rule deform_template:" in block]
    assert "desc-preproc_T1w" not in template and "desc-brain_T1w" in template
    assert job_counts(result.stdout) == {"deform_template": 1, "total": 1}


def test_sessions_and_participant_filter(tmp_path):
    bids = tmp_path / "bids"
    for sub, ses in [("01", "A"), ("01", "B"), ("02", None), ("03", None)]:
        anat = bids / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
        anat.mkdir(parents=True)
        prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
        shutil.copy(DEMO_BIDS / "sub-01/anat/sub-01_T1w.nii.gz", anat / f"{prefix}_T1w.nii.gz")
    config = demo_config(bids_dir=str(bids), participants=["sub-01", "02"])
    result = run_snakemake(tmp_path / "work", config, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["preprocess"] == 3
    assert "results/preproc/sub-01/ses-B/anat/sub-01_ses-B_space-MNIColin27_res-84x128x84_desc-preproc_T1w.nii.gz" in (
        result.stdout
    )
    assert "results/qc/sub-01_ses-A_preproc.png" in result.stdout
    assert "sub-03" not in result.stdout


def test_slurm_profile_dry_run_carries_resources(tmp_path):
    result = run_snakemake(tmp_path, demo_config(), "--dry-run", "--profile", str(REPO / "profiles" / "slurm"))
    assert result.returncode == 0, result.stderr
    # The resources the executor turns into sbatch --mem/--time/--cpus-per-task.
    preprocess_block = result.stdout[result.stdout.index("rule preprocess:") :].split("[")[0]
    resources_line = next(line for line in preprocess_block.splitlines() if "resources:" in line)
    assert "mem_mb=4000" in resources_line and "runtime=20" in resources_line, preprocess_block


def test_slurm_profile_with_the_gpu_config_requests_gpus_for_training_and_sampling(tmp_path):
    import yaml
    from snakemake.utils import update_config

    # As `--configfile config/gpu.yaml` on top of the shipped config (merged here because
    # the test already passes its own --configfile, and a second one would replace it).
    config = demo_config()
    update_config(config, yaml.safe_load((REPO / "config" / "gpu.yaml").read_text()))
    result = run_snakemake(tmp_path, config, "--dry-run", "--profile", str(REPO / "profiles" / "slurm"))
    assert result.returncode == 0, result.stderr

    def resources(rule, model=None):
        block = next(block for block in job_blocks(result.stdout)
                     if f"rule {rule}:" in block and (model is None or f"wildcards: model={model}\n" in block))
        return next(line for line in block.splitlines() if "resources:" in line)

    # Each generator's training job asks for config resources.train_<model>.
    for model in ("bridge", "ddpm", "deform"):
        assert "gpu=1" in resources("train_generator", model), resources("train_generator", model)
        assert "gpu=1" in resources(f"sample_{model}"), resources(f"sample_{model}")
    assert "runtime=2880" in resources("train_generator", "ddpm") and "mem_mb=32000" in resources("train_generator",
                                                                                                   "ddpm")
    assert "runtime=240" in resources("sample_ddpm") and "runtime=120" in resources("sample_bridge")
    # The PCA baseline has no network: it stays on the CPU.
    assert "gpu=0" in resources("train_generator", "sdm") and "gpu=0" in resources("sample_sdm")
    for rule in ("preprocess", "surfaces", "deformation_field"):
        assert "gpu=" not in resources(rule), resources(rule)


def test_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["preprocess"].__setitem__("shapes", [84, 128, 84]), "shapes"),
        (lambda c: c["preprocess"]["n4"].__setitem__("shrink_factor", "four"), "shrink_factor"),
        (lambda c: c["preprocess"]["denoise"].__setitem__("method", "gaussian"), "method"),
        (lambda c: c.__setitem__("bidsdir", "x"), "bidsdir"),
        (lambda c: c["diffusion"]["bridge"].__setitem__("objective", "l2"), "objective"),
        (lambda c: c["resources"]["train_ddpm"].__setitem__("gpu", -1), "gpu"),
    ],
)
def test_bad_config_stops_before_any_job_naming_the_key(tmp_path, mutate, key):
    config = demo_config()
    mutate(config)
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "Error validating config file" in message
    assert key in message
    assert "rule preprocess" not in message


def test_unusable_subjects_are_skipped_and_listed_and_entities_name_every_output(tmp_path):
    """A bad label, a folder without anat/ and an excluded subject are left out and listed in one
    summary before the DAG; two runs and two acquisitions give one output set each."""
    bids = tmp_path / "bids"
    names = {"sub-01": ["sub-01_run-1_T1w.nii.gz", "sub-01_run-2_T1w.nii.gz"],
             "sub-02": ["sub-02_acq-fast_T1w.nii.gz", "sub-02_acq-slow_T1w.nii.gz"],
             "sub-0a_b": ["sub-0a_b_T1w.nii.gz"], "sub-04": ["sub-04_T1w.nii.gz"]}
    for subject, files in names.items():
        (bids / subject / "anat").mkdir(parents=True)
        for name in files:
            shutil.copy(DEMO_BIDS / "sub-01/anat/sub-01_T1w.nii.gz", bids / subject / "anat" / name)
    (bids / "sub-03" / "func").mkdir(parents=True)
    config = demo_config(bids_dir=str(bids), exclude_participants=["04"])
    result = run_snakemake(tmp_path / "work", config, "--dry-run", "--until", "preprocess")
    assert result.returncode == 0, result.stderr
    message = result.stdout + result.stderr
    assert "2 subjects, 4 T1w images, 2 skipped" in message
    assert f"skipped {bids / 'sub-0a_b'}: subject label '0a_b' is not [A-Za-z0-9]+" in message
    assert f"skipped {bids / 'sub-03'}: no anat/ folder" in message
    assert "2 subjects, 4 T1w images" in result.stderr  # printed while the Snakefile is read, before any job
    assert job_counts(result.stdout)["preprocess"] == 4
    for prefix in ("sub-01_run-1", "sub-01_run-2", "sub-02_acq-fast", "sub-02_acq-slow"):
        subject = prefix.split("_")[0]
        assert (f"results/preproc/{subject}/anat/{prefix}_space-MNIColin27_res-84x128x84_desc-preproc_T1w.nii.gz"
                in result.stdout), prefix
    assert "sub-04" not in result.stdout


def test_derivative_names_are_bids_and_each_dataset_is_described(tmp_path):
    from cortexgen.derivatives import is_bids_name

    result = run_snakemake(tmp_path, demo_config(), "--dry-run", "--until", "surface_sdf", "dataset_description")
    assert result.returncode == 0, result.stderr
    # Each stage folder that holds subjects is a dataset of its own; results/ is none.
    for stage in ("preproc", "surfaces", "deform"):
        assert f"results/{stage}/dataset_description.json" in result.stdout, stage
        assert f"results/{stage}/.bidsignore" in result.stdout, stage
    assert not re.search(r"results/(dataset_description\.json|\.bidsignore)", result.stdout)
    paths = set(re.findall(r"results/(?:preproc|surfaces)/(?:sub|tpl)-[^\s,;]+", result.stdout))
    assert len(paths) > 30
    bad = sorted(path for path in paths if not is_bids_name(path.rsplit("/", 1)[1]))
    assert bad == []
    assert any(path.endswith("_res-84x128x84_desc-preproc_T1w.json") for path in paths)


def test_empty_bids_folder_is_refused(tmp_path):
    (tmp_path / "bids").mkdir()
    result = run_snakemake(tmp_path / "work", demo_config(bids_dir=str(tmp_path / "bids")), "--dry-run")
    assert result.returncode != 0
    assert "no usable sub-*/[ses-*/]anat/*_T1w.nii[.gz]" in result.stdout + result.stderr


@requires_shared
def test_full_ds000022_dag_with_its_config(tmp_path):
    """config/ds000022.yaml on top of the shipped config (as --configfile adds it) plans the 14 heads."""
    import yaml
    from snakemake.utils import update_config

    overlay = yaml.safe_load((REPO / "config" / "ds000022.yaml").read_text())
    assert (REPO / overlay["bids_dir"]).resolve() == DS000022.resolve()
    config = demo_config()
    update_config(config, overlay)
    config["bids_dir"] = str(DS000022)  # the test runs in a temporary folder
    assert config["diffusion"]["ddpm"]["training"]["learning_rate"] == 1.0e-3  # merged, not replaced
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["preprocess"] == 14 and counts["surfaces"] == 14
    assert counts["train_generator"] == 4 and counts["deformation_field"] == 10  # 10 train, 4 held out
