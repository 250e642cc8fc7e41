"""What a user reads while their server waits in the Slurm queue: its place among the pending jobs of its
partition, when Slurm expects it to start, and why it waits, in words. All of it comes from the one batched
squeue of the hub (slurm_queue.py: every job's state, reason, partition, priority and expected start), never
from a query of its own. Plain logic, unit-tested on its own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .slurm_queue import JobInfo

_JOB_NUMBER = re.compile(r"^(\d+)")


def _order(job: JobInfo) -> tuple[int, int]:
    """Slurm's order of pending jobs: higher priority first, then the older job (the smaller id)."""
    try:
        priority = int(job.priority)
    except ValueError:
        priority = 0
    number = _JOB_NUMBER.match(job.job_id)
    return -priority, int(number.group(1)) if number else 0


def position(jobs: dict[str, JobInfo], job: JobInfo) -> tuple[int, int] | None:
    """(place, of how many) of a pending job among the pending jobs of its partition; None if it is not pending."""
    if not job.pending:
        return None
    waiting = [other for other in jobs.values() if other.pending and other.partition == job.partition]
    mine = _order(job)
    place = 1 + sum(1 for other in waiting if other.job_id != job.job_id and _order(other) < mine)
    return place, max(len(waiting), place)


def expected_start(job: JobInfo, now: datetime | None = None) -> datetime | None:
    """When Slurm expects the pending job to start (squeue's %S, the controller's local time), if it has an
    estimate still ahead."""
    if not job.pending or not job.start or job.start in ("N/A", "Unknown", "None"):
        return None
    try:
        when = datetime.fromisoformat(job.start)
    except ValueError:
        return None
    return when if when > (now or datetime.now()) else None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def waiting_for(reason: str, partition: str, cpus: int = 0, memory_gb: float = 0, gpus: int = 0) -> str:
    """Slurm's pending reason in words, with what the job asked for where the reason is resources."""
    if reason == "Resources":
        if gpus:
            what = _plural(gpus, "GPU")
        else:
            what = (
                f"{_plural(cpus or 1, 'CPU')} and {memory_gb:g} GB of memory"
                if memory_gb
                else _plural(cpus or 1, "CPU")
            )
        return f"waiting for {what} to free up on partition {partition}"
    if reason == "Priority":
        return f"jobs of higher priority on partition {partition} go first"
    if reason in ("PartitionDown", "PartitionInactive"):
        return f"partition {partition} is closed for now; the administrators know when it opens again"
    if reason in ("ReqNodeNotAvail", "NodeDown", "BadConstraints") or reason.startswith("ReqNodeNotAvail"):
        return f"the nodes of partition {partition} it may use are down, drained or reserved (maintenance?)"
    if reason in ("PartitionTimeLimit", "PartitionNodeLimit", "PartitionConfig"):
        return f"it asks for more than partition {partition} allows: stop it and choose less"
    if reason.startswith(("QOS", "Assoc")) and "WallDuration" in reason:
        return "it asks for more hours than your account may: stop it and choose fewer"
    if reason.startswith(("QOS", "Assoc")):
        return "a limit on your (or your group's) jobs or resources is reached: it starts when one of them ends"
    if reason == "Dependency":
        return "it waits for another job to end"
    if reason == "BeginTime":
        return "it may not start before its begin time"
    if reason in ("JobHeldUser", "JobHeldAdmin"):
        return "it is held" + (" by an administrator" if reason == "JobHeldAdmin" else "")
    if reason.startswith("Reservation"):
        return "it waits for its reservation to begin"
    if reason in ("None", ""):
        return "the scheduler has not looked at it yet"
    return f"Slurm says {reason}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class Waiting:
    """A pending server's place in the queue, as the progress events report it."""

    job_id: str
    partition: str
    reason: str  # Slurm's own word
    words: str  # waiting_for()
    place: int | None = None  # among the partition's pending jobs (None: the hub sees only its own jobs)
    pending: int | None = None
    start: datetime | None = None

    def message(self, now: datetime | None = None) -> str:
        where = f"partition {self.partition}"
        if self.place is not None:
            where += f", {_ordinal(self.place)} of {self.pending} waiting there"
        text = f"Job {self.job_id} is in the queue of {where}: {self.words}"
        if self.start is not None:
            minutes = max(1, round((self.start - (now or datetime.now())).total_seconds() / 60))
            text += f"; Slurm expects it to start at {self.start:%H:%M} (in about {minutes} min)"
        return text

    def event(self, now: datetime | None = None) -> dict:
        return {
            "message": self.message(now),
            "queue": {
                "job_id": self.job_id,
                "partition": self.partition,
                "position": self.place,
                "pending": self.pending,
                "reason": self.reason,
                "expected_start": self.start.isoformat() if self.start else None,
            },
        }


def waiting(
    job: JobInfo, jobs: dict[str, JobInfo] | None, *, cpus: int = 0, memory_gb: float = 0, gpus: int = 0, now=None
) -> Waiting:
    """A pending job's Waiting; its place only where `jobs` holds every job of the cluster (not only the hub's)."""
    place = position(jobs, job) if jobs is not None else None
    return Waiting(
        job.job_id,
        job.partition,
        job.reason,
        waiting_for(job.reason, job.partition, cpus, memory_gb, gpus),
        place[0] if place else None,
        place[1] if place else None,
        expected_start(job, now),
    )
