"""How the workflow's DAG scales with the number of subjects; prints JSON.

    python benchmarks/dag_scale.py --subjects 1000 10000 33000 --subjects-per-shard 100
    python benchmarks/dag_scale.py --subjects 33000 --subjects-per-shard unset   # shipped config, no key

For each N: a BIDS tree of N zero-byte T1w files (sub-00001 ... ) in a temporary folder, then
``snakemake --dry-run`` of the whole workflow on it (the shipped config, bids_dir pointed at
the tree, config sharding.subjects_per_shard set as given: 0 = one job per subject and step,
N, auto, ``shipped`` = as config/config.yaml has it, ``unset`` = the sharding key removed, so
the schema's default applies),
timed, with the peak resident memory of the snakemake process and its children
(sampled every 50 ms). Nothing is run: a dry-run only builds the DAG, which is what a cohort
of UK-Biobank size pays before its first job starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def make_bids(root: Path, n_subjects: int) -> Path:
    """A BIDS folder of ``n_subjects`` subjects, each one empty T1w file."""
    bids = root / "bids"
    for index in range(1, n_subjects + 1):
        label = f"{index:05d}"
        anat = bids / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{label}_T1w.nii.gz").touch()
    (bids / "dataset_description.json").write_text('{"Name": "dag scale", "BIDSVersion": "1.8.0"}')
    return bids


def shard_setting(value: str) -> int | str:
    """--subjects-per-shard: an integer >= 0, or auto, shipped, unset."""
    if value in ("auto", "shipped", "unset"):
        return value
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("an integer >= 0, auto, shipped or unset")
    return number


def dry_run(bids: Path, workdir: Path, subjects_per_shard: int | str, timeout_s: float | None = None) -> dict:
    """Seconds, peak RSS (MB, process tree) and job count of ``snakemake --dry-run`` on ``bids``.

    Past ``timeout_s`` the dry-run is killed and reported with ``timed_out`` (its peak so far)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["bids_dir"] = str(bids)
    if subjects_per_shard == "unset":
        config.pop("sharding", None)
    elif subjects_per_shard != "shipped":
        config.setdefault("sharding", {})["subjects_per_shard"] = subjects_per_shard
    # The shipped config's template paths are relative to the repository, not to workdir.
    for key in ("template", "template_brain_mask"):
        config["preprocess"][key] = str(REPO / config["preprocess"][key])
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config_path), "--dry-run", "--quiet", "rules"]
    start = time.perf_counter()
    process = psutil.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    timed_out = False
    while process.poll() is None:
        if timeout_s is not None and time.perf_counter() - start > timeout_s:
            for child in process.children(recursive=True):
                child.kill()
            process.kill()
            timed_out = True
            break
        try:
            tree = [process] + process.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    stdout, stderr = process.communicate()
    if timed_out:
        return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak, 1), "jobs": 0, "timed_out": True}
    if process.returncode != 0:
        raise RuntimeError(f"dry-run failed for {bids}:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    jobs = 0
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            jobs = int(parts[1])
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak, 1), "jobs": jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=[1000, 10000, 33000])
    parser.add_argument("--subjects-per-shard", type=shard_setting, default="shipped",
                        help="config sharding.subjects_per_shard: 0 (one job per subject and step), N, auto, "
                             "shipped (as config/config.yaml has it; the default) or unset (key removed)")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="kill a dry-run after this many seconds and report its peak memory so far")
    args = parser.parse_args()
    results = []
    for n in args.subjects:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            start = time.perf_counter()
            bids = make_bids(root, n)
            entry = {"subjects": n, "subjects_per_shard": args.subjects_per_shard,
                     "make_bids_seconds": round(time.perf_counter() - start, 1)}
            entry.update(dry_run(bids, root / "work", args.subjects_per_shard, args.timeout_s))
            if entry["jobs"]:
                entry["ms_per_job"] = round(1000 * entry["seconds"] / entry["jobs"], 2)
                entry["kb_per_job"] = round(1024 * entry["peak_rss_mb"] / entry["jobs"], 1)
        print(json.dumps(entry), file=sys.stderr, flush=True)
        results.append(entry)
    print(json.dumps({"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                      "goal": "33000 subjects: dry-run <= 30 s and <= 1 GB", "results": results}, indent=2))


if __name__ == "__main__":
    main()
