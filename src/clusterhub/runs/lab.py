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
NO_DEFINITIONS = (
    "scheduled jobs are not offered from JupyterLab yet: choose 'Run now'; "
    "the runs page of the hub lists every run, and the shell's clusterhub-run submits them too"
)


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
        parameters={
            k: json.dumps(v) if not isinstance(v, str) else v for k, v in (run.get("parameters") or {}).items()
        },
        output_formats=["ipynb", "html"],
        url=f"/jobs/{run['job_id']}",
        create_time=run.get("create_time") or 0,
        update_time=run.get("update_time") or 0,
        start_time=run.get("start_time"),
        end_time=run.get("end_time"),
        status=Status(status) if status in Status.__members__ else Status.QUEUED,
        status_message=run.get("status_message") or None,
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
                utc_only=True,
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

    async def create_job(self, model: CreateJob) -> str:
        if model.job_definition_id:
            raise SchedulerError(NO_DEFINITIONS)
        with open(self._input_path(model.input_uri), encoding="utf-8") as f:
            notebook = f.read()
        body = {
            "input_filename": model.input_filename or os.path.basename(model.input_uri),
            "notebook": notebook,
            "runtime_environment_name": model.runtime_environment_name,
            "parameters": model.parameters or {},
            "parameters_as_text": True,
            "name": model.name,
        }
        if model.compute_type:
            body["compute_type"] = model.compute_type
        created = await self.service.call("POST", "scheduler/jobs", body)
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
        found = await self.service.call("GET", "scheduler/jobs?" + urlencode(args))
        jobs = [describe(run) for run in found["jobs"]]
        if query.name:
            jobs = [job for job in jobs if job.name.startswith(query.name)]
        for job in jobs:
            self.add_job_files(job)
        return ListJobsResponse(jobs=jobs, total_count=found["total_count"], next_token=found.get("next_token"))

    async def count_jobs(self, query: CountJobsQuery) -> int:
        found = await self.service.call(
            "GET", "scheduler/jobs?" + urlencode({"status": str(query.status), "limit": "1000"})
        )
        return len(found["jobs"])

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

    # job definitions (cron schedules) are the service's to run while the user is away; not offered here yet
    def create_job_definition(self, model: CreateJobDefinition) -> str:
        raise SchedulerError(NO_DEFINITIONS)

    def update_job_definition(self, job_definition_id: str, model: UpdateJobDefinition):
        raise SchedulerError(NO_DEFINITIONS)

    def delete_job_definition(self, job_definition_id: str):
        raise SchedulerError(NO_DEFINITIONS)

    def get_job_definition(self, job_definition_id: str) -> DescribeJobDefinition:
        raise SchedulerError(NO_DEFINITIONS)

    def list_job_definitions(self, query: ListJobDefinitionsQuery) -> ListJobDefinitionsResponse:
        return ListJobDefinitionsResponse(job_definitions=[], total_count=0)

    def create_job_from_definition(self, job_definition_id: str, model: CreateJobFromDefinition):
        raise SchedulerError(NO_DEFINITIONS)

    def pause_jobs(self, job_definition_id: str):
        raise SchedulerError(NO_DEFINITIONS)


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
