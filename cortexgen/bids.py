"""Finding T1-weighted scans in a BIDS folder.

A *scan* is one T1w image: one subject, and the session, acquisition, run (and any other
entity BIDS allows on a T1w) its file name carries. Every entity becomes part of every
derivative's name, so two runs give two output sets, never one picked by sort order.

Nothing here refuses a cohort for one bad folder: a subject folder with an invalid label,
without anat/, without a T1w NIfTI, or behind a symlink loop is skipped and listed with the
reason (:class:`Discovery`). Only mistakes in the configuration itself (an invalid label in
``participants``) are errors, and the workflow refuses to start only if no scan is left.

Hand-written on purpose, by measurement (benchmarks/discovery.py; 33,000 subjects, one T1w
each, 2-core machine shared with other work; time and peak RSS of the discovering process):
this module's ``os.scandir`` walk 1.2 s, 43 MB; pybids 0.22 (validate and metadata off)
23 s, 275 MB; bids2table 2.3 17.5 s, 1.66 GB. The whole dry-run of such a cohort must stay
within 30 s and 1 GB, and the DAG alone takes about 7 s of that: pybids would leave no margin,
bids2table breaks the memory budget by itself.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cortexgen.errors import SubjectIdError

LABEL_PATTERN = re.compile(r"^[A-Za-z0-9]+$")
#: Entities BIDS allows in a T1w file name after sub and ses, in the order BIDS writes them.
T1W_ENTITIES = ("task", "acq", "ce", "rec", "run", "echo", "flip", "inv", "mt", "part", "chunk")
#: Extensions of the images read; the .nii.gz wins when both exist for one name.
IMAGE_EXTENSIONS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Scan:
    """One T1w image found in a BIDS folder.

    Attributes:
        subject: the subject label without ``sub-`` (``"01"``).
        session: the session label without ``ses-``, or ``None``.
        path: the T1w file, which may be missing (a dangling DataLad/git-annex link).
        entities: the file name's other entities in BIDS order, e.g. ``(("acq", "mprage"), ("run", "2"))``.
    """

    subject: str
    session: str | None
    path: Path
    entities: tuple[tuple[str, str], ...] = ()

    @property
    def prefix(self) -> str:
        """File-name prefix of every derivative: ``sub-01``, ``sub-01_ses-1_acq-fast_run-2``."""
        parts = [f"sub-{self.subject}"] + ([f"ses-{self.session}"] if self.session else [])
        return "_".join(parts + [f"{key}-{value}" for key, value in self.entities])

    @property
    def subdir(self) -> str:
        """Folder of the derivatives: ``sub-01`` or ``sub-01/ses-1``."""
        return f"sub-{self.subject}" + (f"/ses-{self.session}" if self.session else "")


@dataclass(frozen=True)
class Skipped:
    """A folder or file that was not used, and why (e.g. ``"no anat/ folder"``)."""

    path: str
    reason: str


@dataclass
class Discovery:
    """What a BIDS folder holds: the scans to process and everything left out, with reasons."""

    bids_dir: Path
    scans: list[Scan] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: Subjects participants.tsv lists that have no folder on disk.
    missing_on_disk: list[str] = field(default_factory=list)

    @property
    def subjects(self) -> list[str]:
        """Labels of the subjects with at least one scan, in scan order."""
        return list(dict.fromkeys(scan.subject for scan in self.scans))

    def summary(self, max_listed: int = 30) -> str:
        """A few lines for a person: counts, then each thing skipped with its reason (at most
        ``max_listed`` of them, then the count per reason)."""
        lines = [f"cortexgen: {self.bids_dir}: {len(self.subjects)} subjects, {len(self.scans)} T1w images"
                 f"{', ' + str(len(self.skipped)) + ' skipped' if self.skipped else ''}"]
        for item in self.skipped[:max_listed]:
            lines.append(f"  skipped {item.path}: {item.reason}")
        if len(self.skipped) > max_listed:
            counts = Counter(item.reason.split(":")[0] for item in self.skipped[max_listed:])
            lines.append(f"  ... and {len(self.skipped) - max_listed} more: "
                         + "; ".join(f"{count} x {reason}" for reason, count in counts.most_common()))
        if self.missing_on_disk:
            shown = ", ".join(f"sub-{label}" for label in self.missing_on_disk[:max_listed])
            more = len(self.missing_on_disk) - max_listed
            lines.append(f"  participants.tsv lists {len(self.missing_on_disk)} subjects with no folder: {shown}"
                         + (f" ... and {more} more" if more > 0 else ""))
        return "\n".join(lines)


def check_label(label: str, what: str, where: str | Path) -> str:
    """Return ``label`` if it is a valid BIDS label, else raise :class:`SubjectIdError`."""
    if not LABEL_PATTERN.match(label):
        raise SubjectIdError(
            f"{where}: {what} label {label!r} is not allowed; BIDS labels must match [A-Za-z0-9]+ "
            "(letters and digits only)."
        )
    return label


def parse_t1w_name(name: str) -> dict[str, str] | None:
    """The entities of a ``*_T1w.nii[.gz]`` file name ({"sub": "01", "run": "2", ...}), or ``None``
    if it is not one (another suffix or extension, a hidden file, a malformed entity)."""
    if name.startswith("."):
        return None
    for extension in IMAGE_EXTENSIONS:
        if name.endswith("_T1w" + extension):
            stem = name[: -len("_T1w" + extension)]
            break
    else:
        return None
    entities = {}
    for part in stem.split("_"):
        key, sep, value = part.partition("-")
        if not sep or not LABEL_PATTERN.match(value) or key in entities:
            return {}
        entities[key] = value
    return entities


def read_participants_tsv(bids_dir: Path) -> list[str] | None:
    """Subject labels in ``participants.tsv`` (column participant_id), or ``None`` without the file."""
    path = bids_dir / "participants.tsv"
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [row["participant_id"].strip().removeprefix("sub-") for row in rows
                if (row.get("participant_id") or "").strip()]


def _entries(folder: str) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted(it, key=lambda entry: entry.name)


def _is_dir(entry: os.DirEntry) -> bool | None:
    """True/False, or None for a link that leads nowhere (dangling, or a loop)."""
    try:
        if entry.is_dir():
            return True
        if entry.is_symlink():
            os.stat(entry.path)  # raises for a loop or a dangling link
        return False
    except OSError:
        return None


def _anat_scans(anat: str, subject: str, session: str | None, out: Discovery) -> list[Scan]:
    """The T1w images of one anat/ folder; everything that looks like one but is not usable is listed."""
    found: dict[tuple, Scan] = {}
    others = []
    for entry in _entries(anat):
        entities = parse_t1w_name(entry.name)
        if entities is None:
            if not entry.name.startswith("."):
                others.append(entry.name)
            continue
        where = os.path.join(anat, entry.name)
        if not entities:
            out.skipped.append(Skipped(where, "not a valid BIDS file name (entities must be key-label, "
                                              "labels [A-Za-z0-9]+)"))
            continue
        if entities.get("sub") != subject or entities.get("ses") != session:
            out.skipped.append(Skipped(where, f"its sub/ses entities do not match its folder (sub-{subject}"
                                              + (f"/ses-{session}" if session else "") + ")"))
            continue
        extra = [key for key in entities if key not in ("sub", "ses") and key not in T1W_ENTITIES]
        if extra:
            out.skipped.append(Skipped(where, f"entities {extra} are not allowed on a T1w"))
            continue
        rest = tuple((key, entities[key]) for key in T1W_ENTITIES if key in entities)
        scan = Scan(subject, session, Path(where), rest)
        if scan.prefix in found:  # x.nii beside x.nii.gz: the .nii.gz is used
            kept, dropped = sorted((found[scan.prefix], scan), key=lambda s: not s.path.name.endswith(".gz"))
            out.skipped.append(Skipped(str(dropped.path), f"same name as {kept.path.name}, which is used"))
            scan = kept
        found[scan.prefix] = scan
    if not found:
        what = f"only {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}" if others else "nothing"
        out.skipped.append(Skipped(anat, f"no *_T1w.nii[.gz] in anat/ ({what})"))
    return list(found.values())


def discover(
    bids_dir: str | Path,
    participants: list[str] | None = None,
    exclude_participants: list[str] | None = None,
) -> Discovery:
    """Find every ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` under ``bids_dir``.

    Args:
        bids_dir: the root of a BIDS dataset.
        participants: labels to keep (with or without ``sub-``); ``None`` or empty keeps all.
            A listed participant with no usable T1w is listed as skipped.
        exclude_participants: labels to leave out (applied after ``participants``).

    Returns:
        A :class:`Discovery`: scans sorted by subject, session and entities, what was skipped
        and why, and the subjects participants.tsv lists that have no folder.

    Raises:
        FileNotFoundError: ``bids_dir`` is not a folder.
        SubjectIdError: a label in ``participants`` or ``exclude_participants`` is invalid.
    """
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise FileNotFoundError(f"{bids_dir}: BIDS folder not found (config key 'bids_dir')")
    wanted = _labels(participants, "participants")
    excluded = _labels(exclude_participants, "exclude_participants") or set()
    out = Discovery(bids_dir)
    on_disk = set()
    for entry in _entries(str(bids_dir)):
        if not entry.name.startswith("sub-"):
            continue
        subject = entry.name.removeprefix("sub-")
        is_dir = _is_dir(entry)
        if is_dir is False:
            continue  # a file such as sub-04.html: not a subject folder
        on_disk.add(subject)
        if (wanted is not None and subject not in wanted) or subject in excluded:
            continue
        if is_dir is None:
            out.skipped.append(Skipped(entry.path, "a symlink that leads nowhere (a loop or a dangling link)"))
            continue
        if not LABEL_PATTERN.match(subject):
            out.skipped.append(Skipped(entry.path, f"subject label {subject!r} is not [A-Za-z0-9]+ (BIDS labels "
                                                   "are letters and digits only)"))
            continue
        out.scans += _subject_scans(entry.path, subject, out)

    if wanted is not None:
        for label in sorted(wanted - on_disk):
            out.skipped.append(Skipped(f"sub-{label}", "listed in config 'participants' but has no folder"))
    listed = read_participants_tsv(bids_dir)
    if listed is not None:
        out.missing_on_disk = [label for label in listed if label not in on_disk
                               and (wanted is None or label in wanted) and label not in excluded]
    return out


def _subject_scans(sub_dir: str, subject: str, out: Discovery) -> list[Scan]:
    entries = _entries(sub_dir)
    sessions = [entry for entry in entries if entry.name.startswith("ses-")]
    if not sessions:
        anat = os.path.join(sub_dir, "anat")
        if not os.path.isdir(anat):
            out.skipped.append(Skipped(sub_dir, "no anat/ folder"))
            return []
        return _anat_scans(anat, subject, None, out)
    scans = []
    for entry in sessions:
        session = entry.name.removeprefix("ses-")
        if not _is_dir(entry):
            out.skipped.append(Skipped(entry.path, "not a folder, or a symlink that leads nowhere"))
        elif not LABEL_PATTERN.match(session):
            out.skipped.append(Skipped(entry.path, f"session label {session!r} is not [A-Za-z0-9]+"))
        elif not os.path.isdir(os.path.join(entry.path, "anat")):
            out.skipped.append(Skipped(entry.path, "no anat/ folder"))
        else:
            scans += _anat_scans(os.path.join(entry.path, "anat"), subject, session, out)
    return scans


def _labels(labels: list[str] | None, key: str) -> set[str] | None:
    if not labels:
        return None
    return {check_label(str(label).removeprefix("sub-"), "participant", f"config '{key}'") for label in labels}


def discover_scans(bids_dir: str | Path, participants: list[str] | None = None,
                   exclude_participants: list[str] | None = None) -> list[Scan]:
    """The scans of :func:`discover` (what was skipped is dropped; use :func:`discover` to report it)."""
    return discover(bids_dir, participants, exclude_participants).scans
