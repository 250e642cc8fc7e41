"""Fake `sbatch`, `squeue`, `scancel` and `sacct` executables for in-process spawner tests, the way batchspawner's own
suite tests its spawners: real subprocesses the spawner runs through its configured commands, sharing one
JSON file as the "controller". squeue prints whatever `-o` format it is given (so the hub's SQUEUE_FORMAT is
exercised, not restated), and fails like Slurm's does while the controller is down."""

from __future__ import annotations

import contextlib
import fcntl
import json
import sys
from pathlib import Path

# one program for the three commands: argv[0]'s name says which
PROGRAM = r"""
import fcntl, json, os, sys, time
from pathlib import Path

state_file = Path(sys.argv[0]).parent.parent / "slurm.json"
lock = open(state_file.with_suffix(".lock"), "w")
fcntl.flock(lock, fcntl.LOCK_EX)  # one command at a time, as one controller answers
state = json.loads(state_file.read_text())
command = Path(sys.argv[0]).name
args = sys.argv[1:]
state["calls"].append([command, *args])


def save():
    state_file.write_text(json.dumps(state))


def option(short, long, default=None):
    # the value of -x VALUE, --long VALUE or --long=VALUE (as Slurm's commands take them)
    for i, word in enumerate(args):
        if word in (short, long) and i + 1 < len(args):
            return args[i + 1]
        if word.startswith(long + "="):
            return word.split("=", 1)[1]
    return default


if state["down"]:
    save()
    sys.stderr.write(command + ": error: Unable to contact slurm controller (connect failure)\n")
    sys.exit(1)
if command == "sbatch" and "--test-only" in args:
    # sbatch's answer on its standard error; the start (or error) a test set for the partition, else now
    partition = option("-p", "--partition", "batch")
    answer = state.get("test_only", {}).get(partition) or time.strftime("%Y-%m-%dT%H:%M:%S")
    save()
    if answer.startswith("error: "):
        sys.stderr.write("sbatch: " + answer + "\n")
        sys.exit(1)
    cpus = option("-c", "--cpus-per-task", "1")
    sys.stderr.write(f"sbatch: Job {state['next_id']} to start at {answer} using {cpus} processors on nodes node1"
                     f" in partition {partition}\n")
elif command == "sbatch":
    job = str(state["next_id"])
    state["next_id"] += 1
    user = os.environ.get("FAKE_SLURM_USER", "alice")
    name = option("-J", "--job-name", "jupyterhub")
    state["jobs"][job] = {"state": "PENDING", "node": "", "reason": "Priority", "user": user, "partition": "batch",
                          "name": name, "priority": str(100000 - int(job)), "start": "N/A"}
    state["scripts"][job] = sys.stdin.read()
    save()
    print(job)
elif command == "scancel":
    user = option("-u", "--user")
    for job in [a for a in args if a.isdigit()]:
        if user and state["jobs"].get(job, {}).get("user") != user:
            continue
        state["cancelled"].append(job)
        if job in state["jobs"]:
            state["jobs"][job]["state"] = "CANCELLED"
    save()
elif command == "squeue":
    fmt = option("-o", "--format")
    name = option("-n", "--name")
    user = option("-u", "--user")
    fields = {"i": None, "T": "state", "B": "node", "r": "reason", "u": "user", "P": "partition", "j": "name",
              "Q": "priority", "S": "start"}
    save()
    for job, info in state["jobs"].items():
        if info["state"] not in ("PENDING", "RUNNING", "COMPLETING"):
            continue
        if (name and info["name"] != name) or (user and info["user"] != user):
            continue
        line = fmt
        for letter, key in fields.items():
            line = line.replace("%" + letter, job if key is None else (info.get(key) or "n/a"))
        print(line)
elif command == "sacct":
    # --jobs=ID,... of --user, in --format's fields (-P: |-separated): what the runs service reads of a job
    jobs = option("-j", "--jobs", "").split(",")
    user = option("-u", "--user")
    save()
    for job in jobs:
        info = state["jobs"].get(job)
        if info is None or (user and info["user"] != user):
            continue
        exit_code = info.get("exit_code", "0:0" if info["state"] == "COMPLETED" else "1:0")
        values = {"JobID": job, "State": info["state"], "ExitCode": exit_code}
        print("|".join(values.get(name, "") for name in option("-o", "--format").split(",")))
"""


class FakeSlurm:
    """The controller's state in `dir/slurm.json`, the commands in `dir/bin`."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.bin = directory / "bin"
        self.bin.mkdir(parents=True)
        self.state_file = directory / "slurm.json"
        self._write({"next_id": 100, "jobs": {}, "scripts": {}, "cancelled": [], "calls": [], "down": False})
        for name in ("sbatch", "squeue", "scancel", "sacct"):
            path = self.bin / name
            path.write_text(f"#!{sys.executable}\n{PROGRAM}")
            path.chmod(0o755)

    def _read(self) -> dict:
        return json.loads(self.state_file.read_text())

    def _write(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state))

    @contextlib.contextmanager
    def _state(self):
        with open(self.state_file.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            yield state
            self._write(state)

    def update(self, job: str, **changes) -> None:
        with self._state() as state:
            state["jobs"][job].update(changes)

    def run(self, job: str, node: str = "127.0.0.1") -> None:
        self.update(job, state="RUNNING", node=node, reason="None")

    def end(self, job: str, state: str = "COMPLETED") -> None:
        self.update(job, state=state)

    def answer_test_only(self, partition: str, answer: str) -> None:
        """What sbatch --test-only says for the partition: a start ("2026-12-07T18:00:00") or "error: ..."."""
        with self._state() as state:
            state.setdefault("test_only", {})[partition] = answer

    def set_down(self, down: bool = True) -> None:
        with self._state() as state:
            state["down"] = down

    @property
    def jobs(self) -> dict[str, dict]:
        return self._read()["jobs"]

    @property
    def cancelled(self) -> list[str]:
        return self._read()["cancelled"]

    @property
    def calls(self) -> list[list[str]]:
        return self._read()["calls"]

    def script(self, job: str) -> str:
        return self._read()["scripts"][job]
