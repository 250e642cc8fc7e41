"""Why a server's Slurm job ended before its server answered, in the job's own words.

The job's output (the batch script's --output file) says it: the wrapper's message (maintenance, an
overlay that cannot be used), Slurm's line for a job over its memory limit or a cancelled one, the image
runtime's FATAL line, the server's critical log line or the last line of its traceback. `cause` picks the
one that explains the end and says what the user can do about it. Where the output cannot say it (the node died
under the job, a full home that took the output with it), Slurm's accounting does: `accounted` reads the job's
final state and exit status (sacct). A server that crashed is shown with the last lines of its log. No JupyterHub
import: unit-tested on its own, with outputs captured from real jobs in the lab (tests/unit/fixtures/job_end).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..protocol import EXIT_HOME_FULL

WRAPPER_PREFIX = "clusterhub: "
# the batch script's first line ("clusterhub: job 42 on node1 for alice, 1 CPUs, at 2026-12-07T16:21:01.337")
# reports, it explains nothing
_BANNER = re.compile(r"^clusterhub: job \d+ on ")
# slurmstepd: "*** JOB 42 ON node1 CANCELLED AT 2026-12-01T10:00:00 ***" (also "... DUE TO TIME LIMIT ***")
_CANCELLED = re.compile(r"\*\*\* (?:JOB|STEP) [\d.]+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))?(?: \*\*\*|$)")
# slurmstepd's memory enforcement: cgroup ("Detected 1 oom_kill event"), accounting ("exceeded memory limit")
_MEMORY = re.compile(r"oom[-_ ]kill|exceeded (?:job )?memory limit|out of memory", re.IGNORECASE)
# accounting's enforcement says by how much: "StepId=42.batch exceeded memory limit (1806069760 > 1073741824)"
_MEMORY_USE = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")
_SLURMSTEPD = re.compile(r"^slurmstepd(?:-\S+)?: error: ")
# Apptainer / Singularity: "FATAL:   could not open image ..."
_RUNTIME = re.compile(r"^(?:FATAL|ERROR)\s*:\s+(.+)$")
# a Jupyter server's critical log line ("[C 2026-12-01 10:11:55.749 ServerApp] Bad config encountered ..."),
# but not the one for the signal that stopped it
_CRITICAL = re.compile(r"^\[C [\d-]+ [\d:.]+ \w+\] (?!received signal)(.+)$")
# the exception line that ends a Python traceback: "ModuleNotFoundError: No module named 'x'"
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)(?::\s.*)?$")
MAX_CHARS = 300
# a crashed server's message ends with this many of its log's last lines, each this long at most
TAIL_LINES = 3
TAIL_CHARS = 160


@dataclass(frozen=True)
class Cause:
    what: str  # what happened, in the job's words
    advice: str  # what the user can do ("" where `what` says it already)
    tail: tuple[str, ...] = ()  # the log's last lines, for a server that crashed
    vague: bool = False  # the output does not explain the end: accounting may
    beyond_output: bool = False  # accounting's cause that no output can show (the job died with its node)

    def sentence(self) -> str:
        said = f"{self.what}; {self.advice}" if self.advice else self.what
        return f"{said}; its log ends: {' | '.join(self.tail)}" if self.tail else said


HOME_FULL = Cause(
    "your home directory is full (no space or quota left)",
    "delete or move files there (du -sh ~/* ~/.[!.]* | sort -h lists the largest), then start again",
)
_ANOTHER_NODE = "start it again: Slurm runs it on a working node"
# Slurm's final states that explain an end the job's output cannot
_STATES = {
    "NODE_FAIL": Cause("its compute node failed", _ANOTHER_NODE, beyond_output=True),
    "BOOT_FAIL": Cause("its compute node failed to boot", _ANOTHER_NODE, beyond_output=True),
    "PREEMPTED": Cause(
        "a job of higher priority preempted it",
        "start it again, or choose a partition without preemption",
        beyond_output=True,
    ),
    "TIMEOUT": Cause("it reached its time limit", "choose more hours and start again"),
    "OUT_OF_MEMORY": Cause("it ran out of memory", "choose more memory and start again"),
}


def accounted(rows: list[dict], job: str) -> Cause | None:
    """The cause in Slurm's accounting of the job (sacct rows, protocol.parse_sacct), where it has one."""
    row = next((r for r in rows if r.get("JobID") == job), None)
    if row is None:
        return None
    state = (row.get("State") or "").split(" ")[0]
    if state in _STATES:
        return _STATES[state]
    if (row.get("ExitCode") or "").split(":")[0] == str(EXIT_HOME_FULL):
        return HOME_FULL
    return None


def cut(text: str, limit: int) -> str:
    """text, or its first limit-1 characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(text: str) -> str:
    return cut(" ".join(text.split()), MAX_CHARS)


def _last_exception(lines: list[str]) -> str:
    """The exception line after the last traceback of the output, or ""."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return ""
    for line in lines[starts[-1] + 1 :]:
        if _EXCEPTION.match(line):
            return line
    return ""


def cause(output: str, log: str = "", accounting: Cause | None = None) -> Cause:
    """The cause of a job's end: from its output, or from `accounting` (accounted()) where that explains more (a
    failed node, a preemption) or the output explains nothing; `log` names the output file for the advice."""
    found = _from_output(output, log)
    if accounting is not None and (found.vague or accounting.beyond_output):
        return accounting
    return found


def _tail(lines: list[str]) -> tuple[str, ...]:
    real = [line.strip() for line in lines if not _BANNER.match(line)]
    return tuple(cut(line, TAIL_CHARS) for line in real[-TAIL_LINES:])


def _from_output(output: str, log: str) -> Cause:
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    see = f"see {log}" if log else "see the job's output"
    memory = [line for line in lines if _MEMORY.search(line)]
    if memory:
        used = next((m for m in map(_MEMORY_USE.search, memory) if m), None)
        detail = (
            f"it used {int(used.group(1)) / 2**30:.1f} GiB of its {int(used.group(2)) / 2**30:.1f} GiB"
            if used
            else _short(_SLURMSTEPD.sub("", memory[-1]))
        )
        return Cause(f"it ran out of memory ({detail})", "choose more memory and start again")
    for line in reversed(lines):
        match = _CANCELLED.search(line)
        if match:
            if match.group(1) and "TIME" in match.group(1):
                return Cause("it reached its time limit", "choose more hours and start again")
            return Cause("it was cancelled (scancel by you or an administrator)", "start it again")
    wrapper = [line for line in lines if line.startswith(WRAPPER_PREFIX) and not _BANNER.match(line)]
    if wrapper:
        return Cause(_short(wrapper[-1][len(WRAPPER_PREFIX) :]), "")
    for line in reversed(lines):
        match = _RUNTIME.match(line.strip())
        if match:
            return Cause(
                f"the container runtime failed ({_short(match.group(1))})",
                "choose another image or ask the administrators",
            )
    critical = [match.group(1) for match in map(_CRITICAL.match, lines) if match]
    if critical:
        return Cause(
            f"the server failed ({_short(critical[-1])})",
            f"check the Jupyter settings of your image or overlay (/etc/jupyter), or {see}",
            _tail(lines),
        )
    exception = _last_exception(lines)
    if exception:
        return Cause(
            f"the server failed ({_short(exception)})",
            f"check the Jupyter settings of your image or overlay (/etc/jupyter), or {see}",
            _tail(lines),
        )
    real = [line for line in lines if not _BANNER.match(line)]
    if real:
        return Cause(f"its last words were: {_short(real[-1])}", see, _tail(lines[:-1]), vague=True)
    if lines:
        return Cause("it ended right after its script started, without a word", f"start it again or {see}", vague=True)
    return Cause(
        "it wrote nothing (it was cancelled or failed before its script ran)", f"start it again or {see}", vague=True
    )
