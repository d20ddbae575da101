"""Discovery of T1w scans in a large BIDS folder: cortexgen.bids vs pybids vs bids2table; prints JSON.

    python benchmarks/discovery.py --subjects 3300 33000 --libraries cortexgen bids2table pybids

For each N: a BIDS tree of N subjects with one zero-byte T1w each (as benchmarks/dag_scale.py),
then each library's discovery in its own process, timed, with that process's peak RSS
(ru_maxrss, which includes the imports). A library that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dag_scale import make_bids  # noqa: E402

CODE = {
    "cortexgen": "from cortexgen.bids import discover_scans\nn = len(discover_scans(root))",
    "bids2table": "from bids2table import index_dataset\n"
                  "table = index_dataset(root)\n"
                  "n = sum(1 for s, e in zip(table['suffix'].to_pylist(), table['ext'].to_pylist()) "
                  "if s == 'T1w' and e in ('.nii', '.nii.gz'))",
    "pybids": "from bids import BIDSLayout, BIDSLayoutIndexer\n"
              "layout = BIDSLayout(root, validate=False, "
              "indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))\n"
              "n = len(layout.get(suffix='T1w', extension=['.nii', '.nii.gz'], return_type='filename'))",
}


def measure(library: str, root: Path, timeout: float) -> dict:
    script = (f"import json, resource, sys, time\nroot = {str(root)!r}\nstart = time.perf_counter()\n"
              f"{CODE[library]}\n"
              "print(json.dumps({'seconds': round(time.perf_counter() - start, 2), 'images': n, "
              "'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))")
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"library": library, "error": f"did not finish in {timeout:.0f} s"}
    if done.returncode != 0:
        return {"library": library, "error": done.stderr.strip().splitlines()[-1][:300]}
    return {"library": library, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=[3300, 33000])
    parser.add_argument("--libraries", nargs="+", default=list(CODE), choices=list(CODE))
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    results = []
    for n in args.subjects:
        with tempfile.TemporaryDirectory() as tmp:
            bids = make_bids(Path(tmp), n)
            for library in args.libraries:
                entry = {"subjects": n, **measure(library, bids, args.timeout)}
                print(json.dumps(entry), file=sys.stderr, flush=True)
                results.append(entry)
    print(json.dumps({"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                      "goal": "33000 subjects: the whole dry-run <= 30 s and <= 1 GB", "results": results}, indent=2))


if __name__ == "__main__":
    main()
