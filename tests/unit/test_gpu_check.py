"""benchmarks/gpu_check.py in its tiny CPU version: every section runs and reports (the GPU run is by hand)."""

import json

import nibabel as nib
import numpy as np
import pytest

from benchmarks import gpu_check


def _results(folder, count=4, shape=(16, 16, 16)):
    """A results/ folder laid out as the workflow writes it: preprocessed images, brain masks, surface SDFs."""
    rng = np.random.default_rng(0)
    centre = (np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2.0)
    radius = np.sqrt((centre**2).sum(axis=0))
    for i in range(count):
        anat = f"sub-{i:02d}/anat"
        name = f"sub-{i:02d}_T1w_space-MNIColin27_res-16x16x16"
        image = np.clip(1.0 - radius / 8.0 + rng.normal(0, 0.05, shape), 0, 1)
        files = {f"preproc/{anat}/{name}_desc-preproc_T1w.nii.gz": image,
                 f"preproc/{anat}/{name}_desc-brain_mask.nii.gz": (radius < 6).astype(np.float32),
                 f"surfaces/{anat}/{name}_desc-pial_sdf.nii.gz": radius - 6.0,
                 f"surfaces/{anat}/{name}_desc-white_sdf.nii.gz": radius - 4.0}
        for relative, values in files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(values.astype(np.float32), np.eye(4)), folder / relative)
    return folder


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu_check")
    results = _results(base / "results")
    report = gpu_check.main(["--tiny", "--device", "cpu", "--out", str(base / "out"), "--results", str(results),
                             "--train-s", "2", "--budget-s", "600"])
    return base / "out", report


def test_tiny_check_measures_every_generator_and_the_samplers(tiny_report):
    out, report = tiny_report
    assert json.loads((out / "gpu_check.json").read_text())["device"] == report["device"]
    assert report["device"]["type"] == "cpu" and report["device"]["name"].startswith("cpu")
    for model in gpu_check.MODELS:
        for batch in (1, 2):
            step = report[f"train_step_{model}"][f"batch_{batch}"]
            assert "error" not in step, step
            assert step["volumes_per_second"] > 0 and step["peak_memory_mb"] > 0
    for model in ("bridge", "ddpm"):
        assert report["sampling"][model]["seconds_per_volume"] > 0 and report["sampling"][model]["finite"]
        assert report["sampling"][model]["bf16_autocast"] is False  # CUDA only
    variants = report["variants_bridge"]
    assert variants["channels_last_3d_batch_2"]["volumes_per_second"] > 0
    assert "CUDA only" in variants["flags_off_batch_2"]["skipped"]
    assert "skipped" in variants["torch_compile_batch_2"]


def test_tiny_check_trains_the_bridge_on_the_given_results_and_scores_held_out_subjects(tiny_report):
    out, report = tiny_report
    real = report["real_training"]
    assert "error" not in real, real
    assert real["train_subjects"] == 2 and len(real["held_out"]) == 2 and real["steps"] >= 2
    assert all(-1.0 <= scores["ssim"] <= 1.0 for scores in real["paired"].values())
    assert np.isfinite(real["mean_ssim"]) and np.isfinite(real["final_train_loss"])
    assert (out / "bridge" / "model.pt").is_file()
    assert list((out / "bridge" / "checkpoints" / "data").glob("images-*.npy"))  # trained from the disk cache
    assert (out / "gallery.png").stat().st_size > 0 and report["gallery"] == str(out / "gallery.png")


def test_without_results_the_check_says_so_and_still_draws_a_gallery(tmp_path):
    report = gpu_check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--batches", "1",
                             "--steps", "1", "--ddim-steps", "2", "--budget-s", "0"])
    assert "no --results" in report["real_training"]["skipped"]
    # A zero budget skips every measurement with the reason, and the JSON and the gallery are still written.
    assert "time budget" in report["train_step_bridge"]["batch_1"]["skipped"]
    assert (tmp_path / "gallery.png").is_file() and (tmp_path / "gpu_check.json").is_file()
