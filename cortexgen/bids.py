"""Finding T1-weighted scans in a BIDS folder.

A *scan* is one T1w image of one subject (and session, if the dataset has sessions).
Labels must be ``[A-Za-z0-9]+`` as BIDS requires; anything else is refused up front,
before any job runs, because labels become file names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cortexgen.errors import SubjectIdError

LABEL_PATTERN = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Scan:
    """One T1w scan found in a BIDS folder.

    Attributes:
        subject: the subject label without ``sub-`` (``"01"``).
        session: the session label without ``ses-``, or ``None``.
        path: the T1w file, which may be missing (a dangling DataLad/git-annex link).
    """

    subject: str
    session: str | None
    path: Path

    @property
    def prefix(self) -> str:
        """File-name prefix of every derivative: ``sub-01`` or ``sub-01_ses-1``."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def subdir(self) -> str:
        """Folder of the derivatives: ``sub-01`` or ``sub-01/ses-1``."""
        return f"sub-{self.subject}" + (f"/ses-{self.session}" if self.session else "")


def check_label(label: str, what: str, where: str | Path) -> str:
    """Return ``label`` if it is a valid BIDS label, else raise :class:`SubjectIdError`."""
    if not LABEL_PATTERN.match(label):
        raise SubjectIdError(
            f"{where}: {what} label {label!r} is not allowed; BIDS labels must match [A-Za-z0-9]+ "
            "(letters and digits only). Rename the folder or leave it out with the 'participants' config key."
        )
    return label


def _pick_t1w(anat: Path) -> Path | None:
    """The T1w of one anat/ folder; several runs/acquisitions: the first in sorted order."""
    candidates = sorted(
        p for p in anat.iterdir() if p.name.endswith(("_T1w.nii.gz", "_T1w.nii")) and not p.name.startswith(".")
    )
    return candidates[0] if candidates else None


def discover_scans(bids_dir: str | Path, participants: list[str] | None = None) -> list[Scan]:
    """Find every ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` under ``bids_dir``.

    Args:
        bids_dir: the root of a BIDS dataset.
        participants: labels to keep (with or without ``sub-``); ``None`` or empty keeps all.
            A listed participant with no T1w is an error: the list is meant to be exact.

    Returns:
        Scans sorted by subject then session.

    Raises:
        FileNotFoundError: ``bids_dir`` is not a folder.
        SubjectIdError: a subject/session folder label is not ``[A-Za-z0-9]+``, or a
            listed participant has no T1w scan.
    """
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise FileNotFoundError(f"{bids_dir}: BIDS folder not found (config key 'bids_dir')")
    wanted = None
    if participants:
        wanted = {p.removeprefix("sub-") for p in participants}
        for label in wanted:
            check_label(label, "participant", "config 'participants'")

    scans: list[Scan] = []
    for sub_dir in sorted(p for p in bids_dir.glob("sub-*") if p.is_dir()):
        subject = sub_dir.name.removeprefix("sub-")
        if wanted is not None and subject not in wanted:
            continue
        check_label(subject, "subject", sub_dir)
        session_dirs = sorted(p for p in sub_dir.glob("ses-*") if p.is_dir())
        if session_dirs:
            for ses_dir in session_dirs:
                session = check_label(ses_dir.name.removeprefix("ses-"), "session", ses_dir)
                anat = ses_dir / "anat"
                t1w = _pick_t1w(anat) if anat.is_dir() else None
                if t1w is not None:
                    scans.append(Scan(subject, session, t1w))
        else:
            anat = sub_dir / "anat"
            t1w = _pick_t1w(anat) if anat.is_dir() else None
            if t1w is not None:
                scans.append(Scan(subject, None, t1w))

    if wanted is not None:
        missing = sorted(wanted - {s.subject for s in scans})
        if missing:
            raise SubjectIdError(
                f"{bids_dir}: participants {', '.join('sub-' + m for m in missing)} are listed in config "
                "'participants' but have no anat/*_T1w.nii[.gz]"
            )
    return scans
