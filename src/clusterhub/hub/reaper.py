"""The orphaned-job check: Slurm jobs with the hub's job names that no server has are cancelled.

JupyterHub forgets a server when it stops, even when scancel failed (slurmctld down, SSH timed out), and a
submit that timed out after Slurm took the job leaves a job no server knows. Such a job holds a node's CPUs
and memory (and a user's server, unreachable) until its time limit. Every poll interval the reaper reads the
hub's jobs (the snapshot the spawners' polls share, slurm_queue.py) in direct mode (`--name <job name>`) and
remote mode (through hpc-gate, `<job name>-<user>`), and cancels a job when all of these hold:

- its name is in the hub's namespace (jobs of other names are never touched) and its owner is known;
- no server of the hub has its job id: neither a spawner in the hub's memory nor a server record in the
  hub's database (after a restart, before the hub has looked at every server again);
- its user has no server being started, stopped or checked right now (the job of a start whose sbatch has
  not returned yet has no job id anywhere);
- the hub has seen it, without a server, for at least the grace period, in a fresh squeue;
- it is pending or running (a completing job is already ending).

When Slurm does not answer, nothing is decided. Each cancellation is logged: job id, user, why.
start_with_hub() runs it in the hub's process (jupyterhub_config.py calls it); the rest is plain logic,
unit-tested with fake queues, cancels and servers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import in_hub
from .remote_job import cancel_argv, job_name
from .slurm_queue import JobInfo, SlurmQueue, run_exec

log = logging.getLogger(__name__)
# a Slurm user name the reaper may pass to sudo -u or hpc-gate's `as` (never an option, never empty)
# seconds before a job Slurm was told to cancel, still listed (and not completing), is cancelled again
RETRY_AFTER = 60.0
_ACCOUNT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class ServerView:
    """What the reaper needs of one server of the hub: whose, whether an event is pending, its job ids."""

    user: str
    pending: bool
    job_ids: frozenset[str] = field(default_factory=frozenset)


def state_job_ids(state: dict | None) -> set[str]:
    """The Slurm job ids in a spawner's persisted state: its own (batchspawner's `job_id`) and those of the
    child spawner the dispatching spawner keeps under `child`."""
    ids: set[str] = set()
    while isinstance(state, dict):
        if state.get("job_id"):
            ids.add(str(state["job_id"]))
        state = state.get("child")
    return ids


def hub_servers(users: Iterable, orm_spawners: Iterable) -> list[ServerView]:
    """The hub's servers: every spawner in the hub's memory (users: JupyterHub User objects, with
    `.spawners`) and every server record in its database (orm_spawners: orm.Spawner rows with a server)."""
    views = []
    for user in users:
        for spawner in list(user.spawners.values()):
            views.append(ServerView(user.name, bool(spawner.pending), frozenset(state_job_ids(spawner.get_state()))))
    for row in orm_spawners:
        views.append(ServerView(row.user.name, False, frozenset(state_job_ids(row.state))))
    return views


class DirectBackend:
    """Direct mode: the hub's own squeue (`--name <job name>`); scancel through sudo as the job's user."""

    kind = "direct"

    def __init__(self, queue: SlurmQueue, name: str, cancel_command: str, timeout: float):
        self.queue = queue
        self.name = name
        self.cancel_command = cancel_command  # exec_prefix + batch_cancel_cmd, with {username} and {job_id}
        self.timeout = timeout

    def owner(self, job: JobInfo) -> str:
        """The hub user of a job in this backend's namespace (its Slurm user), "" for any other job."""
        return job.user if job.name == self.name and _ACCOUNT.match(job.user) else ""

    def key(self, username: str) -> str:
        """What owner() returns for the jobs of hub user `username`."""
        return username

    def cancel_argv(self, job: JobInfo) -> list[str]:
        words = shlex.split(self.cancel_command)
        return [w.format(username=job.user, job_id=job.job_id) for w in words]


class RemoteBackend:
    """Remote HPC mode: squeue and scancel through hpc-gate; jobs named `<job name>-<user>`. A job on a
    `run_as: user` partition runs as the user's own account and is cancelled as it (`as USER scancel`);
    hpc-gate checks both again."""

    kind = "remote"

    def __init__(self, queue: SlurmQueue, name: str, ssh_command: list[str], own_partitions: set[str], timeout: float):
        self.queue = queue
        self.name = name
        self.ssh_command = ssh_command
        self.own_partitions = own_partitions
        self.timeout = timeout

    def owner(self, job: JobInfo) -> str:
        """The job's name if it is `<job name>-<suffix>` (hpc-gate's namespace), "" for any other job."""
        return job.name if job.name.startswith(self.name + "-") and _ACCOUNT.match(job.user) else ""

    def key(self, username: str) -> str:
        return job_name(self.name, username)

    def cancel_argv(self, job: JobInfo) -> list[str]:
        return cancel_argv(self.ssh_command, job.job_id, job.user if job.partition in self.own_partitions else "")


Backend = DirectBackend | RemoteBackend


class Reaper:
    """One sweep per call of sweep(): finds the orphaned jobs of each backend and cancels them."""

    def __init__(
        self,
        backends: list[Backend],
        servers: Callable[[], list[ServerView]],
        grace: float,
        max_age: float,
        *,
        runner=run_exec,
        clock=time.monotonic,
        logger: logging.Logger | None = None,
    ):
        self.backends = backends
        self.servers = servers
        self.grace = max(0.0, float(grace))
        self.max_age = max_age
        self.runner = runner
        self.clock = clock
        self.log = logger or log
        self.seen: dict[tuple[str, str], float] = {}  # (backend kind, job id): when a squeue first listed it
        self.failed: set[tuple[str, str]] = set()  # cancellations that failed (logged once as a warning)
        self.done: dict[tuple[str, str], float] = {}  # cancellations Slurm took: when (not repeated for a while)
        self.cancelled: deque[tuple[str, str, str]] = deque(maxlen=100)  # the last (job id, user, why)

    async def sweep(self) -> None:
        for backend in self.backends:
            await self._sweep(backend)

    async def _sweep(self, backend: Backend) -> None:
        jobs = await backend.queue.snapshot(self.max_age)
        if jobs is None:
            return  # Slurm did not answer: nothing is known, nothing is decided
        now = self.clock()
        self._remember(backend, jobs, now)
        if not self._orphans(backend, jobs, now):
            return
        # a snapshot up to max_age old may still list a job that just ended, or lack one just submitted:
        # the orphans must be orphans again in a fresh squeue, against the servers as they are after it
        jobs = await backend.queue.snapshot(0)
        if jobs is None:
            return
        now = self.clock()
        self._remember(backend, jobs, now)
        for job, user, why in self._orphans(backend, jobs, now):
            await self._cancel(backend, job, user, why)

    def _remember(self, backend: Backend, jobs: dict[str, JobInfo], now: float) -> None:
        for job_id in jobs:
            self.seen.setdefault((backend.kind, job_id), now)
        for key in [k for k in self.seen if k[0] == backend.kind and k[1] not in jobs]:
            del self.seen[key]
            self.failed.discard(key)
            self.done.pop(key, None)

    def _orphans(self, backend: Backend, jobs: dict[str, JobInfo], now: float) -> list[tuple[JobInfo, str, str]]:
        servers = self.servers()
        known = set().union(*(s.job_ids for s in servers))
        busy = {backend.key(s.user) for s in servers if s.pending}
        orphans = []
        for job in jobs.values():
            owner = backend.owner(job)
            if not owner or job.job_id in known or owner in busy:
                continue
            if job.state == "COMPLETING" or not (job.pending or job.running):
                continue
            key = (backend.kind, job.job_id)
            age = now - self.seen[key]
            if age < self.grace or now - self.done.get(key, float("-inf")) < RETRY_AFTER:
                continue
            why = (
                f"no server of the hub has it ({job.state}, listed for {age:.0f} s; most likely its server was "
                "stopped, or its start failed, while Slurm or the link to it did not answer)"
            )
            orphans.append((job, job.user, why))
        return orphans

    async def _cancel(self, backend: Backend, job: JobInfo, user: str, why: str) -> None:
        key = (backend.kind, job.job_id)
        try:
            code, _, err = await asyncio.wait_for(self.runner(backend.cancel_argv(job)), backend.timeout)
        except (OSError, TimeoutError, ValueError) as e:
            code, err = -1, repr(e)
        if code == 0:
            self.done[key] = self.clock()
            self.cancelled.append((job.job_id, user, why))
            self.log.warning("Cancelled orphaned Slurm job %s (%s, user %s): %s", job.job_id, job.name, user, why)
            return
        level = logging.DEBUG if key in self.failed else logging.WARNING
        self.failed.add(key)
        self.log.log(
            level,
            "Could not cancel orphaned Slurm job %s (%s, user %s) (exit %s: %s); trying again at the next check",
            job.job_id,
            job.name,
            user,
            code,
            err.strip()[-300:],
        )


# --- in the hub's process ------------------------------------------------------------------------------


def hub_reaper(app, grace: float) -> tuple[Reaper, float]:
    """The reaper of this hub's configuration, and its interval (the spawners' poll interval): direct mode
    where a partition is not remote (or none is configured), remote mode where one is and hpc-gate's SSH
    command is set. Its snapshots are the ones the spawners' polls share (same squeue, same max age)."""
    from jupyterhub import orm  # noqa: PLC0415 -- JupyterHub only in the hub's process

    from .remote import ClusterRemoteSpawner  # noqa: PLC0415
    from .spawner import ClusterSlurmSpawner  # noqa: PLC0415

    slurm = ClusterSlurmSpawner(config=app.config)
    backends: list[Backend] = []
    if not slurm.partitions or any(not p.get("remote") for p in slurm.partitions):
        cancel = f"{slurm.exec_prefix} {slurm.batch_cancel_cmd}"
        backends.append(DirectBackend(slurm.queue, slurm.job_name, cancel, slurm.squeue_timeout))
    remote = ClusterRemoteSpawner(config=app.config)
    if remote.ssh_command and any(p.get("remote") for p in remote.partitions):
        own = {p["name"] for p in remote.partitions if p.get("run_as") == "user"}
        backends.append(RemoteBackend(remote.queue, remote.job_name, remote.ssh_command, own, remote.ssh_timeout))

    def servers() -> list[ServerView]:
        rows = app.db.query(orm.Spawner).filter(orm.Spawner.server != None)  # noqa: E711 -- SQL IS NOT NULL
        return hub_servers(app.tornado_settings["users"].values(), rows)

    return Reaper(backends, servers, grace, slurm.squeue_max_age, logger=app.log), float(slurm.poll_interval)


async def _watch(app, grace: float) -> None:
    """Sweep every poll interval for the life of the hub, once its users and database are up."""
    await in_hub.hub_up(app)
    reaper, interval = hub_reaper(app, grace)
    modes = ", ".join(f"{b.kind} mode (job name {b.name})" for b in reaper.backends)
    app.log.info("Orphaned-job check every %s s (grace %s s): %s", interval, reaper.grace, modes or "no Slurm")
    if reaper.backends:
        await in_hub.every(interval, reaper.sweep, "Orphaned-job check", app.log)


def start_with_hub(grace: float) -> None:
    """Start the check in the JupyterHub process that is loading its configuration (jupyterhub_config.py
    calls this); does nothing elsewhere (no running hub: jupyterhub upgrade-db, --generate-config)."""
    in_hub.start("orphaned jobs", lambda app: _watch(app, grace))
