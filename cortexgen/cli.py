"""The BIDS-App command: ``cortexgen BIDS_DIR OUTPUT_DIR participant|group [options]``.

Runs this repository's Snakemake workflow (``python -m snakemake`` with an argument list, never
a shell string) from any working directory: OUTPUT_DIR is Snakemake's working directory, so
derivatives land in ``OUTPUT_DIR/results`` (its preproc/, surfaces/ and deform/ folders each a
BIDS-derivatives dataset with its own dataset_description.json) and logs in ``OUTPUT_DIR/logs``.

    participant  the per-subject steps: preprocessing, surfaces, signed distance maps, QC
    group        everything: shape model, generators, samples, evaluation, report inputs

``cortexgen --install-profiles`` links the shipped profiles (local, slurm) into Snakemake's
user profile folder, after which ``snakemake --profile slurm`` works as typed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

#: The repository: Snakefile, config/, profiles/, resources/ (the package lives in it).
WORKFLOW_DIR = Path(__file__).resolve().parents[1]
#: The rules whose jobs make up the participant level (--until stops after them).
PARTICIPANT_RULES = ("dataset_description", "qc_preproc", "surface_sdf", "qc_surfaces", "subject_shard")


def snakemake_profile_dir() -> Path:
    """The user folder where Snakemake looks profiles up by name (``~/.config/snakemake`` on
    Linux, honouring XDG_CONFIG_HOME), as Snakemake itself computes it."""
    from platformdirs import AppDirs

    return Path(AppDirs("snakemake", "snakemake").user_config_dir)


def install_profiles(target: Path | None = None) -> list[str]:
    """Link each shipped profile (profiles/<name>) into ``target`` (default: Snakemake's user
    profile folder). An existing entry of that name that is not our link is left alone and
    reported. Returns one line per profile."""
    target = snakemake_profile_dir() if target is None else target
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    for profile in sorted((WORKFLOW_DIR / "profiles").iterdir()):
        if not (profile / "config.yaml").is_file():
            continue
        link = target / profile.name
        if link.is_symlink() and link.resolve() == profile.resolve():
            lines.append(f"{link} -> {profile} (already there)")
        elif link.exists() or link.is_symlink():
            lines.append(f"{link} exists and is not cortexgen's; left as it is")
        else:
            link.symlink_to(profile, target_is_directory=True)
            lines.append(f"{link} -> {profile}")
    return lines


def resolve_profile(profile: str) -> str:
    """A path as given; a name of a shipped profile (``slurm``) as its folder; any other name
    as given (Snakemake looks it up in its profile folders)."""
    if os.path.exists(profile):
        return str(Path(profile).resolve())
    shipped = WORKFLOW_DIR / "profiles" / profile
    return str(shipped) if (shipped / "config.yaml").is_file() else profile


def build_command(args: argparse.Namespace, configfile: Path) -> list[str]:
    """The ``python -m snakemake`` argument list for ``args``."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(WORKFLOW_DIR / "Snakefile"),
               "--directory", str(Path(args.output_dir).resolve()),
               "--configfile", *[str(Path(c).resolve()) for c in args.configfile], str(configfile)]
    if args.profile:
        command += ["--profile", resolve_profile(args.profile)]
    if args.cores is not None or not args.profile:
        command += ["--cores", str(args.cores or "all")]
    if args.dry_run:
        command.append("--dry-run")
    if args.analysis_level == "participant":
        command += ["--until", *PARTICIPANT_RULES]
    return command + list(args.snakemake_args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cortexgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", nargs="?", help="the input BIDS dataset")
    p.add_argument("output_dir", nargs="?", help="where results/ (the derivatives) and logs/ go")
    p.add_argument("analysis_level", nargs="?", choices=["participant", "group"])
    p.add_argument("--participant-label", "--participant_label", nargs="+", default=[],
                   help="subject labels to process (with or without sub-); default every subject")
    p.add_argument("--exclude-participant", nargs="+", default=[], help="subject labels to leave out")
    p.add_argument("--profile", help="a Snakemake profile: a folder, or a name (local, slurm, or one of yours)")
    p.add_argument("--cores", type=int, help="CPU cores to use (default: all, unless a profile says otherwise)")
    p.add_argument("--dry-run", "-n", action="store_true", help="show what would run")
    p.add_argument("--configfile", nargs="+", default=[], help="config files on top of the shipped one")
    p.add_argument("--install-profiles", action="store_true",
                   help="link the shipped profiles into Snakemake's user profile folder, then exit")
    p.epilog = "Arguments after -- go to Snakemake as they are (e.g. -- --keep-going --rerun-incomplete)."
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser().parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    args.snakemake_args = extra
    if args.install_profiles:
        print("\n".join(install_profiles()))
        return 0
    if not (args.bids_dir and args.output_dir and args.analysis_level):
        parser().error("BIDS_DIR, OUTPUT_DIR and participant|group are required")
    if not (WORKFLOW_DIR / "Snakefile").is_file():
        print(f"cortexgen: no Snakefile in {WORKFLOW_DIR}; install from a clone (pip install -e .) "
              "or use the container", file=sys.stderr)
        return 2
    bids_dir = Path(args.bids_dir).resolve()
    if not bids_dir.is_dir():
        print(f"cortexgen: {args.bids_dir}: BIDS folder not found", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir).resolve()
    (output_dir / ".cortexgen").mkdir(parents=True, exist_ok=True)
    configfile = output_dir / ".cortexgen" / "cli_config.yaml"
    configfile.write_text(yaml.safe_dump({
        "bids_dir": str(bids_dir),
        "participants": [label.removeprefix("sub-") for label in args.participant_label],
        "exclude_participants": [label.removeprefix("sub-") for label in args.exclude_participant],
    }))
    return subprocess.run(build_command(args, configfile), cwd=output_dir).returncode


if __name__ == "__main__":
    sys.exit(main())
