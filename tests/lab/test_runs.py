"""Notebook runs' Slurm side in the lab: the batch scripts of clusterhub.runs submitted as alice with sbatch (as the
runs service will), executed by real papermill in the lab's python SIF and in the nodes' environment, followed
through squeue and sacct with clusterhub.runs.states, with real accounting (slurmdbd)."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import PREFIX, wait_for
from hubclient import parameterised_notebook

from clusterhub.protocol import SACCT_FIELDS, parse_sacct
from clusterhub.runs import job as runjob
from clusterhub.runs import states

pytestmark = pytest.mark.apptainer

SIF = "/opt/clusterhub/images/python.sif"
IMAGES = [{"name": "node", "path": ""}, {"name": "python", "path": SIF}]
PARTITIONS = [{"name": "jupyter", "max_cpus": 2, "max_memory_gb": 4, "max_hours": 12, "max_gpus": 0}]
SMALL = {"profile": "custom", "partition": "jupyter", "cpus": "1", "memory_gb": "1", "hours": "0.25"}


def submit(job: runjob.RunJob, user: str = "alice") -> str:
    """sbatch of the run's script on the login node as `user`, the script on standard input (as the service and
    hpc-gate give it)."""
    done = subprocess.run(
        ["docker", "exec", "-i", f"{PREFIX}-login", "sudo", "-u", user, "sbatch", "--parsable"],
        input=runjob.batch_script(job),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def state(login, jobid: str) -> states.RunState | None:
    rows = [
        tuple(line.split("|"))
        for line in login.check_output(
            f"squeue -h -r -j {jobid} -o '{states.SQUEUE_FORMAT}' 2>/dev/null || true"
        ).splitlines()
        if line
    ]
    return states.from_squeue(rows) or states.from_sacct(sacct(login, jobid))


def sacct(login, jobid: str) -> list[dict]:
    return parse_sacct(login.check_output(f"sacct -n -P -j {jobid} -o {SACCT_FIELDS} || true"))


def finished(login, jobid: str, timeout: float = 180) -> states.RunState:
    return wait_for(
        lambda: (s := state(login, jobid)) and s.status not in (states.QUEUED, states.IN_PROGRESS) and s,
        timeout=timeout,
        interval=2,
        what=f"run job {jobid} finished",
    )


def output(login, job: runjob.RunJob, task: int = 0, user: str = "alice") -> dict:
    return json.loads(login.file(f"/home/{user}/{job.run_dir}/{job.output_name(task)}").content_string)


def printed(nb: dict) -> str:
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


def build(source: str, parameters: dict, image: str = "python", **kwargs) -> runjob.RunJob:
    return runjob.build(
        {**SMALL, "image": image},
        parameterised_notebook(source),
        parameters,
        profiles=[],
        partitions=PARTITIONS,
        images=IMAGES,
        **kwargs,
    )


@pytest.mark.security
def test_a_run_executes_as_the_user_with_typed_parameters_in_the_image(login, nodes):
    label = "it's; $(touch /tmp/pwned) `id`"
    job = build(
        "import os, sys\nprint(n * n, type(n).__name__, label, os.getuid(), sys.prefix != '/opt/jupyter')",
        {"n": 5, "label": label},
    )
    jobid = submit(job)
    assert finished(login, jobid) == states.RunState("COMPLETED", "completed")
    out = output(login, job)
    assert printed(out).split("\n")[0] == f"25 int {label} 2001 True"  # the SIF's Python, as alice
    run_dir = login.file(f"/home/alice/{job.run_dir}")
    assert (run_dir.user, run_dir.mode) == ("alice", 0o700)
    # the label reached the notebook as a string and ran nowhere as shell
    assert not any(host.file("/tmp/pwned").exists for host in [login, *nodes])
    # bob cannot read alice's run
    refused = login.run(f"sudo -u bob cat /home/alice/{job.run_dir}/output.ipynb")
    assert refused.rc != 0 and "Permission denied" in refused.stderr
    # accounting has what the run used
    eff = wait_for(lambda: states.efficiency(sacct(login, jobid)), timeout=60, what="sacct record")
    assert eff.cpus == 1 and eff.requested_memory_bytes == 2**30 and eff.time_limit_s == 900 and eff.elapsed_s > 0


def test_a_failing_notebook_fails_with_its_cell_and_traceback(login):
    job = build("raise ValueError(f'bad n: {n}')", {"n": 3}, image="node")  # the nodes' own environment
    jobid = submit(job)
    result = finished(login, jobid)
    assert result.status == "FAILED" and "exit code 1" in result.message
    cell = states.failed_cell(output(login, job))
    assert (cell["ename"], cell["evalue"]) == ("ValueError", "bad n: 3")
    assert cell["source"] == "raise ValueError(f'bad n: {n}')" and any("ValueError" in t for t in cell["traceback"])
    assert "ended with status 1" in login.file(f"/home/alice/{job.run_dir}/job-0.log").content_string


def test_a_sweep_is_one_array_job_with_an_output_per_value(login):
    job = build("print(n * n)", {"n": [1, 2, 3, 4]}, sweep="n")
    jobid = submit(job)
    assert finished(login, jobid) == states.RunState("COMPLETED", "completed (4 tasks)")
    tasks = {row["JobID"] for row in sacct(login, jobid) if "." not in row["JobID"]}
    assert tasks == {f"{jobid}_{i}" for i in range(4)}
    assert [printed(output(login, job, i)).strip() for i in range(4)] == ["1", "4", "9", "16"]


def test_a_run_stopped_by_its_user_is_stopped(login):
    job = build("import time\ntime.sleep(600)", {"n": 1})
    jobid = submit(job)
    wait_for(lambda: state(login, jobid).status == "IN_PROGRESS", timeout=60, what="run started")
    refused = login.run(f"sudo -u bob scancel {jobid}")  # another user cannot
    assert refused.rc != 0 and state(login, jobid).status == "IN_PROGRESS"
    login.check_output(f"sudo -u alice scancel {jobid}")
    assert finished(login, jobid) == states.RunState("STOPPED", "stopped")
    assert login.check_output(f"squeue -h -j {jobid} 2>/dev/null || true") == ""
