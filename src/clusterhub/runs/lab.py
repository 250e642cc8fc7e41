"""The JupyterLab door of the runs service: jupyter-scheduler's "Create Job" dialog and its job list, with a
scheduler, an environment manager and a job files manager of ours that forward to clusterhub-runs.

jupyter-scheduler's own scheduler runs a job inside the user's server, and the job dies with it. Here a job is a run
of the service: a Slurm batch job of the user's own, which goes on after the server has stopped. The server reaches
the service through the hub's proxy with its own API token (the hub gives server tokens the scope
access:services!service=<name>), so a server acts for its own user only, and only on runs.

The notebook_scheduler role installs this file into the notebook environment as the module `clusterhub_scheduler`
(that environment has jupyter_scheduler, not the hub's packages): it imports jupyter_scheduler, tornado and the
standard library only. Its server settings:

  SchedulerApp.scheduler_class = clusterhub_scheduler.HubRunsScheduler
  SchedulerApp.environment_manager_class = clusterhub_scheduler.HubRunsEnvironments
  SchedulerApp.job_files_manager_class = clusterhub_scheduler.HubRunsFiles
  HubRunsScheduler.service_url = https://hub.example.org/services/runs/
  HubRunsScheduler.ca_file = /etc/ssl/certs/ca-certificates.crt
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote, urlencode

from jupyter_scheduler.environments import EnvironmentManager, EnvironmentRetrievalError
from jupyter_scheduler.exceptions import SchedulerError
from jupyter_scheduler.job_files_manager import JobFilesManager
from jupyter_scheduler.models import (
    CountJobsQuery,
    CreateJob,
    CreateJobDefinition,
    CreateJobFromDefinition,
    DescribeJob,
    DescribeJobDefinition,
    ListJobDefinitionsQuery,
    ListJobDefinitionsResponse,
    ListJobsQuery,
    ListJobsResponse,
    RuntimeEnvironment,
    Status,
    UpdateJob,
    UpdateJobDefinition,
)
from jupyter_scheduler.scheduler import BaseScheduler
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Float, Unicode

OUTPUT_FORMATS = {"ipynb": "Notebook", "html": "HTML"}


class Service:
    """The runs service as this server reaches it: its URL, the server's hub token, the CA that signed the hub."""

    def __init__(self, url: str, token: str, ca_file: str = "", timeout: float = 30.0):
        self.url = url if url.endswith("/") else url + "/"
        self.token = token
        self.ca_file = ca_file
        self.timeout = timeout

    async def call(self, method: str, path: str, body: dict | None = None, raw: bool = False) -> Any:
        """The service's answer (JSON, or bytes with raw); SchedulerError with its one-sentence message."""
        if not self.url.startswith(("http://", "https://")) or not self.token:
            raise SchedulerError(
                "this server is not connected to the runs service (no service URL or hub token); "
                "tell the admins, or use the runs page of the hub"
            )
        request = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else (b"" if method in ("POST", "PATCH") else None),
            ca_certs=self.ca_file or None,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            message = ""
            if exc.response is not None and exc.response.body:
                try:
                    message = json.loads(exc.response.body).get("message", "")
                except (ValueError, AttributeError):
                    message = ""
            raise SchedulerError(message or f"the runs service answered {exc.code}; try again in a minute") from None
        except OSError as exc:
            raise SchedulerError(
                f"the runs service at {self.url} cannot be reached ({exc}); try again, and tell the admins if it lasts"
            ) from None
        if raw:
            return response.body
        return json.loads(response.body) if response.body else None


def describe(run: dict) -> DescribeJob:
    """A run of the service as jupyter-scheduler's model of a job."""
    status = run.get("status", "QUEUED")
    return DescribeJob(
        job_id=run["job_id"],
        name=run.get("name") or run.get("input_filename", ""),
        input_filename=run.get("input_filename", ""),
        runtime_environment_name=run.get("runtime_environment_name") or "",
        compute_type=(run.get("resources") or {}).get("profile") or run.get("compute_type") or None,
        parameters=as_text(run.get("parameters")),
        output_formats=["ipynb", "html"],
        url=f"/jobs/{run['job_id']}",
        job_definition_id=run.get("job_definition_id") or None,
        create_time=run.get("create_time") or 0,
        update_time=run.get("update_time") or 0,
        start_time=run.get("start_time"),
        end_time=run.get("end_time"),
        status=Status(status) if status in Status.__members__ else Status.QUEUED,
        status_message=run.get("status_message") or None,
    )


def as_text(parameters: dict | None) -> dict[str, str]:
    """The service's typed parameters as jupyter-scheduler shows them (strings; the service types them back)."""
    return {k: json.dumps(v) if not isinstance(v, str) else v for k, v in (parameters or {}).items()}


def describe_definition(found: dict) -> DescribeJobDefinition:
    """A job definition of the service as jupyter-scheduler's model."""
    return DescribeJobDefinition(
        job_definition_id=found["job_definition_id"],
        name=found.get("name") or found.get("input_filename", ""),
        input_filename=found.get("input_filename", ""),
        runtime_environment_name=found.get("runtime_environment_name") or "",
        compute_type=found.get("compute_type") or None,
        parameters=as_text(found.get("parameters")),
        output_formats=["ipynb", "html"],
        schedule=found.get("schedule"),
        timezone=found.get("timezone"),
        active=bool(found.get("active")),
        create_time=found.get("create_time") or 0,
        update_time=found.get("update_time") or 0,
    )


def output_file(run: dict) -> str:
    """The service's name of a run's executed notebook (the first task's, for a sweep)."""
    names = [f["display_name"] for f in run.get("job_files", []) if f["display_name"].startswith("output")]
    return names[0] if names else "output.ipynb"


class HubRunsEnvironments(EnvironmentManager):
    """The service's images as jupyter-scheduler's runtime environments (the scheduler connects it)."""

    service: Service | None = None

    async def list_environments(self) -> list[RuntimeEnvironment]:
        try:
            found = await (self.service or Service("", "")).call("GET", "scheduler/runtime_environments")
        except SchedulerError as exc:
            raise EnvironmentRetrievalError(str(exc)) from None
        return [
            RuntimeEnvironment(
                name=env["name"],
                label=env.get("label", env["name"]),
                description=env.get("description", ""),
                file_extensions=["ipynb"],
                output_formats=list(OUTPUT_FORMATS),
                metadata={},
                compute_types=env.get("compute_types") or None,
                default_compute_type=env.get("default_compute_type") or None,
                utc_only=False,  # the service reads a schedule in the time zone given
            )
            for env in found
        ]

    def manage_environments_command(self) -> str:
        return ""

    def output_formats_mapping(self) -> dict[str, str]:
        return dict(OUTPUT_FORMATS)


class HubRunsScheduler(BaseScheduler):
    """jupyter-scheduler's scheduler API over the runs service: a job is a run (a Slurm batch job of the user's)."""

    service_url = Unicode("", help="The runs service's URL as the compute nodes reach it").tag(config=True)
    ca_file = Unicode("", help="CA bundle that signed the hub's certificate (empty: the system's)").tag(config=True)
    timeout = Float(30.0, help="Seconds to wait for the service").tag(config=True)
    task_runner = None  # the service schedules; nothing runs inside this server

    def __init__(self, root_dir: str, environments_manager: EnvironmentManager, config=None, **kwargs):
        kwargs.pop("db_url", None)  # jupyter-scheduler's own database is not used
        super().__init__(root_dir=root_dir, environments_manager=environments_manager, config=config, **kwargs)
        self.service = Service(self.service_url, os.environ.get("JUPYTERHUB_API_TOKEN", ""), self.ca_file, self.timeout)
        if isinstance(environments_manager, HubRunsEnvironments):
            environments_manager.service = self.service

    def _input_path(self, input_uri: str) -> str:
        root = os.path.realpath(self.root_dir)
        path = os.path.realpath(os.path.join(root, input_uri))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            raise SchedulerError(f"{input_uri} is not a notebook in this server's files")
        return path

    def _notebook(self, input_uri: str) -> str:
        with open(self._input_path(input_uri), encoding="utf-8") as f:
            return f.read()

    def _body(self, model: CreateJob | CreateJobDefinition) -> dict:
        body = {
            "input_filename": model.input_filename or os.path.basename(model.input_uri),
            "notebook": self._notebook(model.input_uri),
            "runtime_environment_name": model.runtime_environment_name,
            "parameters": model.parameters or {},
            "parameters_as_text": True,
            "name": model.name,
        }
        if model.compute_type:
            body["compute_type"] = model.compute_type
        return body

    async def create_job(self, model: CreateJob) -> str:
        if model.job_definition_id:  # a run of a definition: the service's copy of the notebook
            return await self.create_job_from_definition(
                model.job_definition_id, CreateJobFromDefinition(parameters=model.parameters)
            )
        created = await self.service.call("POST", "scheduler/jobs", self._body(model))
        self.log.info("run %s submitted to the runs service (Slurm job %s)", created["job_id"], created["slurm_job_id"])
        return created["job_id"]

    async def _run(self, job_id: str) -> dict:
        return await self.service.call("GET", f"scheduler/jobs/{quote(job_id, safe='')}")

    async def get_job(self, job_id: str, job_files: bool | None = True) -> DescribeJob:
        model = describe(await self._run(job_id))
        if job_files:
            self.add_job_files(model)
        return model

    async def list_jobs(self, query: ListJobsQuery) -> ListJobsResponse:
        args = {"limit": str(query.max_items or 100)}
        if query.status:
            args["status"] = str(query.status)
        if query.next_token:
            args["next_token"] = query.next_token
        if query.job_definition_id:
            args["job_definition_id"] = query.job_definition_id
        found = await self.service.call("GET", "scheduler/jobs?" + urlencode(args))
        jobs = [describe(run) for run in found["jobs"]]
        if query.name:
            jobs = [job for job in jobs if job.name.startswith(query.name)]
        for job in jobs:
            self.add_job_files(job)
        return ListJobsResponse(jobs=jobs, total_count=found["total_count"], next_token=found.get("next_token"))

    async def count_jobs(self, query: CountJobsQuery) -> int:
        found = await self.service.call(
            "GET", "scheduler/jobs?" + urlencode({"status": str(query.status), "limit": "1"})
        )
        return found["total_count"]

    async def stop_job(self, job_id: str):
        await self.service.call("PATCH", f"scheduler/jobs/{quote(job_id, safe='')}", {"status": "STOPPED"})

    async def delete_job(self, job_id: str):
        await self.service.call("DELETE", f"scheduler/jobs/{quote(job_id, safe='')}")

    def update_job(self, job_id: str, model: UpdateJob):
        if model.status == Status.STOPPED:
            return self.stop_job(job_id)
        raise SchedulerError("a run cannot be changed once submitted; stop it and create another")

    def get_staging_paths(self, model: DescribeJob | DescribeJobDefinition) -> dict[str, str]:
        """The service's file names of a run (HubRunsFiles downloads them through the service)."""
        return {"ipynb": "output.ipynb", "html": "output.ipynb?format=html", "input": "input.ipynb"}

    # job definitions: the service keeps them and fires them on their schedule, also while the user is away
    def _definition(self, job_definition_id: str) -> str:
        return f"scheduler/job_definitions/{quote(job_definition_id, safe='')}"

    async def create_job_definition(self, model: CreateJobDefinition) -> str:
        body = self._body(model) | {"schedule": model.schedule or "", "timezone": model.timezone or "UTC"}
        created = await self.service.call("POST", "scheduler/job_definitions", body)
        self.log.info(
            "job definition %s created in the runs service (%s)", created["job_definition_id"], model.schedule
        )
        return created["job_definition_id"]

    async def update_job_definition(self, job_definition_id: str, model: UpdateJobDefinition):
        given = model.dict(exclude_unset=True)
        body = {key: given[key] for key in ("active", "schedule", "timezone", "name") if given.get(key) is not None}
        if given.get("parameters") is not None:
            body |= {"parameters": given["parameters"], "parameters_as_text": True}
        if given.get("input_uri"):
            body["notebook"] = self._notebook(given["input_uri"])
        await self.service.call("PATCH", self._definition(job_definition_id), body)

    async def delete_job_definition(self, job_definition_id: str):
        await self.service.call("DELETE", self._definition(job_definition_id))

    async def get_job_definition(self, job_definition_id: str) -> DescribeJobDefinition:
        return describe_definition(await self.service.call("GET", self._definition(job_definition_id)))

    async def list_job_definitions(self, query: ListJobDefinitionsQuery) -> ListJobDefinitionsResponse:
        found = await self.service.call("GET", "scheduler/job_definitions")
        definitions = [describe_definition(d) for d in found["job_definitions"]]
        if query.name:
            definitions = [d for d in definitions if d.name.startswith(query.name)]
        return ListJobDefinitionsResponse(job_definitions=definitions, total_count=len(definitions))

    async def create_job_from_definition(self, job_definition_id: str, model: CreateJobFromDefinition) -> str:
        body = {"parameters": model.parameters, "parameters_as_text": True} if model and model.parameters else {}
        created = await self.service.call("POST", self._definition(job_definition_id) + "/jobs", body)
        return created["job_id"]

    async def pause_jobs(self, job_definition_id: str):
        await self.service.call("PATCH", self._definition(job_definition_id), {"active": False})


class HubRunsFiles(JobFilesManager):
    """ "Download job files": the executed notebook (also as HTML) and the input, fetched from the service into the
    server's jobs/ folder (the files jupyter-scheduler's list then links)."""

    async def copy_from_staging(self, job_id: str, redownload: bool | None = False):
        scheduler: HubRunsScheduler = self.scheduler
        run = await scheduler._run(job_id)
        model = describe(run)
        names = scheduler.get_job_filenames(model)
        out_dir = scheduler.get_local_output_path(model)
        base = f"scheduler/jobs/{quote(job_id, safe='')}/files/"
        wanted = {
            "ipynb": base + output_file(run),
            "html": base + output_file(run) + "?format=html",
            "input": base + "input.ipynb",
        }
        os.makedirs(out_dir, exist_ok=True)
        for fmt, path in wanted.items():
            target = os.path.join(out_dir, names[fmt])
            if os.path.exists(target) and not redownload:
                continue
            data = await scheduler.service.call("GET", path, raw=True)
            with open(target + ".part", "wb") as f:
                f.write(data)
            os.replace(target + ".part", target)
