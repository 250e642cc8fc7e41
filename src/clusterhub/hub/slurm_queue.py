"""One squeue for all servers: a shared, time-bounded view of the hub's Slurm jobs.

batchspawner asks squeue once per server and poll; with hundreds of users that floods the hub host
and slurmctld. Here every spawner reads one cached snapshot of the hub's jobs, refreshed by a single
`squeue --name=<job name>` at most every `max_age` seconds. A failed or slow squeue yields
`None` ("unknown"), which callers must treat as "still running": a controller outage never stops
a server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# squeue -o format (clusterhub.protocol): the orphaned-job check, reaper.py, tells the hub's jobs and their owners
# by the last fields
from ..protocol import SQUEUE_FORMAT

_FIELDS = SQUEUE_FORMAT.count("|") + 1
# an hpc-gate still configured with an older format: without priority and expected start, or also without user,
# partition and name
_LEGACY_FIELDS = (7, 4)


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str
    node: str
    reason: str
    user: str = ""
    partition: str = ""
    name: str = ""
    priority: str = ""
    start: str = ""  # pending: when Slurm expects it to start (ISO time), or "N/A"

    @property
    def pending(self) -> bool:
        return self.state in ("PENDING", "CONFIGURING", "REQUEUED", "SUSPENDED")

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING", "COMPLETING")


def parse_squeue(output: str) -> dict[str, JobInfo]:
    """Parse `squeue -h -o SQUEUE_FORMAT` output (or an older gate's seven or four fields)."""
    jobs = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.strip().split("|", _FIELDS - 1)]
        if (len(parts) != _FIELDS and len(parts) not in _LEGACY_FIELDS) or not parts[0]:
            continue
        job_id, state, node, reason, *owner = parts
        jobs[job_id] = JobInfo(job_id, state, "" if node in ("n/a", "(null)") else node, reason, *owner)
    return jobs


Runner = Callable[[list[str]], Awaitable[tuple[int, str, str]]]


async def run_exec(argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run argv (no shell) with stdin as its input (none: /dev/null); the process is killed if cancelled,
    so `asyncio.wait_for(run_exec(...), timeout)` bounds it."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(stdin)
    except asyncio.CancelledError:
        proc.kill()
        raise
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class SlurmQueue:
    """A snapshot of the hub's jobs, shared by all spawners of one hub process."""

    def __init__(self, argv: list[str], timeout: float = 10.0, runner: Runner = run_exec, clock=time.monotonic):
        self.argv = argv
        self.timeout = timeout
        self.runner = runner
        self.clock = clock
        self.jobs: dict[str, JobInfo] | None = None
        self.taken_at = float("-inf")
        self.queries = 0
        self.failures = 0
        self.last_error = ""
        self._lock: asyncio.Lock | None = None
        self._loop = None

    async def snapshot(self, max_age: float, fresh_after: float = float("-inf")) -> dict[str, JobInfo] | None:
        """Jobs no older than max_age seconds, and asked for no earlier than `fresh_after` (the clock's time of
        something Slurm must already show); None when Slurm cannot be asked right now. Callers waiting together
        share one squeue: whoever finds the lock taken gets the snapshot the holder just made."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # one lock per event loop (the hub has one; tests make several)
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:
            if self.clock() - self.taken_at > max_age or self.taken_at < fresh_after:
                await self._refresh()
            return self.jobs

    async def _refresh(self) -> None:
        self.queries += 1
        started = self.clock()
        try:
            rc, out, err = await asyncio.wait_for(self.runner(self.argv), self.timeout)
        except (TimeoutError, OSError) as e:
            rc, out, err = -1, "", f"squeue did not answer: {e!r}"
        self.taken_at = started
        if rc == 0:
            self.jobs = parse_squeue(out)
            self.last_error = ""
        else:
            self.failures += 1
            self.jobs = None
            self.last_error = err.strip()[:500]

    async def job(
        self, job_id: str, max_age: float, not_before: float = float("-inf"), fresh_after: float = float("-inf")
    ) -> JobInfo | bool | None:
        """JobInfo if the job is queued or running, False if Slurm says it is gone, None if unknown.

        A job missing from a snapshot begun before `not_before` (its submission) is unknown, never gone: the
        caller's next look, in the next snapshot anyone takes, finds it. A submission costs no squeue of its own.
        """
        jobs = await self.snapshot(max_age, fresh_after)
        if jobs is None or (job_id not in jobs and self.taken_at < not_before):
            return None
        return jobs.get(job_id, False)
