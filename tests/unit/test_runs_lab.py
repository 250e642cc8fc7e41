"""The JupyterLab door (src/clusterhub/runs/lab.py): jupyter-scheduler's scheduler API, served by the real runs
service in process (tests/unit/test_runs_service.py's fixture: real handlers and store, Slurm scripted)."""

from __future__ import annotations

import ast
import asyncio
import json
import re
from pathlib import Path

import pytest
import test_runs_service
from jupyter_scheduler.exceptions import SchedulerError
from jupyter_scheduler.models import (
    CountJobsQuery,
    CreateJob,
    CreateJobDefinition,
    ListJobDefinitionsQuery,
    ListJobsQuery,
    Status,
)

from clusterhub.runs import lab
from clusterhub.runs.service import fire_due
from clusterhub.runs.slurm import SlurmCommands, reconcile

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = test_runs_service.NOTEBOOK
service = test_runs_service.service  # the in-process service (fixture)


def scheduler(base: str, root: Path, monkeypatch, token: str = "alice-token") -> lab.HubRunsScheduler:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    environments = lab.HubRunsEnvironments()
    made = lab.HubRunsScheduler(root_dir=str(root), environments_manager=environments, db_url="sqlite://")
    made.service = environments.service = lab.Service(base, token, timeout=10)
    return made


def create(notebook: str = "n.ipynb", **extra) -> CreateJob:
    values = {
        "input_uri": notebook,
        "input_filename": notebook,
        "runtime_environment_name": "python",
        "name": "n",
        "parameters": {"n": "5", "label": "five", "ks": "[1, 2]"},
        "compute_type": "small",
        "output_formats": ["ipynb", "html"],
    }
    return CreateJob(**(values | extra))


def test_a_job_from_the_dialog_is_a_run_with_typed_parameters_and_its_files_download(service, tmp_path, monkeypatch):
    (tmp_path / "n.ipynb").write_text(NOTEBOOK)

    async def scenario(base):
        lab_scheduler = scheduler(base, tmp_path, monkeypatch)
        run_id = await lab_scheduler.create_job(create())
        argv, script = service.slurm.calls[-1]
        assert argv == ["sudo", "-n", "-u", "alice", "sbatch", "--parsable"]
        assert "#SBATCH --partition=jupyter" in script
        # the dialog's strings typed by the CLI's rule: 5 an int, [1, 2] a list, a word a string
        record = service.store.get("alice", run_id)
        assert record.parameters == {"n": 5, "label": "five", "ks": [1, 2]}
        assert record.request["profile"] == "small"
        job = await lab_scheduler.get_job(run_id)
        assert (job.status, job.compute_type, job.parameters["n"]) == (Status.QUEUED, "small", "5")
        assert job.downloaded is False and [f.file_format for f in job.job_files] == ["ipynb", "html", "input"]
        assert await lab_scheduler.count_jobs(CountJobsQuery(status=Status.QUEUED)) == 1
        listed = await lab_scheduler.list_jobs(ListJobsQuery())
        assert [j.job_id for j in listed.jobs] == [run_id] and listed.total_count == 1
        service.slurm.acct = "101|COMPLETED|0:0|00:00:20|02:00:00|00:10|1|1G||cpu=1|None\n"
        reconcile(service.store, SlurmCommands(runner=service.slurm))
        executed = json.loads(NOTEBOOK)
        executed["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "10\n"}]
        service.files[("alice", f"{run_id}/output.ipynb")] = json.dumps(executed).encode()
        service.files[("alice", f"{run_id}/input.ipynb")] = NOTEBOOK.encode()
        await lab.HubRunsFiles(lab_scheduler).copy_from_staging(run_id)
        job = await lab_scheduler.get_job(run_id)
        assert job.status == Status.COMPLETED and job.downloaded, job
        files = {f.file_format: tmp_path / f.file_path for f in job.job_files}
        assert json.loads(files["ipynb"].read_text())["cells"][0]["outputs"][0]["text"] == "10\n"
        assert "<pre>10\n</pre>" in files["html"].read_text()
        assert json.loads(files["input"].read_text()) == json.loads(NOTEBOOK)

    service.run(scenario)


def test_stop_and_delete_cancel_the_owners_job(service, tmp_path, monkeypatch):
    (tmp_path / "n.ipynb").write_text(NOTEBOOK)

    async def scenario(base):
        lab_scheduler = scheduler(base, tmp_path, monkeypatch)
        run_id = await lab_scheduler.create_job(create())
        await lab_scheduler.stop_job(run_id)
        assert service.slurm.calls[-1][0] == ["sudo", "-n", "-u", "alice", "scancel", "101"]
        await lab_scheduler.delete_job(run_id)
        assert service.store.get("alice", run_id) is None
        with pytest.raises(SchedulerError, match="of yours"):
            await lab_scheduler.get_job(run_id)

    service.run(scenario)


@pytest.mark.security
def test_another_users_server_cannot_see_stop_or_download_a_run(service, tmp_path, monkeypatch):
    (tmp_path / "n.ipynb").write_text(NOTEBOOK)

    async def scenario(base):
        run_id = await scheduler(base, tmp_path, monkeypatch).create_job(create())
        bobs = scheduler(base, tmp_path, monkeypatch, token="bob-token")
        for attempt in (bobs.get_job(run_id), bobs.stop_job(run_id), bobs.delete_job(run_id)):
            with pytest.raises(SchedulerError, match="of yours"):
                await attempt
        with pytest.raises(SchedulerError, match="of yours"):
            await lab.HubRunsFiles(bobs).copy_from_staging(run_id)
        assert (await bobs.list_jobs(ListJobsQuery())).jobs == []
        assert not any("scancel" in argv for argv, _ in service.slurm.calls)
        assert service.store.get("alice", run_id) is not None

    service.run(scenario)


@pytest.mark.security
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"input_uri": "../../etc/passwd"}, "is not a notebook in this server's files"),
        ({"input_uri": "missing.ipynb"}, "is not a notebook in this server's files"),
        ({"compute_type": "jupyter; id"}, "unknown partition"),
        ({"parameters": {"n": "5", "x; id": "1"}}, "must be an identifier"),
        ({"parameters": {"n": '["a", {"b": 1}]'}}, "a number, true/false, null, a string or a list"),
        ({"runtime_environment_name": "../python"}, "image"),
        ({"compute_type": "hpc"}, "remote HPC mode"),
    ],
)
def test_bad_jobs_are_refused_with_the_services_sentence_and_nothing_submitted(
    service, tmp_path, monkeypatch, extra, message
):
    (tmp_path / "n.ipynb").write_text(NOTEBOOK)

    async def scenario(base):
        with pytest.raises(SchedulerError, match=re.escape(message)):
            await scheduler(base, tmp_path, monkeypatch).create_job(create(**extra))
        assert not any("sbatch" in argv for argv, _ in service.slurm.calls)

    service.run(scenario)


def test_environments_are_the_services_images_with_profiles_as_compute_types(service, tmp_path, monkeypatch):
    async def scenario(base):
        lab_scheduler = scheduler(base, tmp_path, monkeypatch)
        found = {env.name: env for env in await lab_scheduler.environments_manager.list_environments()}
        assert set(found) == {"node", "python"}
        assert found["python"].compute_types == ["small", "jupyter"]
        assert found["python"].default_compute_type == "small"

    service.run(scenario)


def test_run_on_a_schedule_is_a_definition_of_the_service_that_fires_while_the_server_is_gone(
    service, tmp_path, monkeypatch
):
    (tmp_path / "n.ipynb").write_text(NOTEBOOK)

    async def scenario(base):
        lab_scheduler = scheduler(base, tmp_path, monkeypatch)
        assert (await lab_scheduler.list_job_definitions(ListJobDefinitionsQuery())).job_definitions == []
        model = CreateJobDefinition(
            input_uri="n.ipynb",
            runtime_environment_name="python",
            name="nightly",
            schedule="0 3 * * MON-FRI",
            timezone="Europe/Helsinki",
            parameters={"n": "5"},
            compute_type="small",
        )
        definition_id = await lab_scheduler.create_job_definition(model)
        assert not any("sbatch" in argv for argv, _ in service.slurm.calls)
        described = await lab_scheduler.get_job_definition(definition_id)
        assert (described.name, described.schedule, described.timezone, described.active) == (
            "nightly",
            "0 3 * * MON-FRI",
            "Europe/Helsinki",
            True,
        )
        assert described.parameters == {"n": "5"} and described.compute_type == "small"
        listed = await lab_scheduler.list_job_definitions(ListJobDefinitionsQuery())
        assert [d.job_definition_id for d in listed.job_definitions] == [definition_id]

        # the server is gone (no scheduler object, no token in use): the service fires it on its own
        stored = service.store.definition("alice", definition_id)
        fired = service_fire(service, stored.next_time + 1)
        assert fired == 1 and sbatch_users(service) == ["alice"]
        runs = await lab_scheduler.list_jobs(ListJobsQuery(job_definition_id=definition_id))
        assert len(runs.jobs) == 1 and runs.jobs[0].job_definition_id == definition_id

        # pause from the list (jupyter-scheduler's PATCH {active: false}), edit the schedule, run now, delete
        await lab_scheduler.update_job_definition(definition_id, lab.UpdateJobDefinition(active=False))
        assert not (await lab_scheduler.get_job_definition(definition_id)).active
        await lab_scheduler.update_job_definition(
            definition_id, lab.UpdateJobDefinition(active=True, schedule="30 4 * * *")
        )
        changed = await lab_scheduler.get_job_definition(definition_id)
        assert changed.active and changed.schedule == "30 4 * * *"
        run_id = await lab_scheduler.create_job(create(job_definition_id=definition_id, parameters={"n": "9"}))
        assert (await lab_scheduler.get_job(run_id, job_files=False)).parameters == {"n": "9"}
        await lab_scheduler.delete_job_definition(definition_id)
        with pytest.raises(SchedulerError, match="no job definition"):
            await lab_scheduler.get_job_definition(definition_id)

        # a bad schedule: the service's sentence, nothing kept
        with pytest.raises(SchedulerError, match="the hour field takes 0 to 23"):
            await lab_scheduler.create_job_definition(model.copy(update={"schedule": "0 25 * * *"}))
        assert (await lab_scheduler.list_job_definitions(ListJobDefinitionsQuery())).job_definitions == []

    service.run(scenario)


def service_fire(service, now: float) -> int:
    return fire_due(service.store, SlurmCommands(runner=service.slurm), service.app.settings["runs"].offer, now=now)


def sbatch_users(service) -> list[str]:
    return [argv[3] for argv, _ in service.slurm.calls if "sbatch" in argv]


def test_an_unreachable_or_unset_service_says_what_to_do(tmp_path, monkeypatch):
    async def scenario():
        unset = scheduler("", tmp_path, monkeypatch)
        with pytest.raises(SchedulerError, match="not connected to the runs service"):
            await unset.list_jobs(ListJobsQuery())
        gone = scheduler("http://127.0.0.1:9/services/runs/", tmp_path, monkeypatch)
        with pytest.raises(SchedulerError, match=r"cannot be reached.*tell the admins"):
            await gone.list_jobs(ListJobsQuery())

    asyncio.run(scenario())


def test_the_module_needs_only_jupyter_scheduler_tornado_and_the_standard_library():
    """The notebook environment has jupyter_scheduler, not the hub's packages: lab.py is installed there alone."""
    tree = ast.parse((ROOT / "src/clusterhub/runs/lab.py").read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= {"__future__", "json", "os", "typing", "urllib", "jupyter_scheduler", "tornado", "traitlets"}
