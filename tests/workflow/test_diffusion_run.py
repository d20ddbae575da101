"""The diffusion and evaluation stages run for real (deformation fields, three diffusion generators
and the statistical deformation model trained and sampled, then evaluated: set metrics, paired
fidelity, cycle consistency, figures).

Only the diffusion and evaluation rules (and the surface template) may run (--allowed-rules).
The run and its inputs are the session fixture ``diffusion_run`` (tests/workflow/conftest.py),
shared with the SLURM tests: Colin27-derived "subjects" on a small grid, the template's meshes
as the held-out subject's surfaces (the cycle-consistency values are checked in
tests/unit/test_cycle.py, here the plumbing and the table). Tiny networks and a handful of
steps: the test checks the plumbing and the files, the unit tests check what the models learn.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from cortexgen.diffusion.training import load_model
from tests.workflow.conftest import GRID, RES


def test_every_generator_trains_and_writes_a_loadable_model(diffusion_run):
    work, result = diffusion_run.work, diffusion_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    # The shipped bridge is Haar-packed: 8 channels for each of x_t, its surface prior y and two SDFs.
    for model, channels in (("bridge", 32), ("ddpm", 1), ("deform", 3)):
        folder = work / "results" / "models" / model
        trained = load_model(folder / "model.pt")
        assert trained.generator.name == model and trained.grid == (16, 24, 16)
        if model == "bridge":
            assert trained.generator.prior.offset.shape == trained.generator.prior.gain.shape == (16, 24, 16)
        first_conv = next(p for n, p in trained.network.named_parameters() if n.endswith("weight") and p.dim() == 5)
        assert first_conv.shape[1] == channels
        with open(folder / "train_log.tsv") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        assert [int(row["step"]) for row in rows] == [2, 4]
        assert all(np.isfinite(float(row["train_loss"])) and float(row["train_loss"]) > 0 for row in rows)
        assert (folder / "loss.png").stat().st_size > 5_000
        # Checkpoints live beside the declared outputs, not among them.
        assert sorted(p.name for p in (folder / "checkpoints").glob("step-*.pt")) == ["step-00000002.pt",
                                                                                     "step-00000004.pt"]
    deform = load_model(work / "results" / "models" / "deform" / "model.pt")
    assert deform.extra["field_scale_mm"] > 0.5
    assert deform.extra["field"] == {"kind": "velocity", "integration_steps": 7, "log_iterations": 4,
                                    "smoothing_voxels": 1.0}


def test_statistical_deformation_model_is_the_pca_of_the_training_velocities(diffusion_run):
    from cortexgen.diffusion.sdm import load_deformation_model

    work, result = diffusion_run.work, diffusion_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    folder = work / "results" / "models" / "sdm"
    sdm, extra = load_deformation_model(folder / "model.pt")
    # Two training subjects: one mode, all of their variance, on deform's grid and field settings.
    assert sdm.n_subjects == 2 and sdm.n_modes == 1 and sdm.grid == (16, 24, 16)
    assert extra["field"] == load_model(work / "results" / "models" / "deform" / "model.pt").extra["field"]
    with open(folder / "train_log.tsv") as handle:
        (row,) = list(csv.DictReader(handle, delimiter="\t"))
    assert row["mode"] == "1" and float(row["cumulative_explained_variance"]) == pytest.approx(1.0)
    assert float(row["variance_mm2"]) == pytest.approx(sdm.variances[0]) and sdm.variances[0] > 0.1
    assert (folder / "loss.png").stat().st_size > 5_000
    assert not list((folder / "checkpoints").glob("step-*.pt"))


def test_samples_are_images_on_the_model_grid(diffusion_run):
    work, result, brain = diffusion_run.work, diffusion_run.result, diffusion_run.brain
    assert result.returncode == 0, result.stderr[-4000:]
    samples = work / "results" / "samples"
    with open(samples / "bridge" / "samples.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    # The held-out subject's own SDFs, paired with its real image for evaluation.
    assert [(row["condition"], row["kind"]) for row in rows] == [("sub-03", "held_out")]
    assert rows[0]["real_image"].endswith(f"sub-03_space-MNIColin27_res-{RES}_desc-preproc_T1w.nii.gz")
    # Beside it, the image the bridge starts from (its surface prior: the trained model's rendering
    # of sub-03's SDFs) and a second draw with other noise.
    assert (rows[0]["prior_file"], rows[0]["redrawn_file"]) == ("cond-sub03_desc-prior_T1w.nii.gz",
                                                               "cond-sub03_desc-redrawn_T1w.nii.gz")
    from cortexgen.diffusion.data import load_conditions, network_to_image, resize_volume

    trained = load_model(work / "results" / "models" / "bridge" / "model.pt")
    surf = work / "results" / "surfaces" / "sub-03" / "anat"
    files = {f"{surface}sdf": str(surf / f"sub-03_space-MNIColin27_res-{RES}_desc-{surface}_sdf.nii.gz")
             for surface in ("pial", "white")}
    condition = load_conditions(files, ["pialsdf", "whitesdf"], trained.grid, 10.0)[None]
    expected = network_to_image(resize_volume(trained.generator.endpoint(condition)[0], GRID))
    prior = nib.load(samples / "bridge" / rows[0]["prior_file"]).get_fdata()
    assert np.abs(prior - expected).max() < 1e-3 and prior.std() > 0.05
    paths = [samples / "bridge" / f"cond-sub03{desc}_T1w.nii.gz" for desc in ("", "_desc-prior", "_desc-redrawn")] + [
        samples / model / f"sample-{i:04d}_T1w.nii.gz" for model in ("ddpm", "deform", "sdm") for i in (1, 2)]
    for path in paths:
        image = nib.load(path)
        assert image.shape == GRID
        assert np.allclose(image.affine, brain.affine)
        data = image.get_fdata()
        assert data.min() >= 0.0 and data.max() <= 1.0 and np.isfinite(data).all()
    from cortexgen.diffusion.fields import field_array, warp_image

    template = nib.load(work / "results" / "deform" / "tpl-MNIColin27" / f"tpl-MNIColin27_res-{RES}_desc-study_T1w.nii.gz")
    for model in ("deform", "sdm"):
        field = nib.load(samples / model / "sample-0001_from-MNIColin27_desc-displacement_xfm.nii.gz")
        assert field.shape == GRID + (3,)
        with open(samples / model / "samples.tsv") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        # Sampled velocity fields integrated by scaling and squaring: no warp folds.
        assert len(rows) == 2 and all(float(row["folding_fraction"]) == 0.0 for row in rows), (model, rows)
        # A sample is the template warped by the field written beside it.
        expected = warp_image(template.get_fdata(dtype=np.float32), field_array(field), template.affine)
        sample = nib.load(samples / model / "sample-0001_T1w.nii.gz").get_fdata()
        assert np.abs(sample - np.clip(expected, 0, 1)).max() < 1e-5, model
    # The PCA's two samples: its mean velocity plus two different multiples of its one mode.
    first, second = (
        field_array(nib.load(samples / "sdm" / f"sample-000{i}_from-MNIColin27_desc-displacement_xfm.nii.gz"))
        for i in (1, 2))
    assert np.abs(first - second).max() > 0.1


def test_the_deform_template_is_the_training_subjects_average(diffusion_run):
    work, result = diffusion_run.work, diffusion_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    stem = work / "results" / "deform" / "tpl-MNIColin27" / f"tpl-MNIColin27_res-{RES}_desc-study_T1w"
    sources = json.loads(stem.with_suffix(".json").read_text())["Sources"]
    assert sources == [f"bids:preproc:sub-{label}/anat/sub-{label}_space-MNIColin27_res-{RES}_desc-preproc_T1w.nii.gz"
                       for label in ("01", "02")]
    template = nib.load(f"{stem}.nii.gz")
    assert np.allclose(template.affine, diffusion_run.brain.affine)
    data, colin = template.get_fdata(), diffusion_run.brain.get_fdata()
    assert data.min() == 0.0 and data.max() == pytest.approx(1.0)
    # Built, not copied: these "subjects" are Colin27 itself shifted by a voxel and darkened, so
    # their average is near it (measured: 0.007 apart); tests/unit/test_fields.py checks what
    # template building does to images that differ.
    assert 0.002 < np.abs(data - colin).mean() < 0.03


def test_deformation_fields_warp_the_template_towards_each_subject(diffusion_run):
    from cortexgen.diffusion.fields import field_array, warp_image

    work, result = diffusion_run.work, diffusion_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    template = nib.load(work / "results" / "deform" / "tpl-MNIColin27" / f"tpl-MNIColin27_res-{RES}_desc-study_T1w.nii.gz")
    # Training subjects only (sub-03 is held out).
    fields = sorted((work / "results" / "deform").glob("sub-*/anat/*_desc-displacement_xfm.nii.gz"))
    assert [path.name[:6] for path in fields] == ["sub-01", "sub-02"]
    for path in fields:
        label = path.name[4:6]
        subject = nib.load(work / "results" / "preproc" / f"sub-{label}" / "anat"
                           / f"sub-{label}_space-MNIColin27_res-{RES}_desc-preproc_T1w.nii.gz").get_fdata()
        warped = warp_image(torch.from_numpy(template.get_fdata(dtype=np.float32)),
                            torch.from_numpy(field_array(nib.load(path))), template.affine).numpy()
        before = np.abs(template.get_fdata() - subject).mean()
        assert np.abs(warped - subject).mean() < 0.8 * before


def read_metrics(work) -> list[dict]:
    with open(work / "results" / "evaluation" / "metrics.tsv") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_evaluation_table_has_every_generator_and_the_baseline(diffusion_run):
    work, result = diffusion_run.work, diffusion_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    rows = read_metrics(work)
    assert list(rows[0]) == ["generator", "metric", "value", "ci_low", "ci_high", "n", "note"]
    by_key = {(row["generator"], row["metric"]): row for row in rows}
    # Reference 'all' (the demo's): 3 real images; the baseline splits them 2 vs 1.
    for generator in ("ddpm", "deform", "sdm"):
        row = by_key[(generator, "mmd_linear_voxels")]
        value, low, high = (float(row[key]) for key in ("value", "ci_low", "ci_high"))
        assert np.isfinite(value)
        # 2 synthetic images: most bootstrap resamples repeat one, and the row says there is no CI.
        assert (low <= value <= high) if np.isfinite(low) else row["note"].startswith("no CI"), row
        assert row["n"] == "3 vs 2"
        rbf = by_key[(generator, "mmd_rbf_pooled2")]
        assert np.isfinite(float(rbf["value"]))
        # No MedicalNet file configured: FID is not computed, and says why.
        fid = by_key[(generator, "fid_medicalnet")]
        assert np.isnan(float(fid["value"])) and "evaluate.medicalnet.weights" in fid["note"]
        for name in ("ms_ssim_synthetic", "ms_ssim_real"):
            assert 0.0 < float(by_key[(generator, name)]["value"]) <= 1.0
    # The bridge sampled once (the held-out subject): too few for set metrics, said so.
    assert "not computed" in by_key[("bridge", "mmd_rbf_pooled2")]["note"]
    # A half of one image cannot give an unbiased MMD.
    assert "not computed" in by_key[("real_vs_real", "mmd_rbf_pooled2")]["note"]
    # Paired fidelity of the bridge against the held-out subject's real image.
    ssim = float(by_key[("bridge", "paired_ssim")]["value"])
    mae = float(by_key[("bridge", "paired_mae")]["value"])
    assert -1.0 <= ssim <= 1.0 and 0.0 <= mae <= 1.0 and by_key[("bridge", "paired_mae")]["n"] == "1"
    # The same for the prior alone, and the spread of the held-out subject's two draws (other noise).
    assert by_key[("bridge_prior", "paired_psnr")]["n"] == "1"
    assert 0.0 < float(by_key[("bridge_prior", "paired_mae")]["value"]) <= 1.0
    from cortexgen.evaluate.metrics import draw_spread

    bridge = work / "results" / "samples" / "bridge"
    expected = draw_spread(*(nib.load(bridge / f"cond-sub03{desc}_T1w.nii.gz").get_fdata(dtype=np.float32)
                             for desc in ("", "_desc-redrawn")),
                           nib.load(work / "results" / "preproc" / "sub-03" / "anat" /
                                    f"sub-03_space-MNIColin27_res-{RES}_desc-brain_mask.nii.gz").get_fdata() > 0)
    for metric, value in expected.items():
        assert float(by_key[("bridge", f"spread_{metric}")]["value"]) == pytest.approx(value, abs=1e-6), metric
    assert 0.0 <= expected["mae"] <= expected["rms"] <= 1.0
    # The deformation model against its PCA baseline on the same real images: the difference of
    # their RBF MMDs, one kernel for both.
    from cortexgen.evaluate.metrics import SetMetricSettings, mmd_rbf_difference

    versus = by_key[("deform", "mmd_rbf_pooled2_minus_sdm")]
    assert versus["n"] == "3 vs 2 vs 2"
    reference = [np.asarray(nib.load(path).dataobj, dtype=np.float32)
                 for path in sorted((work / "results" / "preproc").glob("sub-*/anat/*_desc-preproc_T1w.nii.gz"))]
    samples = {model: np.stack([nib.load(work / "results" / "samples" / model / f"sample-000{i}_T1w.nii.gz")
                                .get_fdata(dtype=np.float32) for i in (1, 2)]) for model in ("deform", "sdm")}
    expected = mmd_rbf_difference("deform", "sdm", np.stack(reference), samples["deform"], samples["sdm"],
                                  SetMetricSettings(n_resamples=10, feature_pool=2))
    assert float(versus["value"]) == pytest.approx(expected.value, rel=1e-6, abs=1e-9)
    # Every field generator's samples' folding fraction, summarised.
    assert 0.0 <= float(by_key[("deform", "folding_fraction")]["value"]) <= 1.0
    assert float(by_key[("sdm", "folding_fraction")]["value"]) == 0.0
    assert not [row for row in rows if row["metric"] == "failed_job"]


def test_memorisation_check_finds_each_images_nearest_training_image(diffusion_run):
    work, result = diffusion_run.work, diffusion_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    with open(work / "results" / "evaluation" / "memorisation.tsv") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    assert list(table[0]) == ["generator", "image", "nearest_ssim", "nearest_ssim_train", "nearest_corr",
                              "nearest_corr_train"]
    # The held-out subject's real image (the baseline) and every sample of every generator.
    assert [(row["generator"], row["image"]) for row in table] == [
        ("real_held_out", "sub-03"), ("bridge", "cond-sub03"), ("ddpm", "sample-0001"), ("ddpm", "sample-0002"),
        ("deform", "sample-0001"), ("deform", "sample-0002"), ("sdm", "sample-0001"), ("sdm", "sample-0002")]
    for row in table:
        assert -1.0 <= float(row["nearest_ssim"]) <= 1.0 and -1.0 <= float(row["nearest_corr"]) <= 1.0, row
        assert row["nearest_ssim_train"] in ("sub-01", "sub-02") and row["nearest_corr_train"] in ("sub-01", "sub-02")
    # sub-03 is Colin27 shifted by a voxel from sub-02 with another contrast: close to it, not a copy.
    assert table[0]["nearest_ssim_train"] == "sub-02" and 0.5 < float(table[0]["nearest_ssim"]) < 0.999
    metrics = {(row["generator"], row["metric"]): row for row in read_metrics(work)}
    for generator in ("real_held_out", "bridge", "ddpm", "deform", "sdm"):
        for metric in ("nearest_train_ssim", "nearest_train_ssim_median", "nearest_train_ssim_max",
                       "nearest_train_corr", "nearest_train_corr_median", "nearest_train_corr_max"):
            assert np.isfinite(float(metrics[(generator, metric)]["value"])), (generator, metric)
    for generator in ("bridge", "ddpm", "deform", "sdm"):
        above = metrics[(generator, "nearest_train_ssim_above_real")]
        assert 0.0 <= float(above["value"]) <= 1.0 and above["n"].endswith(" vs 1")
    assert float(metrics[("ddpm", "nearest_train_ssim_max")]["value"]) == pytest.approx(
        max(float(row["nearest_ssim"]) for row in table if row["generator"] == "ddpm"))


def test_cycle_consistency_reextracts_the_bridge_sample_and_the_real_image(diffusion_run):
    work, result = diffusion_run.work, diffusion_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = {(r["generator"], r["metric"]): r for r in read_metrics(work)}
    for source, generator in (("bridge", "bridge"), ("real", "real_held_out")):
        folder = work / "results" / "evaluation" / "cycle" / source
        with open(folder / "cond-sub03_cycle.tsv") as handle:
            (row,) = list(csv.DictReader(handle, delimiter="\t"))
        assert row["condition"] == "sub03"
        if row["status"] == "ok":
            # Neither a 4-step bridge nor a 5 mm image gives back the template's cortex exactly.
            assert float(row["white_assd_mm"]) > 0.0 and 0.0 <= float(row["gm_dice"]) <= 1.0
            assert (folder / "cond-sub03_hemi-L_white.surf.gii").exists()
            summary = metrics[(generator, "cycle_white_assd_mm")]
            assert float(summary["value"]) == pytest.approx(float(row["white_assd_mm"])) and summary["n"] == "1"
        else:
            assert row["status"].startswith("failed: ")
            assert "not computed" in metrics[(generator, "cycle_consistency")]["note"]


def test_evaluation_figures_and_json(diffusion_run):
    import json

    work, result = diffusion_run.work, diffusion_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    evaluation = work / "results" / "evaluation"
    document = json.loads((evaluation / "metrics.json").read_text())
    assert len(document["metrics"]) == len(read_metrics(work)) and document["failed_jobs"] == []
    fid = next(m for m in document["metrics"] if m["metric"] == "fid_medicalnet")
    assert fid["value"] is None  # NaN as null: any JSON reader takes the file
    for name in ("metrics", "training", "gallery-bridge", "gallery-ddpm", "gallery-deform", "gallery-sdm"):
        assert (evaluation / "figures" / f"{name}.png").stat().st_size > 10_000


def test_report_gathers_training_galleries_and_metrics(diffusion_run):
    work, result, report = diffusion_run.work, diffusion_run.result, diffusion_run.report
    assert result.returncode == 0, result.stderr[-4000:]
    assert report.returncode == 0, report.stderr[-4000:]
    html = (work / "report.html").read_text()
    # Categories and captions from report/*.rst, and the evaluation's files embedded.
    for text in ("4. Generators", "5. Evaluation", "bootstrap 95% confidence intervals", "metrics.tsv",
                 "gallery-ddpm.png", "gallery-sdm.png", "loss.png", "memorisation.tsv",
                 "A generator that copies its training set", "Training of the sdm generator"):
        assert text in html, text
