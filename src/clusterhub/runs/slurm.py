"""The runs service's Slurm commands and its reconciler.

Commands are argv templates, as batchspawner's are, run without a shell: the service submits and cancels as the
run's owner (`sudo -u OWNER sbatch --parsable`, the script on standard input; in remote mode the same script goes
through hpc-gate), reads the queue with one squeue per poll for every user's runs, and asks accounting for the
runs that left the queue with one sacct per owner (slurmdbd's PrivateData shows a user only their own jobs).

Remote HPC mode (partitions with `remote: true` and `run_as: user`): the service logs in to the HPC login node with
a key of its own, whose forced command is hpc-gate, and every command but squeue is `as ACCOUNT ...`, the run's
owner's own HPC account (RemoteCommands): sbatch, scancel, sacct and `runfile` (a file of the run, read as its
owner there). A run remembers the account it runs as (its `account`; "" for the cluster's own partitions).

Reconciliation: a run in the queue takes squeue's state; a run that left it takes sacct's final state (TIMEOUT:
FAILED with "time limit", OUT_OF_MEMORY: FAILED with "out of memory", CANCELLED: STOPPED); a job neither knows is
given a grace period (slurmdbd may be behind, or down: sacct then fails and nothing changes) and then FAILED as
vanished. While the controller is down, squeue fails and no state changes either.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from clusterhub.hub.remote_job import remote
from clusterhub.hub.slurm_queue import parse_squeue
from clusterhub.protocol import RUNS_JOB_NAME, SACCT_FIELDS, parse_sacct
from clusterhub.protocol import SQUEUE_FORMAT as GATE_SQUEUE_FORMAT
from clusterhub.runs import states
from clusterhub.runs.job import RunJob, batch_script
from clusterhub.runs.store import Run, Store

Runner = Callable[[list[str], str | None], tuple[int, str, str]]


def run_command(argv: list[str], stdin: str | None = None, timeout: float = 60) -> tuple[int, str, str]:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 255, "", str(exc)
    return done.returncode, done.stdout, done.stderr


def read_output(argv: list[str], timeout: float = 120) -> bytes:
    """What argv prints (a run's file: a notebook, a log), as bytes; OSError with the end of its message when it
    fails or takes longer than `timeout`."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise OSError(f"{argv[-1][:80]} took longer than {timeout:g} s") from None
    if done.returncode != 0:
        raise OSError(done.stderr.decode(errors="replace").strip()[-200:])
    return done.stdout


class SlurmError(RuntimeError):
    """A Slurm command that failed; the message is for the user (one sentence, what to do)."""


@dataclass
class SlurmCommands:
    sbatch: list[str] = field(default_factory=lambda: ["sudo", "-n", "-u", "{owner}", "sbatch", "--parsable"])
    scancel: list[str] = field(default_factory=lambda: ["sudo", "-n", "-u", "{owner}", "scancel", "{job}"])
    squeue: list[str] = field(
        default_factory=lambda: ["squeue", "-h", "-r", f"--name={RUNS_JOB_NAME}", "-o", states.SQUEUE_FORMAT]
    )
    sacct: list[str] = field(
        default_factory=lambda: [
            "sudo",
            "-n",
            "-u",
            "{owner}",
            "sacct",
            "-n",
            "-P",
            "-j",
            "{jobs}",
            "-o",
            SACCT_FIELDS,
        ]
    )
    runner: Runner = run_command
    # the remote HPC mode's commands (RemoteCommands), for runs with an account; None: no remote partition
    remote: SlurmCommands | None = None

    def _argv(self, template: list[str], **values: str) -> list[str]:
        return [word.format(**values) for word in template]

    def side(self, account: str) -> SlurmCommands:
        """The commands a run goes through: these, or the remote ones for a run with an HPC account."""
        if not account:
            return self
        if self.remote is None:
            raise SlurmError("remote HPC mode is not configured for notebook runs; ask the administrators")
        return self.remote

    def _rows(self, out: str) -> list[tuple[str, str, str]]:
        """squeue's (task id, state, reason) lines (states.SQUEUE_FORMAT)."""
        return [tuple(parts) for parts in (line.strip().split("|") for line in out.splitlines()) if len(parts) == 3]

    def submit(self, owner: str, job: RunJob) -> str:
        rc, out, err = self.runner(self._argv(self.sbatch, owner=owner), batch_script(job))
        job_id = out.strip().split(";")[0]
        if rc != 0 or not job_id.isdigit():
            reason = (err or out).strip().splitlines()[-1:] or ["no job id"]
            raise SlurmError(f"Slurm did not accept the run ({reason[0][:200]}); check the resources and try again")
        return job_id

    def cancel(self, owner: str, job_id: str) -> None:
        rc, out, err = self.runner(self._argv(self.scancel, owner=owner, job=job_id), None)
        if rc != 0:
            raise SlurmError(f"Slurm could not stop job {job_id} ({(err or out).strip()[:200]}); try again")

    def queue(self) -> dict[str, list[tuple[str, str, str]]] | None:
        """{job id: its (task id, state, reason) rows} of every run in the queue; None when squeue fails."""
        rc, out, _ = self.runner(self._argv(self.squeue), None)
        if rc != 0:
            return None
        jobs: dict[str, list] = defaultdict(list)
        for row in self._rows(out):
            jobs[states.base_job_id(row[0])].append(row)
        return dict(jobs)

    def accounting(self, owner: str, job_ids: list[str]) -> dict[str, list[dict]] | None:
        """{job id: its sacct rows (tasks and steps)}; None when sacct fails (slurmdbd down: ask again later)."""
        rc, out, _ = self.runner(self._argv(self.sacct, owner=owner, jobs=",".join(job_ids)), None)
        if rc != 0:
            return None
        rows: dict[str, list] = defaultdict(list)
        for row in parse_sacct(out):
            rows[states.base_job_id(row["JobID"])].append(row)
        return dict(rows)


@dataclass
class RemoteCommands(SlurmCommands):
    """The same commands through hpc-gate: `ssh` (the service's key, the login node's host key checked) and one
    command line the gate splits and checks again; the run's owner's HPC account is the `{owner}` here."""

    ssh: list[str] = field(default_factory=list)
    sbatch: list[str] = field(
        default_factory=lambda: ["as", "{owner}", "sbatch", "--parsable", f"--job-name={RUNS_JOB_NAME}"]
    )
    scancel: list[str] = field(default_factory=lambda: ["as", "{owner}", "scancel", "{job}"])
    # the gate prints its own format (protocol.SQUEUE_FORMAT) and no array tasks one by one
    squeue: list[str] = field(
        default_factory=lambda: ["squeue", "-h", f"--name={RUNS_JOB_NAME}", "-o", GATE_SQUEUE_FORMAT]
    )
    sacct: list[str] = field(default_factory=lambda: ["as", "{owner}", "sacct", "{jobs}"])
    runfile: list[str] = field(default_factory=lambda: ["as", "{owner}", "runfile", "{run}", "{name}"])
    reader: Callable[[list[str]], bytes] = read_output

    def _argv(self, template: list[str], **values: str) -> list[str]:
        # the values are checked names and ids; remote() quotes each word for the gate's split
        return remote(self.ssh, *(word.format(**values) for word in template))

    def _rows(self, out: str) -> list[tuple[str, str, str]]:
        # the hub's own reading of the gate's squeue (also an older gate's fields)
        return [(info.job_id, info.state, info.reason) for info in parse_squeue(out).values()]

    def queue(self) -> dict[str, list[tuple[str, str, str]]] | None:
        return super().queue() if self.ssh else None

    def read(self, account: str, run_id: str, name: str) -> bytes:
        """A file of a run, read as its owner's HPC account on the login node."""
        return self.reader(self._argv(self.runfile, owner=account, run=run_id, name=name))


# how long a job may be unknown to both squeue and sacct before its run is failed as vanished
LOST_AFTER_S = 300.0


def reconcile(store: Store, slurm: SlurmCommands, now: float | None = None) -> dict[str, int]:
    """One poll: the states of every active run brought up to date; returns how many runs changed, by status."""
    now = time.time() if now is None else now
    changed: dict[str, int] = defaultdict(int)
    sides: dict[bool, list[Run]] = defaultdict(list)
    for run in store.active():
        if run.job_id:
            sides[bool(run.account)].append(run)
    for is_remote, active in sides.items():
        commands = slurm.remote if is_remote else slurm
        if commands is not None:
            _reconcile(store, commands, active, now, changed)
    return dict(changed)


def _reconcile(store: Store, slurm: SlurmCommands, active: list[Run], now: float, changed: dict[str, int]) -> None:
    """reconcile() for the runs of one side (the cluster's own partitions, or the remote ones)."""
    queue = slurm.queue()
    if queue is None:  # the controller is down or busy: change nothing
        return
    gone: dict[str, list[Run]] = defaultdict(list)
    for run in active:
        state = states.from_squeue(queue.get(run.job_id, []))
        if state is None:
            gone[run.account or run.owner].append(run)
        elif (state.status, state.message) != (run.status, run.status_message):
            started = now if state.status == states.IN_PROGRESS and run.start_time is None else run.start_time
            store.update(
                run.run_id, status=state.status, status_message=state.message, start_time=started, gone_since=None
            )
            changed[state.status] += 1
    for owner, owner_runs in gone.items():
        records = slurm.accounting(owner, [run.job_id for run in owner_runs])
        if records is None:
            continue
        for run in owner_runs:
            rows = records.get(run.job_id, [])
            final = states.from_sacct(rows)
            if final is None and not rows:
                if run.gone_since is None:
                    store.update(run.run_id, gone_since=now)
                    continue
                if now - run.gone_since < LOST_AFTER_S:
                    continue
                final = states.lost()
            elif final is None:
                continue  # accounting still has it running (slurmdbd behind the controller)
            eff = states.efficiency(rows)
            store.update(
                run.run_id,
                status=final.status,
                status_message=final.message,
                end_time=now,
                efficiency=json.dumps(asdict(eff) | {"advice": eff.advice()}) if eff else "",
            )
            changed[final.status] += 1
