"""The BIDS-App command and profiles by name, from a directory that is not the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from tests.conftest import DEMO_BIDS, REPO


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), **extra)
    return env


def _cli(cwd, *args, **env):
    return subprocess.run([sys.executable, "-m", "cortexgen.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=_env(**env))


def test_console_script_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["cortexgen"] == "cortexgen.cli:main"


def test_participant_and_group_dry_runs_from_another_directory(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    participant = _cli(elsewhere, str(DEMO_BIDS), str(out), "participant", "--participant-label", "sub-01", "02",
                       "--dry-run", "--cores", "1")
    assert participant.returncode == 0, participant.stderr[-3000:]
    assert "2 subjects, 2 T1w images" in participant.stderr
    assert f"{out}/results" not in participant.stdout  # paths are relative to OUTPUT_DIR
    assert "results/preproc/sub-01/anat/" in participant.stdout and "sub-03" not in participant.stdout
    assert "rule train_generator" not in participant.stdout and "rule dataset_description" in participant.stdout

    group = _cli(elsewhere, str(DEMO_BIDS), str(out), "group", "--dry-run", "--", "--quiet", "rules")
    assert group.returncode == 0, group.stderr[-3000:]
    assert "train_generator" in group.stdout and "evaluate" in group.stdout
    assert not (elsewhere / ".snakemake").exists()


def test_profiles_by_name_after_install(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    env_no_xdg = {key: value for key, value in _env(**env).items() if key != "XDG_CONFIG_HOME"}
    installed = subprocess.run([sys.executable, "-m", "cortexgen.cli", "--install-profiles"], capture_output=True,
                               text=True, timeout=60, env=env_no_xdg, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert (home / ".config" / "snakemake" / "slurm" / "config.yaml").is_file()
    # `snakemake --profile slurm`, as typed, from a directory without a profiles/ folder.
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                             "--profile", "slurm", "--dry-run", "--quiet", "rules"],
                            capture_output=True, text=True, timeout=300, env=env_no_xdg, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "preprocess" in result.stdout
