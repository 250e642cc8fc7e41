"""Why a server's Slurm job ended before its server answered, in the job's own words.

The job's output (the batch script's --output file) says it: the wrapper's message (maintenance, an
overlay that cannot be used), Slurm's line for a job over its memory limit or a cancelled one, the image
runtime's FATAL line, the server's critical log line or the last line of its traceback. `cause` picks the
one that explains the end and says what the user can do about it. No JupyterHub import: unit-tested on its own, with
outputs captured from real jobs in the lab (tests/unit/fixtures/job_end).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WRAPPER_PREFIX = "clusterhub: "
# the batch script's first line ("clusterhub: job 42 on node1 for alice, 1 CPUs") reports, it explains nothing
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


@dataclass(frozen=True)
class Cause:
    what: str  # what happened, in the job's words
    advice: str  # what the user can do ("" where `what` says it already)

    def sentence(self) -> str:
        return f"{self.what}; {self.advice}" if self.advice else self.what


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def _last_exception(lines: list[str]) -> str:
    """The exception line after the last traceback of the output, or ""."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return ""
    for line in lines[starts[-1] + 1 :]:
        if _EXCEPTION.match(line):
            return line
    return ""


def cause(output: str, log: str = "") -> Cause:
    """The cause of a job's end read from its output; `log` names the output file for the advice."""
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
        )
    exception = _last_exception(lines)
    if exception:
        return Cause(
            f"the server failed ({_short(exception)})",
            f"check the Jupyter settings of your image or overlay (/etc/jupyter), or {see}",
        )
    real = [line for line in lines if not _BANNER.match(line)]
    if real:
        return Cause(f"its last words were: {_short(real[-1])}", see)
    if lines:
        return Cause("it ended right after its script started, without a word", f"start it again or {see}")
    return Cause("it wrote nothing (it was cancelled or failed before its script ran)", f"start it again or {see}")
