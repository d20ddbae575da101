"""profiles/slurm: only the rules a retry can help are retried, with more memory each attempt."""

from __future__ import annotations

import subprocess
import sys

import yaml

from cortexgen.diffusion.registry import GENERATORS
from tests.conftest import REPO

#: Rules profiles/slurm retries -> the text of their memory request: config resources x attempt
#: (training: resources.train_<model> of the job's generator; sampling: one rule per generator).
RETRYABLE = {
    "train_generator": 'mem_mb=retry_mem_mb("train_{model}")',
    **{f"sample_{model}": 'mem_mb=retry_mem_mb(f"sample_{model}")' for model in GENERATORS},
    "subject_shard": 'mem_mb=retry_mem_mb("subject_shard")',
}


def _profile(name="slurm") -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def _rule_names() -> set[str]:
    """The workflow's rules, as Snakemake lists them (the sampling rules are made in a loop)."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_slurm_profile_retries_only_training_sampling_and_shards():
    profile = _profile()
    assert profile["retries"] == 0
    assert set(profile["preemptible-rules"]) == set(RETRYABLE)
    assert profile["preemptible-retries"] >= 1
    assert set(RETRYABLE) <= _rule_names()


def test_retryable_rules_ask_for_more_memory_each_attempt():
    text = "\n".join(path.read_text() for path in (REPO / "rules").glob("*.smk"))
    for rule, request in RETRYABLE.items():
        assert request in text, rule


def test_snakemake_honours_the_profiles_retry_keys(tmp_path):
    """The keys above, run by the installed Snakemake (9.27) on a two-rule workflow: the listed
    rule is retried with mem_mb x attempt, the other fails once."""
    (tmp_path / "Snakefile").write_text(
        'rule all:\n    input: "a.txt", "b.txt"\n'
        "rule train_generator:\n    output: \"a.txt\"\n"
        "    resources: mem_mb=lambda wildcards, attempt: 1000 * attempt\n"
        '    shell: "echo {resources.mem_mb} >> a.log; test $(wc -l < a.log) -ge 3 && touch {output}"\n'
        "rule denoise:\n    output: \"b.txt\"\n"
        '    shell: "echo x >> b.log; exit 1"\n'
    )
    keys = {key: _profile()[key] for key in ("retries", "preemptible-rules", "preemptible-retries")}
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump({**keys, "cores": 1, "keep-going": True}))
    subprocess.run([sys.executable, "-m", "snakemake", "--profile", str(profile), "--quiet"], cwd=tmp_path,
                   capture_output=True, timeout=120)
    assert (tmp_path / "a.log").read_text().split() == ["1000", "2000", "3000"]
    assert (tmp_path / "b.log").read_text().split() == ["x"]
