"""A one-node SLURM cluster on this machine (munged, slurmctld, slurmd), for the tests.

The workflow's SLURM profile is tested against a real scheduler, not a mock: Debian's
``slurm-wlm`` and ``munge`` packages, configured here for one node with the machine's own
CPUs and memory and one fake GPU (a GRES backed by /dev/null, so ``--gpus=1`` can be
requested and granted on a machine without a GPU). No cgroups (proctrack/linuxproc,
task/none) and no accounting database: job states come from ``squeue``, which keeps a
finished job for ``MinJobAge`` seconds.

The config must live at /etc/slurm/slurm.conf: the Snakemake SLURM executor clears every
``SLURM_*`` variable (``SLURM_CONF`` included) before it submits. That is why starting a
cluster needs root, and why a slurm.conf that this module did not write is never touched.

    python -m tests.slurm_cluster start    # start (or find running) and print the node
    python -m tests.slurm_cluster status
    python -m tests.slurm_cluster stop     # stop every daemon this module started, by PID

The tests use :func:`unavailable_reason` (skip when slurm is not installed, or not as root)
and :func:`start` / :meth:`Cluster.stop` through a session-scoped fixture.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CONF_DIR = Path("/etc/slurm")
SLURM_CONF = CONF_DIR / "slurm.conf"
GRES_CONF = CONF_DIR / "gres.conf"
#: Everything the daemons write (state, spool, logs, PID files): ours alone, cleared on start.
STATE_DIR = Path("/var/lib/cortexgen-slurm")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
MUNGE_PID = MUNGE_RUN / "munged.pid"
#: First line of every file this module writes; any other slurm.conf belongs to someone else.
MARKER = "# Written by cortexgen tests/slurm_cluster.py: a one-node test cluster. Safe to delete."
#: Set by .ci/run when `apt-get install slurm-wlm munge` failed: the tests skip with it.
INSTALL_ERROR_VARIABLE = "CORTEXGEN_SLURM_INSTALL_ERROR"

REQUIRED_PROGRAMS = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol",
                     "sinfo", "scancel")
#: Seconds between SIGTERM and SIGKILL at a job's time limit: time for a training job to
#: finish its step and write a checkpoint.
KILL_WAIT = 20
#: Finished jobs stay visible to squeue/scontrol this long (seconds). The executor's squeue
#: status command needs >= 3 x its first status-check interval; the tests read job records
#: after a run.
MIN_JOB_AGE = 900


class ClusterError(RuntimeError):
    """The cluster could not be started although slurm is installed; the message says why."""


def unavailable_reason() -> str | None:
    """Why no test cluster can be started here (tests skip with this), or None if one can."""
    install_error = os.environ.get(INSTALL_ERROR_VARIABLE)
    if install_error:
        return f"slurm could not be installed: {install_error}"
    missing = [name for name in REQUIRED_PROGRAMS if _which(name) is None]
    if missing:
        return (f"slurm is not installed ({', '.join(missing)} not on PATH); "
                "as root: apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        return "the one-node slurm cluster needs root (its config must be /etc/slurm/slurm.conf)"
    foreign = [path for path in (SLURM_CONF, GRES_CONF) if path.exists() and not _ours(path)]
    if foreign:
        return f"{foreign[0]} exists and was not written by tests/slurm_cluster.py: not touching a real cluster's config"
    return None


@dataclass
class Cluster:
    """A running one-node cluster. ``started``: the daemons this process started (and stops)."""

    node: str
    cpus: int
    memory_mb: int
    started: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Cancel the cluster's jobs and stop the daemons this process started (newest first)."""
        if not self.started:
            return
        if "slurmctld" in self.started or "slurmd" in self.started:
            cancel_all_jobs()
        for name in reversed(self.started):
            _stop_daemon(name)
        self.started.clear()


def node_hardware() -> dict[str, str]:
    """This machine as slurmd sees it (``slurmd -C``): CPUs, sockets, cores, threads, RealMemory."""
    out = _run(["slurmd", "-C"]).stdout
    first = out.splitlines()[0] if out.strip() else ""
    fields = dict(item.split("=", 1) for item in first.split() if "=" in item)
    if "CPUs" not in fields or "RealMemory" not in fields:
        raise ClusterError(f"slurmd -C did not describe this machine: {out!r}")
    fields.pop("NodeName", None)
    return fields


def node_name() -> str:
    """The node's name: this host's short name (slurmd is started with it explicitly)."""
    return socket.gethostname().split(".")[0]


def slurm_conf(node: str, hardware: dict[str, str]) -> str:
    """slurm.conf for one node that is both controller and compute node, reached on 127.0.0.1."""
    topology = " ".join(f"{key}={value}" for key, value in hardware.items())
    return f"""{MARKER}
ClusterName=cortexgen
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
# No cgroups: processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# First in, first out; a job starts as soon as its CPUs, memory and GPU are free.
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
# No mail (the default program is not installed).
MailProg=/bin/true
ReturnToService=2
# At the time limit: SIGTERM, then SIGKILL {KILL_WAIT} s later, no grace minutes before it.
KillWait={KILL_WAIT}
OverTimeLimit=0
MinJobAge={MIN_JOB_AGE}
InactiveLimit=0
StateSaveLocation={STATE_DIR}/slurmctld
SlurmdSpoolDir={STATE_DIR}/slurmd
SlurmctldPidFile={STATE_DIR}/slurmctld.pid
SlurmdPidFile={STATE_DIR}/slurmd.pid
SlurmctldLogFile={STATE_DIR}/slurmctld.log
SlurmdLogFile={STATE_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName={node} NodeAddr=127.0.0.1 {topology} Gres=gpu:fake:1 State=UNKNOWN
PartitionName=main Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def gres_conf(node: str) -> str:
    """One fake GPU: a device file every machine has, so jobs can ask for ``--gpus=1``."""
    return f"{MARKER}\nNodeName={node} Name=gpu Type=fake File=/dev/null\n"


def start(timeout: float = 60.0) -> Cluster:
    """Start munged, slurmctld and slurmd (each unless already running) and wait for an idle node.

    Idempotent: a cluster this module started earlier and left running is reused (and then
    not stopped by this process). Raises :class:`ClusterError` with the daemon's log when a
    daemon does not come up.
    """
    reason = unavailable_reason()
    if reason:
        raise ClusterError(reason)
    node = node_name()
    hardware = node_hardware()
    cluster = Cluster(node=node, cpus=int(hardware["CPUs"]), memory_mb=int(hardware["RealMemory"]))
    wanted = {SLURM_CONF: slurm_conf(node, hardware), GRES_CONF: gres_conf(node)}
    changed = any(not path.exists() or path.read_text() != text for path, text in wanted.items())
    if changed:
        # Daemons left running with another config would not see the new one.
        for name in ("slurmd", "slurmctld"):
            _stop_daemon(name)
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        for path, text in wanted.items():
            path.write_text(text)
    try:
        if not _munge_works():
            _start_munged()
            cluster.started.append("munged")
        if _daemon_pid("slurmctld") is None:
            for sub in ("slurmctld", "slurmd"):
                (STATE_DIR / sub).mkdir(parents=True, exist_ok=True)
            # -c: a fresh controller state (no jobs or node states from an earlier run).
            _start_daemon("slurmctld", ["slurmctld", "-c"],
                          lambda: "is UP" in _run(["scontrol", "ping"], check=False).stdout, timeout)
            cluster.started.append("slurmctld")
        if _daemon_pid("slurmd") is None:
            _start_daemon("slurmd", ["slurmd", "-N", node], lambda: True, timeout)
            cluster.started.append("slurmd")
        # The node takes jobs once slurmd has registered with the controller (and its
        # hardware matched slurm.conf; if not, sinfo says why).
        _wait_for(lambda: _node_state(node) in ("idle", "mixed", "allocated"), timeout,
                  lambda: f"node {node} is {_node_state(node)!r}: {_node_reason(node)}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def cancel_all_jobs(timeout: float = KILL_WAIT + 30.0) -> None:
    """Cancel every job of the test cluster, by id, and wait until none is left running."""
    def running() -> list[str]:
        result = _run(["squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED"],
                      check=False)
        return result.stdout.split() if result.returncode == 0 else []

    job_ids = running()
    if job_ids:
        _run(["scancel", *job_ids], check=False)
        _wait_for(lambda: not running(), timeout, lambda: f"jobs still running after scancel: {running()}")


def stop_all() -> None:
    """Stop every daemon of this module's cluster found by its PID file (for the command line)."""
    if _daemon_pid("slurmctld") is not None:
        cancel_all_jobs()
    for name in ("slurmd", "slurmctld"):
        _stop_daemon(name)
    if SLURM_CONF.exists() and _ours(SLURM_CONF):
        _stop_daemon("munged")


def _ours(path: Path) -> bool:
    try:
        return path.read_text().startswith(MARKER)
    except OSError:
        return False


def _which(name: str) -> str | None:
    """The program's path: on PATH, or in the sbin folders (off a non-root user's PATH on Debian)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name, path=search)


def _run(argv: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    argv = [_which(argv[0]) or argv[0], *argv[1:]]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, **kwargs)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return result


def _wait_for(condition, timeout: float, describe) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s: {describe()}")
        time.sleep(0.5)


def _pid_file(name: str) -> Path:
    return MUNGE_PID if name == "munged" else STATE_DIR / f"{name}.pid"


def _daemon_pid(name: str) -> int | None:
    """The PID in the daemon's PID file if that process is alive and is that program."""
    try:
        pid = int(_pid_file(name).read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    # /proc/<pid>/comm: the program name, so a PID reused by another process is not signalled.
    return pid if comm == name else None


def _stop_daemon(name: str, timeout: float = 30.0) -> None:
    pid = _daemon_pid(name)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def _log_path(name: str) -> Path:
    return Path("/var/log/munge/munged.log") if name == "munged" else STATE_DIR / f"{name}.log"


def _log_tail(name: str, lines: int = 30) -> str:
    path = _log_path(name)
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _start_daemon(name: str, argv: list[str], ready, timeout: float, **kwargs) -> None:
    """Run a daemon (it forks itself and writes its PID file), then wait until ``ready()``.

    ``kwargs`` go to :func:`subprocess.run` (e.g. the user to run as).
    """
    log = _log_path(name)
    log_start = log.stat().st_size if log.exists() else 0
    result = _run(argv, check=False, **kwargs)
    if result.returncode != 0:
        raise ClusterError(f"{name} did not start ({result.returncode}): {result.stderr.strip()}\n{_log_tail(name)}")

    def up() -> bool:
        # The daemon forks before it reads its config: a fatal error shows only in its log.
        with open(log, "rb") if log.exists() else open(os.devnull, "rb") as handle:
            handle.seek(log_start)
            if b"fatal:" in handle.read():
                raise ClusterError(f"{name} stopped with a fatal error; its log ends:\n{_log_tail(name)}")
        return _daemon_pid(name) is not None and ready()

    _wait_for(up, timeout, lambda: f"{name} not ready; its log ends:\n{_log_tail(name)}")


def _munge_works() -> bool:
    """A credential made by ``munge`` is accepted by ``unmunge``: some munged runs with a key."""
    made = subprocess.run([_which("munge") or "munge", "-n"], check=False, capture_output=True, timeout=30)
    if made.returncode != 0:
        return False
    return subprocess.run([_which("unmunge") or "unmunge"], check=False, input=made.stdout, capture_output=True,
                          timeout=30).returncode == 0


def _start_munged() -> None:
    """munged as the munge user, with a key only that user can read (munged refuses anything looser)."""
    try:
        user = pwd.getpwnam("munge")
    except KeyError as err:
        raise ClusterError("no 'munge' user: is the munge package installed?") from err
    for path, mode in ((MUNGE_KEY.parent, 0o700), (MUNGE_RUN, 0o755), (Path("/var/log/munge"), 0o700),
                       (Path("/var/lib/munge"), 0o711)):
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(mode)
    if not MUNGE_KEY.exists():
        _run(["mungekey", "--create", f"--keyfile={MUNGE_KEY}"])
    os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
    MUNGE_KEY.chmod(0o400)
    # subprocess switches to the munge user (and its group) before it runs munged.
    _start_daemon("munged", ["munged"], _munge_works, 30.0, user=user.pw_uid, group=user.pw_gid, extra_groups=[])


def _node_state(node: str) -> str:
    result = _run(["sinfo", "--noheader", "--Node", f"--nodes={node}", "--format=%T"], check=False)
    return result.stdout.strip().rstrip("*~#!%$@^-") if result.returncode == 0 else ""


def _node_reason(node: str) -> str:
    result = _run(["sinfo", "--noheader", "--Node", f"--nodes={node}", "--format=%E"], check=False)
    return result.stdout.strip() or f"(no reason given); slurmd log ends:\n{_log_tail('slurmd')}"


def main(argv: list[str] | None = None) -> int:
    """``start`` | ``status`` | ``stop``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv not in (["start"], ["status"], ["stop"]):
        print("usage: python -m tests.slurm_cluster start|status|stop", file=sys.stderr)
        return 2
    if argv == ["stop"]:
        stop_all()
        return 0
    if argv == ["status"]:
        reason = unavailable_reason()
        pids = {name: _daemon_pid(name) for name in ("munged", "slurmctld", "slurmd")}
        print(reason or f"node {node_name()}: {_node_state(node_name()) or 'not running'}; PIDs {pids}")
        return 0
    try:
        cluster = start()
    except ClusterError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"node {cluster.node}: {cluster.cpus} CPUs, {cluster.memory_mb} MB, 1 fake GPU; started {cluster.started}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
