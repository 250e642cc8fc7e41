"""Notebook runs in remote HPC mode (partitions with `remote: true`), in process: the service's REST API on an offer
with a remote partition that runs as the users' own HPC accounts (`run_as: user`) and one that runs as the shared
account, every command going to a scripted hpc-gate over SSH. What the gate itself lets through is
test_hpc_gate.py's and test_protocol.py's (the same commands, through the real gate)."""

from __future__ import annotations

import json
import shlex

import pytest
from test_runs_service import NOTEBOOK, OFFER, call, make_service, submit_body

from clusterhub.protocol import SQUEUE_FORMAT
from clusterhub.runs.slurm import RemoteCommands, SlurmCommands, reconcile

SSH = ["/usr/bin/ssh", "-i", "/var/lib/clusterhub-runs/.ssh/clusterhub_hpc", "clusterhub-gate@login"]
REMOTE_OFFER = {
    **OFFER,
    "profiles": [
        *OFFER["profiles"],
        {"slug": "hpcown", "display_name": "HPC, own", "partition": "hpcown", "cpus": 1, "memory_gb": 1, "hours": 2},
    ],
    "partitions": [
        *OFFER["partitions"],
        {
            "name": "hpcown",
            "max_cpus": 2,
            "max_memory_gb": 4,
            "max_hours": 12,
            "max_gpus": 0,
            "remote": True,
            "run_as": "user",
        },
    ],
}


class Gate:
    """hpc-gate as the service sees it: what each command line answers (squeue in the gate's format)."""

    def __init__(self):
        self.calls, self.queue, self.acct, self.files, self.next_id = [], "", "", {}, 500

    def __call__(self, argv, stdin=None):
        assert argv[:-1] == SSH, argv
        words = shlex.split(argv[-1])
        self.calls.append((words, stdin))
        tool = words[2] if words[0] == "as" else words[0]
        if tool == "sbatch":
            self.next_id += 1
            return 0, f"{self.next_id}\n", ""
        if tool == "squeue":
            return 0, self.queue, ""
        if tool == "sacct":
            return 0, self.acct, ""
        return 0, "", ""

    def read(self, argv):
        words = shlex.split(argv[-1])
        self.calls.append((words, None))
        key = (words[1], words[3], words[4])  # as ACCOUNT runfile RUN FILE
        if key not in self.files:
            raise OSError(f"hpc-gate: runfile: {words[3]}/{words[4]}: No such file or directory")
        return self.files[key]


def remote_service(tmp_path, monkeypatch, user_map=None):
    remote = tmp_path / "runs-remote.json"
    remote.write_text(json.dumps({"ssh": SSH, "user_map": user_map or {}}))
    service = make_service(tmp_path, monkeypatch, offer=REMOTE_OFFER, remote_file=str(remote))
    service.gate = Gate()
    settings = service.app.settings["runs"]
    settings.slurm.remote = RemoteCommands(ssh=SSH, runner=service.gate, reader=service.gate.read)
    return service


def body(**extra):
    return submit_body(**{"profile": "hpcown", **extra})


def test_a_remote_run_goes_through_hpc_gate_as_the_owners_own_account(tmp_path, monkeypatch):
    service = remote_service(tmp_path, monkeypatch)
    slurm = SlurmCommands(runner=service.slurm, remote=service.app.settings["runs"].slurm.remote)

    async def scenario(base):
        status, created = await call(base, "scheduler/jobs", method="POST", body=body())
        assert status == 201, created
        run_id = created["job_id"]
        words, script = service.gate.calls[-1]
        assert words == ["as", "alice", "sbatch", "--parsable", "--job-name=clusterhub-run"]
        assert "#SBATCH --partition=hpcown" in script and "/opt/clusterhub/images/python.sif python3" in script
        assert service.slurm.calls == []  # nothing went to the cluster's own sbatch
        run = (await call(base, f"scheduler/jobs/{run_id}"))[1]
        assert (run["status"], run["slurm_job_id"], run["compute_type"]) == ("QUEUED", "501", "hpcown")
        # the gate's squeue format (job id, state, node, reason, user, partition, name, priority, start)
        service.gate.queue = "501|RUNNING|rnode1|None|alice|hpcown|clusterhub-run|4294|2026-12-07T10:00:00\n"
        assert reconcile(service.store, slurm) == {"IN_PROGRESS": 1}
        assert ["squeue", "-h", "--name=clusterhub-run", "-o", SQUEUE_FORMAT] in [w for w, _ in service.gate.calls]
        service.gate.queue = ""
        service.gate.acct = "501|COMPLETED|0:0|00:00:20|02:00:00|00:10|1|1G||cpu=1|None\n"
        assert reconcile(service.store, slurm) == {"COMPLETED": 1}
        assert service.gate.calls[-1][0] == ["as", "alice", "sacct", "501"]
        # its files, read as alice's HPC account through the gate
        service.gate.files[("alice", run_id, "output.ipynb")] = NOTEBOOK.encode()
        status, text = await call(base, f"scheduler/jobs/{run_id}/files/output.ipynb")
        assert status == 200 and text["cells"][0]["source"] == "n = 1"
        status, answer = await call(base, f"scheduler/jobs/{run_id}/files/job-0.log")
        assert status == 404 and "not there (yet)" in answer["message"]
        # bob: not his run, whatever door
        for method, path in [("GET", ""), ("PATCH", ""), ("GET", "/files/output.ipynb")]:
            status, _ = await call(
                base, f"scheduler/jobs/{run_id}{path}", token="bob-token", method=method, body={"status": "STOPPED"}
            )
            assert status == 404
        assert not any("scancel" in words for words, _ in service.gate.calls)

    service.run(scenario)


def test_a_remote_run_is_stopped_as_its_owners_account(tmp_path, monkeypatch):
    service = remote_service(tmp_path, monkeypatch, user_map={"alice": "a.smith"})

    async def scenario(base):
        run_id = (await call(base, "scheduler/jobs", method="POST", body=body()))[1]["job_id"]
        assert service.gate.calls[-1][0][:2] == ["as", "a.smith"]  # the site's map: alice is a.smith there
        assert (await call(base, f"scheduler/jobs/{run_id}", method="PATCH", body={"status": "STOPPED"}))[0] == 204
        assert service.gate.calls[-1][0] == ["as", "a.smith", "scancel", "501"]
        # bob has no HPC account in the map: refused, saying so, nothing submitted
        status, answer = await call(base, "scheduler/jobs", token="bob-token", method="POST", body=body())
        assert status == 400 and "none is known for bob" in answer["message"]
        assert [words[2] for words, _ in service.gate.calls if words[0] == "as"] == ["sbatch", "scancel"]

    service.run(scenario)


@pytest.mark.security
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # the shared account: every job of it could read every run's files
        ({"profile": "hpc"}, "one shared HPC account"),
        ({"profile": "custom", "partition": "hpc"}, "partition"),
        # remote nodes have no environment of their own
        ({"runtime_environment_name": "node"}, "runs its jobs in a container image only: choose one of"),
    ],
)
def test_remote_runs_refused_say_why_and_nothing_goes_to_the_gate(tmp_path, monkeypatch, extra, message):
    service = remote_service(tmp_path, monkeypatch)

    async def scenario(base):
        status, answer = await call(base, "scheduler/jobs", method="POST", body=body(**extra))
        assert status == 400 and message in answer["message"], answer
        assert service.gate.calls == [] and service.slurm.calls == []

    service.run(scenario)


def test_without_the_remote_settings_no_remote_partition_is_offered(tmp_path, monkeypatch):
    service = make_service(tmp_path, monkeypatch, offer=REMOTE_OFFER)

    async def scenario(base):
        environments = (await call(base, "scheduler/runtime_environments"))[1]
        assert "hpcown" not in environments[0]["compute_types"]
        status, answer = await call(base, "scheduler/jobs", method="POST", body=body())
        assert status == 400 and "remote HPC mode, which this service is not set up to reach" in answer["message"]
        assert service.slurm.calls == []

    service.run(scenario)
