"""A run's state from what Slurm says: squeue while the job is queued or running, sacct after, in the states and
words of jupyter-scheduler (QUEUED, IN_PROGRESS, COMPLETED, FAILED, STOPPED, with a status message); and the
finished run's efficiency from accounting (elapsed vs. requested time, CPU, peak memory vs. requested, GPUs).

A sweep is one array job: its state is its tasks' together (any still running: IN_PROGRESS; all completed:
COMPLETED; any failed: FAILED, naming how many and why; stopped by the user: STOPPED).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clusterhub.runs.data import EXIT_DATA, EXIT_TIME_LIMIT, WRITE_BACK_LEAD_S

QUEUED, IN_PROGRESS, COMPLETED, FAILED, STOPPED = "QUEUED", "IN_PROGRESS", "COMPLETED", "FAILED", "STOPPED"
# squeue -h -j JOB -r -o "%i|%T|%r"; sacct -n -P -X -j JOB -o these fields (and the batch steps for MaxRSS)
SQUEUE_FORMAT = "%i|%T|%r"
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
# a final Slurm state, and what a user reads about it
FAILED_WORDS = {
    "FAILED": "the notebook failed",
    "TIMEOUT": "time limit reached: ask for more hours, or make the notebook faster",
    "OUT_OF_MEMORY": "out of memory: the run needed more than the memory it asked for",
    "NODE_FAIL": "the compute node failed; run it again",
    "BOOT_FAIL": "the compute node failed to boot; run it again",
    "PREEMPTED": "preempted by a job of higher priority; run it again",
    "DEADLINE": "its deadline passed before it could run",
}


@dataclass(frozen=True)
class RunState:
    status: str
    message: str


def _final(state: str, exit_code: str) -> RunState:
    word = state.split(maxsplit=1)[0] if state else ""  # "CANCELLED by 2001"
    if word == "COMPLETED":
        return RunState(COMPLETED, "completed")
    if word == "CANCELLED":
        return RunState(STOPPED, "stopped")
    if word == "FAILED":
        code = exit_code.split(":", maxsplit=1)[0] if exit_code else "?"
        if code == str(EXIT_DATA):
            return RunState(FAILED, "its external data could not be copied: the job log says which and why")
        if code == str(EXIT_TIME_LIMIT):
            return RunState(
                FAILED,
                f"time limit reached: the notebook was stopped {WRITE_BACK_LEAD_S} s before it to write its outputs"
                " back; ask for more hours, or make the notebook faster",
            )
        return RunState(FAILED, f"the notebook failed (exit code {code}): see the failing cell and the job log")
    return RunState(FAILED, FAILED_WORDS.get(word, f"Slurm ended the job as {word or 'unknown'}"))


def from_squeue(rows: list[tuple[str, str, str]]) -> RunState | None:
    """The state of a job (or its array tasks) in the queue, from squeue's (id, state, reason) rows; None when the
    queue no longer has it (then sacct knows)."""
    states = [state for _, state, _ in rows]
    if not states:
        return None
    if any(state in RUNNING_STATES for state in states):
        running = sum(state in RUNNING_STATES for state in states)
        detail = f" ({running} of {len(states)} tasks running)" if len(states) > 1 else ""
        return RunState(IN_PROGRESS, f"running{detail}")
    reasons = sorted({reason for _, state, reason in rows if state in QUEUED_STATES and reason not in ("", "None")})
    return RunState(QUEUED, f"queued ({', '.join(reasons)})" if reasons else "queued")


def _is_step(job_id: str) -> bool:
    return "." in job_id


def base_job_id(job_id: str) -> str:
    """The job of an array task or a step: 7 for 7, 7_2, 7.batch and 7_2.batch."""
    return job_id.split(".", maxsplit=1)[0].split("_", maxsplit=1)[0]


def from_sacct(rows: list[dict]) -> RunState | None:
    """The final state from sacct's rows of the job (array tasks together); None while accounting has no final
    record of every task yet (slurmdbd behind, or down: it catches up)."""
    jobs = [row for row in rows if not _is_step(row["JobID"])]
    if not jobs or any(row["State"].split()[0] in QUEUED_STATES | RUNNING_STATES for row in jobs):
        return None
    finals = [_final(row["State"], row.get("ExitCode", "")) for row in jobs]
    if len(finals) == 1:
        return finals[0]
    if any(state.status == STOPPED for state in finals):
        return RunState(STOPPED, f"stopped ({sum(s.status == COMPLETED for s in finals)} of {len(finals)} completed)")
    failed = [state for state in finals if state.status == FAILED]
    if failed:
        why = "; ".join(sorted({state.message for state in failed}))
        return RunState(FAILED, f"{len(failed)} of {len(finals)} tasks failed: {why}")
    return RunState(COMPLETED, f"completed ({len(finals)} tasks)")


def lost(reason: str = "") -> RunState:
    """A job that neither squeue nor sacct knows any more."""
    return RunState(FAILED, reason or "the job vanished from Slurm (neither the queue nor accounting knows it)")


# --- efficiency ----------------------------------------------------------------------------------------------

_SIZE = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def seconds(text: str) -> float | None:
    """Slurm's [D-]HH:MM:SS[.mmm] or MM:SS[.mmm] as seconds (None for UNLIMITED or empty)."""
    match = re.match(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$", text.strip())
    if not match:
        return None
    days, hours, minutes, secs = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)


def size_bytes(text: str) -> float | None:
    """1024K, 2.5G, 1G (ReqMem, MaxRSS) as bytes; a bare number is bytes (MaxRSS 0)."""
    match = re.match(r"^(\d+(?:\.\d+)?)([KMGT]?)[nc]?$", text.strip())
    if not match:
        return None
    number, unit = match.groups()
    return float(number) * _SIZE.get(unit, 1)


@dataclass(frozen=True)
class Efficiency:
    elapsed_s: float
    time_limit_s: float | None
    cpus: int
    cpu_efficiency: float | None  # TotalCPU / (elapsed x CPUs)
    peak_memory_bytes: float | None
    requested_memory_bytes: float | None
    gpus: int

    @property
    def time_used(self) -> float | None:
        return self.elapsed_s / self.time_limit_s if self.time_limit_s else None

    @property
    def memory_used(self) -> float | None:
        if self.peak_memory_bytes is None or not self.requested_memory_bytes:
            return None
        return self.peak_memory_bytes / self.requested_memory_bytes

    def advice(self) -> list[str]:
        """What to ask for next time, one sentence each (nothing when the request fits)."""
        notes = []
        if self.time_used is not None and self.time_used < 0.25 and self.time_limit_s >= 3600:
            notes.append(f"it used {self.time_used:.0%} of its time limit: ask for fewer hours to start sooner")
        if self.cpu_efficiency is not None and self.cpus > 1 and self.cpu_efficiency < 0.5:
            notes.append(f"its {self.cpus} CPUs were {self.cpu_efficiency:.0%} busy: ask for fewer CPUs")
        if self.memory_used is not None and self.memory_used < 0.25:
            notes.append(f"its peak memory was {self.memory_used:.0%} of what it asked for: ask for less")
        return notes


def efficiency(rows: list[dict]) -> Efficiency | None:
    """The finished job's efficiency from sacct's rows: the allocation's row and its steps' peak memory. For an
    array, the first task (each task asked for the same)."""
    jobs = [row for row in rows if not _is_step(row["JobID"])]
    if not jobs:
        return None
    job = jobs[0]
    steps = [row for row in rows if row["JobID"].startswith(job["JobID"] + ".")]
    elapsed = seconds(job["Elapsed"]) or 0.0
    cpus = int(job["AllocCPUS"] or 0)
    total_cpu = seconds(job["TotalCPU"])
    rss = [size_bytes(step["MaxRSS"]) for step in steps if step.get("MaxRSS")]
    gpus = re.search(r"gres/gpu=(\d+)", job.get("AllocTRES", ""))
    return Efficiency(
        elapsed_s=elapsed,
        time_limit_s=seconds(job["Timelimit"]),
        cpus=cpus,
        cpu_efficiency=(total_cpu / (elapsed * cpus)) if total_cpu is not None and elapsed and cpus else None,
        peak_memory_bytes=max((r for r in rss if r is not None), default=None),
        requested_memory_bytes=size_bytes(job["ReqMem"]),
        gpus=int(gpus.group(1)) if gpus else 0,
    )


# --- the executed notebook --------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours in tracebacks


def failed_cell(notebook: dict) -> dict | None:
    """The cell that raised in an executed notebook: {index, source, ename, evalue, traceback} (ANSI colours
    removed), or None."""
    for index, cell in enumerate(notebook.get("cells", [])):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") == "error":
                source = cell.get("source", "")
                return {
                    "index": index,
                    "source": "".join(source) if isinstance(source, list) else source,
                    "ename": output.get("ename", ""),
                    "evalue": output.get("evalue", ""),
                    "traceback": [ANSI.sub("", line) for line in output.get("traceback", [])],
                }
    return None
