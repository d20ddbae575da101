"""The official BIDS validator on a cortexgen results/ folder, for the tests.

``bids-validator-deno`` (PyPI) is the validator's JavaScript bundle with a launcher, and pulls
in ``deno`` (PyPI), the runtime that runs it; both install offline from wheels, and the
validator reads its schema from the bundle (no network).

results/ is one BIDS-derivative dataset, but each stage keeps its subjects one folder down
(results/preproc/sub-01/anat/...), while the validator wants sub-*/ at the dataset's root: it
rejects every file there for its location, whatever its name. To check names and sidecars,
:func:`validate` runs on a copy in which the stages' sub-*/ and tpl-*/ folders are merged at
the root (one dataset, as fMRIPrep's); everything else keeps its place, where results/.bidsignore
applies to it as it does in results/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

VALIDATOR = shutil.which("bids-validator-deno")
UNAVAILABLE = None if VALIDATOR else (
    "bids-validator-deno is not installed (the official BIDS validator: `pip install bids-validator-deno`, "
    "or the test extra, `pip install -e .[test]`)"
)


def merged_copy(results: Path, root: Path) -> Path:
    """``results`` copied (hard links where possible) to ``root``, with every ``<stage>/sub-*/`` and
    ``<stage>/tpl-*/`` folder moved up to the root."""
    for path in sorted(results.rglob("*")):
        if path.is_dir():
            continue
        parts = path.relative_to(results).parts
        relative = Path(*parts[1:]) if len(parts) > 2 and re.match(r"(sub|tpl)-", parts[1]) else Path(*parts)
        target = root / relative
        if target.exists():
            raise ValueError(f"two stages write {relative}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    return root


def run_validator(root: Path, ignore_codes=(), nifti_headers: bool = True) -> dict:
    """The validator's JSON report on the dataset at ``root``: {"issues": {"issues": [...]}, "summary": {...}}.

    ``ignore_codes``: issue codes the validator drops (its config file's ``ignore``);
    ``nifti_headers``: False skips the NIfTI header checks (placeholder files).
    """
    config = root.with_name(root.name + "-validator.json")
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


def validate(results: Path, root: Path, ignore_codes=(), nifti_headers: bool = True) -> dict:
    """:func:`run_validator` on a merged copy (:func:`merged_copy`) of ``results`` made at ``root``."""
    return run_validator(merged_copy(results, root), ignore_codes, nifti_headers)


def issues(report: dict, severity: str = "error") -> list[str]:
    """``report``'s issues of one severity as 'CODE location (message)' lines, sorted."""
    lines = set()
    for issue in report["issues"]["issues"]:
        if issue["severity"] == severity:
            detail = issue.get("subCode") or issue.get("issueMessage", "")
            lines.add(f"{issue['code']} {issue.get('location', '')} {detail.splitlines()[0] if detail else ''}".strip())
    return sorted(lines)
