"""Before Start: would each profile's server start now, or how long would it wait? Slurm's own answer.

`sbatch --test-only` asks the controller when a job would start and schedules nothing ("sbatch: Job 42 to
start at 2026-12-07T16:05:11 using 1 processors on nodes node1 in partition jupyter"). The form asks it for
each Slurm profile of the cluster's own partitions, with the profile's resources, as the user who opens the
form (their limits and priority; the hub's sudo rule already covers sbatch), all profiles at once and each
bounded by a timeout, and keeps each answer for one poll interval for every user: a hundred users opening
the form cost the controller one question per profile per interval. Remote partitions (hpc-gate runs no
test-only) and Docker profiles get no estimate; a question Slurm does not answer leaves the card as it was.
No JupyterHub import: unit-tested with a fake sbatch.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .job_end import cut
from .request import Request
from .slurm_queue import Runner

# sbatch's answer to --test-only (on its standard error)
_ANSWER = re.compile(r"Job \d+ to start at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) using \d+ processors on nodes")
_ERROR = re.compile(r"error: (?:Batch job submission failed: )?(.+)$")
# an expected start this close counts as "now" (the controller's clock, the scheduler's next pass)
NOW_SECONDS = 10
MAX_ERROR_CHARS = 120


@dataclass(frozen=True)
class Estimate:
    start: datetime | None = None  # the controller's local time
    error: str = ""  # Slurm's reason that a job like this cannot run at all

    def words(self, now: datetime) -> str:
        """The card's line: "starts now", "expected wait about 25 min (Slurm's estimate)", or why it cannot start."""
        if self.error:
            return f"cannot start now: {self.error}"
        if self.start is None:
            return ""
        wait = (self.start - now).total_seconds()
        if wait <= NOW_SECONDS:
            return "starts now"
        return f"expected wait about {duration(wait)}, from {self.start:%H:%M} (Slurm's estimate)"


def duration(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    if minutes < 90:
        return f"{minutes} min"
    hours = minutes / 60
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


def question_argv(sbatch: list[str], request: Request, job_name: str) -> list[str]:
    """sbatch's question for a server of these resources (the batch script's own --partition, --cpus-per-task,
    --mem, --time, --gres), a job that would do nothing, in /tmp."""
    argv = [
        *sbatch,
        "--test-only",
        f"--job-name={job_name}",
        f"--partition={request.partition}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={request.cpus}",
        f"--mem={request.memory_gb}G",
        f"--time={request.runtime}",
        "--chdir=/tmp",
        "--output=/dev/null",
    ]
    if request.gpus:
        argv.append(f"--gres=gpu:{request.gpus}")
    return [*argv, "--wrap=true"]


def parse(code: int, out: str, err: str) -> Estimate | None:
    """sbatch --test-only's answer: a start, Slurm's reason it cannot run, or None (no answer to trust)."""
    text = f"{err}\n{out}"
    match = _ANSWER.search(text)
    if code == 0 and match:
        return Estimate(start=datetime.fromisoformat(match.group(1)))
    if code != 0:
        errors = [m.group(1).strip() for m in map(_ERROR.search, text.splitlines()) if m]
        # the controller down or slow is not the profile's fault: no estimate, not "cannot start"
        if errors and not any("Unable to contact" in e or "timed out" in e.lower() for e in errors):
            return Estimate(error=cut(errors[-1], MAX_ERROR_CHARS))
    return None


class StartEstimates:
    """The estimates of the profiles, each asked at most once per `ttl` seconds (shared by every user)."""

    def __init__(self, runner: Runner, ttl: float, timeout: float = 5.0, clock=time.monotonic):
        self.runner = runner
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._known: dict[tuple[str, ...], tuple[float, Estimate | None]] = {}
        self._asking: dict[tuple[str, ...], asyncio.Task] = {}

    async def ask(self, argvs: dict[str, list[str]], key_of: Callable[[list[str]], tuple[str, ...]]) -> dict:
        """{profile slug: Estimate or None} for {slug: argv}; `key_of(argv)` drops what differs by user only
        (the sudo prefix), so one answer serves everyone."""
        keys = {slug: key_of(argv) for slug, argv in argvs.items()}
        now = self.clock()
        for slug, argv in argvs.items():
            key = keys[slug]
            fresh = key in self._known and now - self._known[key][0] < self.ttl
            if not fresh and key not in self._asking:
                self._asking[key] = asyncio.ensure_future(self._one(key, argv))
        waiting = {self._asking[k] for k in keys.values() if k in self._asking}
        if waiting:
            await asyncio.wait(waiting)
        return {slug: self._known.get(key, (0.0, None))[1] for slug, key in keys.items()}

    async def _one(self, key: tuple[str, ...], argv: list[str]) -> None:
        try:
            code, out, err = await asyncio.wait_for(self.runner(argv), self.timeout)
            estimate = parse(code, out, err)
        except (TimeoutError, OSError):
            estimate = None
        finally:
            self._asking.pop(key, None)
        self._known[key] = (self.clock(), estimate)
