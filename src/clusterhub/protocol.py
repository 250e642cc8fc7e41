"""What the hub, hpc-gate, the batch script, the job wrapper and the roles' validation must agree on, once.

Standard library only. The hub side imports it; hpc-gate and the shell wrappers run on nodes without
clusterhub installed, so they carry the values themselves and tests/unit/test_protocol.py checks that every
copy (the gate's defaults, the roles' defaults and validation, the rendered wrappers) says exactly this.
The roles read these values through the `clusterhub_protocol` filter."""

from __future__ import annotations

import re

# A user name clusterhub runs anything as: POSIX-portable, at most 32 characters, may contain dots (j.doe),
# never starts with a digit, a dot or a dash. The hub, the gate, the wrappers and every role's validation use
# this one rule (bash's [[ =~ ]] reads it as the same ERE).
USER_NAME = r"^[a-z_][a-z0-9_.-]{0,31}$"
USER_NAME_RE = re.compile(USER_NAME)

# squeue -o: job id, long state, first node, reason (pending reason or "None"), user, partition, job name, priority,
# expected start time (pending jobs: Slurm's estimate, or N/A). The hub parses lines of these fields, in this order
# (and of the first seven, or four, from an hpc-gate configured before); hpc-gate lets exactly this format through.
SQUEUE_FORMAT = "%i|%T|%B|%r|%u|%P|%j|%Q|%S"
SQUEUE_FIELDS = ("job_id", "state", "node", "reason", "user", "partition", "name", "priority", "start")

# Slurm job names: direct mode's servers all carry the hub's job name; remote mode's carry
# `<job name>-<user>` (squeue on the shared account tells users apart by it).
DEFAULT_JOB_NAME = "jupyterhub"
JOB_NAME_SUFFIX_BAD = re.compile(r"[^A-Za-z0-9_.@+-]")  # what the gate's job-name rule allows


def remote_job_name(prefix: str, username: str) -> str:
    """`<prefix>-<user>`; characters Slurm or the gate would refuse become _ (64 characters of the user at most)."""
    return f"{prefix}-{JOB_NAME_SUFFIX_BAD.sub('_', username)[:64]}"


# The batch script's --output (direct mode), in the user's home; %j is Slurm's job id.
DIRECT_JOB_LOG = ".jupyterhub_slurmspawner_{job}.log"


def direct_job_log(job: str, home: str = "~") -> str:
    return f"{home}/{DIRECT_JOB_LOG.format(job=job)}"


# Remote mode's jobs write their output below the account's home (hpc-gate's `joblog` reads only there).
REMOTE_JOB_LOG_DIR = ".clusterhub/logs"

# Notebook runs (clusterhub.runs): their Slurm job name, their directories below the user's home
# (`<RUNS_DIR>/<run id>/`), a run's id (a UUID), the files of a run the service hands out, and the accounting
# fields it reads. In remote mode hpc-gate lets exactly these through (`sacct`, `runfile`).
RUNS_JOB_NAME = "clusterhub-run"
RUNS_DIR = ".clusterhub/runs"
RUN_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
RUN_FILE = r"^(input\.ipynb|output(-\d{1,4})?\.ipynb|job-\d{1,4}\.log)$"
SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,Timelimit,TotalCPU,AllocCPUS,ReqMem,MaxRSS,AllocTRES,Reason"


def parse_sacct(text: str) -> list[dict]:
    """sacct -n -P -o SACCT_FIELDS rows as dicts (the job's, its array tasks' and their steps')."""
    names = SACCT_FIELDS.split(",")
    return [dict(zip(names, line.split("|"), strict=False)) for line in text.splitlines() if line.strip()]


# The server's batch script ends with this status when the user's home has no room left (quota or disk): its
# own output, in that home, may be empty, and the hub reads the status from accounting (ENOSPC's number).
EXIT_HOME_FULL = 28


def gate_ssh(key: str, known_hosts: str, destination: str) -> list[str]:
    """How the hub's users (the hub's spawner, the runs service) log in to hpc-gate on the login node: their own
    key only, never a password or an agent, the login node's host key checked against the file the hpc_account
    role writes; the command line to run follows as one last word."""
    return [
        "/usr/bin/ssh",
        "-i",
        key,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "ServerAliveInterval=15",
        destination,
    ]


def values() -> dict[str, str]:
    """What the roles read (filter `clusterhub_protocol`)."""
    return {
        "user_name": USER_NAME,
        "squeue_format": SQUEUE_FORMAT,
        "default_job_name": DEFAULT_JOB_NAME,
        "direct_job_log": DIRECT_JOB_LOG.format(job="%j"),
        "remote_job_log_dir": REMOTE_JOB_LOG_DIR,
        "runs_job_name": RUNS_JOB_NAME,
        "runs_dir": RUNS_DIR,
        "sacct_fields": SACCT_FIELDS,
    }
