"""Notebook runs in remote HPC mode: the runs service submits through hpc-gate on the login node, with a key of its
own, as the user's own HPC account (partition hpcown); the job runs papermill in the python SIF on rnode1, which
the hub cannot reach; the service follows it (squeue, sacct) and reads its files (runfile) through the gate.
Real hub, real Slurm with accounting, real Apptainer, real sshd and hpc-gate."""

from __future__ import annotations

import json

import pytest
from conftest import PLAYBOOK, wait_for
from test_runs_service import api, create, finished, refused

pytestmark = [
    pytest.mark.remote,
    pytest.mark.apptainer,
    pytest.mark.skipif(PLAYBOOK != "playbooks/site.yml", reason="the scenario did not converge the hub"),
]
OWN = {"profile": "hpcown", "runtime_environment_name": "python"}
RUNS_KEY = "/var/lib/clusterhub-runs/.ssh/clusterhub_hpc"
GATE_SSH = (
    f"ssh -i {RUNS_KEY} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes"
    " -o UserKnownHostsFile=/var/lib/clusterhub-runs/.ssh/clusterhub_hpc_known_hosts clusterhub-gate@login"
)


def test_a_remote_run_completes_on_rnode1_as_alices_own_account_and_only_she_reaches_it(hub_as, login):
    alice, bob = hub_as("alice"), hub_as("bob")
    created = create(alice, "import socket\nprint('square', n * n, 'on', socket.gethostname())", **OWN)
    run = finished(alice, created["job_id"], timeout=300)
    assert (run["status"], run["compute_type"]) == ("COMPLETED", "hpcown"), run
    # her job, in accounting: her own account, the remote partition, the node the hub cannot reach
    job = created["slurm_job_id"]
    assert login.check_output(f"sacct -n -X -P -j {job} -o User,Partition,NodeList,State") == (
        "alice|hpcown|rnode1|COMPLETED"
    )
    assert run["efficiency"]["elapsed_s"] >= 0  # from sacct, through the gate
    # the executed notebook and the log, read as alice through the gate
    out = api(alice, "GET", f"/jobs/{created['job_id']}/files/output.ipynb")
    assert out.status_code == 200 and "square 25 on rnode1" in json.dumps(out.json())
    assert "task 0 ended with status 0" in api(alice, "GET", f"/jobs/{created['job_id']}/files/job-0.log").text
    # in her home, hers alone
    run_dir = f"/home/alice/.clusterhub/runs/{created['job_id']}"
    assert login.check_output(f"stat -c '%U %a' {run_dir}") == "alice 700"
    # bob: not his, through any door
    for method, path in [("GET", ""), ("GET", "/files/output.ipynb"), ("PATCH", "")]:
        r = api(bob, method, f"/jobs/{created['job_id']}{path}", json={"status": "STOPPED"})
        assert r.status_code == 404, (method, path, r.text)


@pytest.mark.security
def test_the_shared_accounts_partition_and_the_nodes_own_environment_are_refused_for_runs(hub_as, login):
    bob = hub_as("bob")
    before = login.check_output("squeue -h --name=clusterhub-run -o %i | sort")
    refused(bob, {"profile": "hpc"}, "one shared HPC account")
    refused(bob, {"profile": "hpcown", "runtime_environment_name": "node"}, "in a container image only")
    assert login.check_output("squeue -h --name=clusterhub-run -o %i | sort") == before


def test_a_remote_run_stopped_from_the_api_leaves_slurm(hub_as, login):
    alice = hub_as("alice")
    created = create(alice, "import time\ntime.sleep(600)", **OWN)
    job = created["slurm_job_id"]
    wait_for(
        lambda: api(alice, "GET", f"/jobs/{created['job_id']}").json()["status"] == "IN_PROGRESS",
        timeout=120,
        interval=2,
        what="the remote run running",
    )
    assert api(alice, "PATCH", f"/jobs/{created['job_id']}", json={"status": "STOPPED"}).status_code == 204
    run = finished(alice, created["job_id"])
    assert run["status"] == "STOPPED", run
    assert login.check_output(f"squeue -h -j {job} -o %i || true") == ""
    assert login.check_output(f"sacct -n -X -P -j {job} -o User,State").startswith("alice|CANCELLED")


@pytest.mark.security
def test_the_runs_services_key_opens_only_hpc_gate_and_only_for_runs_of_its_users(hub, login):
    """The service's own key: its user's alone on the hub; on the login node hpc-gate answers it, nothing else."""
    assert hub.check_output(f"stat -c '%U %a' {RUNS_KEY}") == "clusterhub-runs 600"
    assert hub.run(f"sudo -n -u jupyterhub cat {RUNS_KEY}").rc != 0  # not even the hub's own service user

    def gate(command: str):
        return hub.run(f"sudo -n -u clusterhub-runs {GATE_SSH} {command!r}")

    run_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    for command, message in [
        ("bash -i", "'bash' is not allowed"),
        ("as alice cat /etc/shadow", "'cat' is not allowed"),
        (f"as alice runfile {run_id} ../../.ssh/id_ed25519", "runfile: a run id and one of"),
        (f"as root runfile {run_id} output.ipynb", "root is a system account"),
        ("as alice sacct 1,2;id", "sacct: exactly one list"),
        ("as alice sbatch --parsable --job-name=other", "job names must be"),
    ]:
        result = gate(command)
        assert result.rc == 2 and message in result.stderr, (command, result.stderr)
    # what it may do: alice's accounting, as alice (PrivateData: only her jobs)
    assert gate("as alice sacct 1").rc == 0
