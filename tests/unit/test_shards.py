"""cortexgen.shards and runtime.job_inputs: the pieces a sharded run is made of."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest

from cortexgen.runtime import job_inputs
from cortexgen.shards import (
    complete_indices,
    first_failure,
    inner_run_command,
    inner_run_environment,
    select,
    subject_paths,
    subject_status,
)

PATTERNS = {
    "targets": ["results/qc/{scan}_preproc.png"],
    "train_targets": ["results/deform/{subdir}/anat/{scan}_field.nii.gz"],
    "outputs": ["results/preproc/{subdir}/anat/{scan}_T1w.nii.gz"],
    "logs": ["logs/denoise/{subdir}/{scan}.log", "logs/n4/{subdir}/{scan}.log"],
}


def test_subject_paths_fill_patterns_and_add_training_files_only_for_training_subjects():
    held_out = {"scan": "sub-02_ses-1", "subdir": "sub-02/ses-1", "train": False}
    trains = {"scan": "sub-01", "subdir": "sub-01", "train": True}
    assert subject_paths(PATTERNS, held_out, "targets") == ["results/qc/sub-02_ses-1_preproc.png"]
    assert subject_paths(PATTERNS, trains, "targets") == [
        "results/qc/sub-01_preproc.png", "results/deform/sub-01/anat/sub-01_field.nii.gz"]
    assert subject_paths(PATTERNS, held_out, "logs") == ["logs/denoise/sub-02/ses-1/sub-02_ses-1.log",
                                                         "logs/n4/sub-02/ses-1/sub-02_ses-1.log"]


def test_inner_run_is_an_argument_list_that_never_goes_through_a_shell(tmp_path):
    targets = ["results/qc/sub-01_preproc.png", "results/qc/sub-0$(rm -rf x)_preproc.png"]
    command = inner_run_command("Snakefile", tmp_path, tmp_path / "config.yaml", 4, 8000, targets)
    assert command[:3] == [sys.executable, "-m", "snakemake"]
    assert command[command.index("--cores") + 1] == "4"
    assert command[command.index("--resources") + 1] == "mem_mb=8000"
    for flag in ("--nolock", "--keep-going", "--rerun-incomplete"):
        assert flag in command
    assert command[command.index("--workflow-profile") + 1] == "none"
    # Targets come last, after '--', each one argument whatever it contains.
    assert command[-3:] == ["--", *targets]


def test_inner_run_environment_drops_the_submitting_profile():
    environment = inner_run_environment({"SNAKEMAKE_PROFILE": "profiles/slurm", "PATH": "/bin"})
    assert environment == {"PATH": "/bin"}


def test_subject_status_is_ok_only_when_every_output_exists(tmp_path):
    outputs = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    logs = [tmp_path / "denoise.log", tmp_path / "n4.log"]
    outputs[0].touch()
    # Nothing logged a failure: the first missing output is the reason.
    assert subject_status(outputs, logs) == f"failed: {outputs[1]} was not made"
    logs[1].write_text("2026 INFO started\n2026 ERROR FAILED: sub-01_T1w.nii.gz: not a NIfTI file\n")
    assert subject_status(outputs, logs) == f"failed: {logs[1]}: sub-01_T1w.nii.gz: not a NIfTI file"
    # The first failing step (in step order) is the one reported.
    logs[0].write_text("FAILED: the first\n")
    assert first_failure(logs) == f"{logs[0]}: the first"
    outputs[1].touch()
    assert subject_status(outputs, logs) == "ok"


def test_complete_indices_keep_a_subject_only_if_all_its_files_exist(tmp_path, caplog):
    images = [str(tmp_path / f"img{k}.nii.gz") for k in range(4)]
    sdfs = [str(tmp_path / f"sdf{k}.nii.gz") for k in range(4)]
    for k in (0, 1, 3):
        open(images[k], "w").close()
    for k in (0, 2, 3):
        open(sdfs[k], "w").close()
    log = logging.getLogger("test_shards")
    with caplog.at_level(logging.WARNING, logger="test_shards"):
        keep = complete_indices({"images": images, "sdfs": sdfs}, log)
    assert keep == [0, 3]
    assert select(["a", "b", "c", "d"], keep) == ["a", "d"]
    assert sdfs[1] in caplog.text and images[2] in caplog.text
    assert complete_indices({}, log) == []
    with pytest.raises(ValueError, match="differ in length"):
        complete_indices({"images": images, "sdfs": sdfs[:3]})


class FakeNamedList(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def test_job_inputs_merge_declared_inputs_and_sharded_subject_files():
    unsharded = SimpleNamespace(input=FakeNamedList(images=["a", "b"], model="m.pt"),
                                params=FakeNamedList(subject_files={}))
    inputs = job_inputs(unsharded)
    assert inputs.images == ["a", "b"] and inputs["model"] == "m.pt"
    sharded = SimpleNamespace(input=FakeNamedList(shards=["results/shards/shard-0001.tsv"], model="m.pt"),
                              params=FakeNamedList(subject_files={"images": ["a", "b"]}))
    inputs = job_inputs(sharded)
    assert dict(inputs) == {"model": "m.pt", "images": ["a", "b"]}
    with pytest.raises(AttributeError):
        inputs.shards
    # A rule without the param (no per-subject files) gets its inputs as they are.
    plain = SimpleNamespace(input=FakeNamedList(model="m.pt"), params=FakeNamedList())
    assert dict(job_inputs(plain)) == {"model": "m.pt"}


def test_auto_sharding_keeps_small_cohorts_unsharded_and_shards_large_ones():
    from cortexgen.shards import AUTO_MAX_UNSHARDED, AUTO_SUBJECTS_PER_SHARD, subjects_per_shard

    assert subjects_per_shard("auto", 3) == 0
    assert subjects_per_shard("auto", AUTO_MAX_UNSHARDED) == 0
    assert subjects_per_shard("auto", AUTO_MAX_UNSHARDED + 1) == AUTO_SUBJECTS_PER_SHARD
    assert subjects_per_shard("auto", 33000) == AUTO_SUBJECTS_PER_SHARD
    # An integer is taken as given, whatever the cohort's size.
    assert subjects_per_shard(0, 33000) == 0
    assert subjects_per_shard(7, 3) == 7
    for bad in ("many", -1, 2.5, True):
        with pytest.raises(ValueError, match="subjects_per_shard"):
            subjects_per_shard(bad, 10)


def test_make_shards_chunks_in_order_with_zero_padded_labels():
    from cortexgen.shards import make_shards

    assert make_shards(["a", "b", "c"], 0) == {}
    assert make_shards(["a", "b", "c", "d", "e"], 2) == {"0001": ["a", "b"], "0002": ["c", "d"], "0003": ["e"]}
    shards = make_shards(list(range(33000)), 100)
    assert len(shards) == 330 and list(shards)[0] == "0001" and shards["0330"] == list(range(32900, 33000))
    assert list(make_shards(list(range(10001)), 1)).pop() == "10001"


def test_shipped_config_and_schema_default_to_auto_and_the_schema_takes_integers_or_auto():
    from pathlib import Path

    import jsonschema
    import yaml

    root = Path(__file__).resolve().parents[2]
    schema = yaml.safe_load((root / "config" / "schema.yaml").read_text())
    setting = schema["properties"]["sharding"]["properties"]["subjects_per_shard"]
    assert setting["default"] == "auto"
    assert yaml.safe_load((root / "config" / "config.yaml").read_text())["sharding"]["subjects_per_shard"] == "auto"
    for good in ("auto", 0, 100):
        jsonschema.validate(good, setting)
    for bad in ("many", -1, 2.5):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, setting)
