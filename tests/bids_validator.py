"""The official BIDS validator on the derivative datasets of a cortexgen results/ folder, for the tests.

``bids-validator-deno`` (PyPI) is the validator's JavaScript bundle with a launcher, and pulls
in ``deno`` (PyPI), the runtime that runs it; both install offline from wheels, and the
validator reads its schema from the bundle (no network).

Each stage folder of results/ that holds subjects (preproc, surfaces, deform) is a dataset of its
own, with sub-*/ at its root, its dataset_description.json and .bidsignore: the validator runs on
each as it is (:func:`derivative_datasets`, :func:`run_validator`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

VALIDATOR = shutil.which("bids-validator-deno")
UNAVAILABLE = None if VALIDATOR else (
    "bids-validator-deno is not installed (the official BIDS validator: `pip install bids-validator-deno`, "
    "or the test extra, `pip install -e .[test]`)"
)


def derivative_datasets(results: Path) -> list[Path]:
    """The folders of ``results`` that hold subjects (a ``sub-<label>/`` folder), sorted: each
    should be a BIDS dataset of its own."""
    return sorted(folder for folder in results.iterdir()
                  if folder.is_dir() and any(re.fullmatch(r"sub-[A-Za-z0-9]+", child.name) and child.is_dir()
                                             for child in folder.iterdir()))


def run_validator(root: Path, ignore_codes=(), nifti_headers: bool = True) -> dict:
    """The validator's JSON report on the dataset at ``root``: {"issues": {"issues": [...]}, "summary": {...}}.

    ``ignore_codes``: issue codes the validator drops (its config file's ``ignore``);
    ``nifti_headers``: False skips the NIfTI header checks (placeholder files).
    """
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "validator.json"
        config.write_text(json.dumps({"ignore": [{"code": code} for code in ignore_codes]}))
        command = [VALIDATOR, "--format", "json", "--config", str(config), str(root)]
        if not nifti_headers:
            command.insert(1, "--ignoreNiftiHeaders")
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"the validator exited {result.returncode} without a report:\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}") from None


def issues(report: dict, severity: str = "error") -> list[str]:
    """``report``'s issues of one severity as 'CODE location (message)' lines, sorted."""
    lines = set()
    for issue in report["issues"]["issues"]:
        if issue["severity"] == severity:
            detail = issue.get("subCode") or issue.get("issueMessage", "")
            lines.add(f"{issue['code']} {issue.get('location', '')} {detail.splitlines()[0] if detail else ''}".strip())
    return sorted(lines)


def issue_codes(report: dict, severity: str = "warning") -> list[str]:
    """The codes of ``report``'s issues of one severity, sorted, once each."""
    return sorted({issue["code"] for issue in report["issues"]["issues"] if issue["severity"] == severity})


def resolve_bids_uri(uri: str, dataset: Path) -> Path:
    """The file a BIDS URI (``bids:<name>:<path>``) in the dataset at ``dataset`` names: ``bids::``
    is that dataset, any other name is looked up in its dataset_description.json's DatasetLinks
    (a file:// URI, or a path relative to the dataset's root)."""
    match = re.fullmatch(r"bids:([^:]*):(.*)", uri)
    if not match:
        raise ValueError(f"{uri} is no BIDS URI")
    name, path = match.groups()
    if not name:
        return dataset / path
    links = json.loads((dataset / "dataset_description.json").read_text()).get("DatasetLinks", {})
    if name not in links:
        raise ValueError(f"{uri}: {dataset}/dataset_description.json has no DatasetLinks entry {name!r}")
    link = links[name]
    root = Path(unquote(urlsplit(link).path)) if link.startswith("file:") else dataset / link
    return root / path
