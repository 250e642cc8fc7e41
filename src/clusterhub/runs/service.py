"""The notebook runs service: a JupyterHub service (users log in through the hub's OAuth, or send a hub API token)
with a REST API shaped like jupyter-scheduler's, under the service's prefix (/services/runs/):

  GET    scheduler/runtime_environments          the images (and the nodes' own environment)
  GET    scheduler/jobs[?status=&limit=&next_token=]   the user's runs, newest first
  POST   scheduler/jobs                          create a run: {input_filename, notebook (its JSON text),
                                                 runtime_environment_name, profile | partition/cpus/memory_gb/hours/
                                                 gpus, parameters, sweep, kernel, name}; compute_type: a profile
                                                 or a partition; parameters_as_text: values typed as on the CLI
  GET    scheduler/jobs/ID                       one run (with the failing cell and the log's tail once FAILED)
  PATCH  scheduler/jobs/ID  {"status": "STOPPED"}  stop it (scancel as its owner)
  DELETE scheduler/jobs/ID                       forget it (stopped first if it still runs; its files stay in the home)
  GET    scheduler/jobs/ID/files/NAME[?format=html]  input.ipynb, output[-N].ipynb, job-N.log (read as the owner)
  GET    scheduler/job_definitions               the user's job definitions (a notebook on a cron schedule)
  POST   scheduler/job_definitions               create one: the body of a run, plus schedule (cron's five fields)
                                                 and timezone (IANA name, default UTC); active: false: paused
  GET    scheduler/job_definitions/ID            one, with its next run time and what its last firing did
  PATCH  scheduler/job_definitions/ID            {active, schedule, timezone, name, parameters, notebook}
  DELETE scheduler/job_definitions/ID            forget it (its runs stay)
  POST   scheduler/job_definitions/ID/jobs       run it now ({parameters} may replace its own)

Another user's run is 404, whatever its id. Every error is JSON {"message": one sentence}; nothing is submitted
before the request passed the spawner's own checks. A reconciler polls Slurm (one squeue, then one sacct per owner
of runs that left the queue) and keeps the records in the database current; at the same poll, the job definitions
whose time has come submit their runs as their owners, who need not be logged in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jinja2
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Dict, Float, Integer, List, Unicode
from traitlets.config import Application

from clusterhub.hub.remote_job import hpc_user
from clusterhub.hub.request import OptionsError
from clusterhub.protocol import RUN_FILE, RUNS_DIR, USER_NAME_RE
from clusterhub.runs import data as run_data
from clusterhub.runs import schedule, states
from clusterhub.runs.job import RUN_ID_RE, build, new_run_id, output_name
from clusterhub.runs.params import typed
from clusterhub.runs.slurm import RemoteCommands, SlurmCommands, SlurmError, read_output, reconcile
from clusterhub.runs.store import Definition, Run, Store

log = logging.getLogger("clusterhub.runs")
PAGE = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
).get_template("runs.html.j2")
FILE_RE = re.compile(RUN_FILE)
MAX_BODY = 4 * 1024 * 1024
LOG_TAIL_LINES = 40


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


# why a remote profile is not offered for runs
SHARED_ACCOUNT = (
    "runs every user's jobs as one shared HPC account, where a run's files would be open to other users' jobs;"
    " choose a profile that runs as your own account"
)
NO_REMOTE = "runs in remote HPC mode, which this service is not set up to reach; choose a profile of the cluster's own"

SPEC_KEYS = ("options", "parameters", "sweep", "kernel", "data")


def read_spec(data: dict, offer: dict) -> dict:
    """What a request asks to run, before the spawner's checks: {input_filename, name, notebook, options,
    parameters, sweep, kernel, data}; HTTPError 400 for what is malformed."""
    options = {k: data[k] for k in ("profile", "partition", "cpus", "memory_gb", "hours", "gpus") if k in data}
    if data.get("compute_type") and not {"profile", "partition"} & options.keys():
        compute = str(data["compute_type"])
        if compute in {p["slug"] for p in offer["profiles"]} | set(offer["remote_profiles"]):
            options["profile"] = compute
        else:  # a partition, with its defaults (checked against its limits like any custom request)
            options.update(profile="custom", partition=compute)
    options["image"] = data.get("runtime_environment_name", "")
    notebook = data.get("notebook")
    if not isinstance(notebook, str):
        raise web.HTTPError(400, "notebook must be the notebook file's text (JSON)")
    filename = str(data.get("input_filename", "notebook.ipynb"))
    if not re.match(r"^[^/\x00-\x1f]{1,255}$", filename):
        raise web.HTTPError(400, "input_filename must be a file name without '/'")
    if options.get("profile") in offer["remote_profiles"]:
        raise web.HTTPError(400, f"profile {options['profile']} {offer['remote_profiles'][options['profile']]}")
    return {
        "input_filename": filename,
        "name": str(data.get("name") or filename)[:255],
        "notebook": notebook,
        "options": options,
        "parameters": typed_parameters(data),
        "sweep": str(data.get("sweep") or ""),
        "kernel": str(data.get("kernel") or ""),
        "data": declared_data(data),
    }


def declared_data(data: dict) -> list:
    """The external data a request declares: `data` (a list of {name, direction, host, path}) and, as the page
    and the CLI send them, `inputs` and `outputs` (lists of NAME=HOST:PATH, read by the CLI's own rule)."""
    items = data.get("data") or []
    if not isinstance(items, list):
        raise web.HTTPError(400, "data must be a list of {name, direction, host, path}")
    try:
        for direction in run_data.DIRECTIONS:
            words = data.get(f"{direction}s") or []
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise web.HTTPError(400, f"{direction}s must be a list of NAME=HOST:PATH")
            items = items + run_data.parse_assignments(words, direction)
    except OptionsError as exc:
        raise web.HTTPError(400, str(exc)) from None
    return items


def typed_parameters(data: dict):
    parameters = data.get("parameters") or {}
    if data.get("parameters_as_text") and isinstance(parameters, dict):
        # jupyter-scheduler's dialog sends every value as a string: typed by the CLI's own rule
        try:
            return typed(parameters)
        except OptionsError as exc:
            raise web.HTTPError(400, str(exc)) from None
    return parameters


def build_job(spec: dict, offer: dict):
    """The run's job from a spec, through the spawner's checks (OptionsError says what is wrong)."""
    return build(
        spec["options"],
        spec["notebook"],
        spec["parameters"],
        profiles=offer["profiles"],
        partitions=offer["partitions"],
        images=offer["images"],
        allow_custom=offer["allow_custom"],
        sweep=spec["sweep"] or None,
        kernel=spec["kernel"],
        data=spec.get("data") or [],
        data_hosts=offer.get("data_hosts", []),
        webdav=offer.get("webdav"),
    )


def checked(spec: dict, offer: dict):
    try:
        return build_job(spec, offer)
    except OptionsError as exc:
        raise web.HTTPError(400, str(exc)) from None


def run_account(offer: dict, owner: str, job) -> str:
    """The HPC account a run on a remote partition runs as (the owner's own, through hpc-gate's `as`), or "" for
    the cluster's own partitions; OptionsError where the owner has none there."""
    entry = next((p for p in offer["partitions"] if p["name"] == job.request.partition), {})
    if not entry.get("remote"):
        return ""
    try:
        return hpc_user(job.request.partition, offer["partitions"], owner, offer.get("hpc_user_map"))
    except ValueError as exc:
        raise OptionsError(str(exc)) from None


def submit(
    store: Store, slurm: SlurmCommands, owner: str, spec: dict, job, *, offer: dict, definition_id: str = ""
) -> Run:
    """sbatch as the owner (or, on a remote partition, as the owner's HPC account through hpc-gate), then the
    run's record (SlurmError, OptionsError: nothing submitted, nothing recorded)."""
    now = time.time()
    account = run_account(offer, owner, job)
    job_id = slurm.side(account).submit(account or owner, job)
    run = Run(
        run_id=job.run_id,
        owner=owner,
        status=states.QUEUED,
        create_time=now,
        update_time=now,
        name=spec["name"],
        input_filename=spec["input_filename"],
        request=job.request.as_user_options(),
        parameters=job.parameter_sets[0] if not job.sweep else spec["parameters"],
        sweep=spec["sweep"],
        data=[dataclasses.asdict(item) for item in job.data],
        tasks=len(job.parameter_sets),
        status_message="queued",
        job_id=job_id,
        job_definition_id=definition_id,
        account=account,
    )
    store.add(run)
    log.info("run %s of %s submitted as job %s", run.run_id, owner, job_id)
    return run


class Settings:
    """What the handlers share: the store, Slurm, the site's offer, a thread pool for the blocking commands."""

    def __init__(self, store: Store, slurm: SlurmCommands, offer: dict, read_file, max_definitions: int = 20):
        self.store = store
        self.slurm = slurm
        self.offer = offer
        self.read_file = read_file  # (owner, relative path) -> bytes, read as the owner
        self.max_definitions = max_definitions
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="runs")

    def read_run_file(self, run: Run, name: str) -> bytes:
        """A file of a run, read as its owner: here through sudo, or as the owner's HPC account through hpc-gate."""
        if run.account:
            return self.slurm.side(run.account).read(run.account, run.run_id, name)
        return self.read_file(run.owner, f"{run.run_id}/{name}")

    def cancel(self, run: Run) -> None:
        self.slurm.side(run.account).cancel(run.account or run.owner, run.job_id)

    async def blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def runs(self) -> Settings:
        return self.settings["runs"]

    def check_xsrf_cookie(self):
        # a hub API token in the Authorization header is not a browser's ambient credential
        if self.request.headers.get("Authorization", "").startswith(("token ", "Bearer ")):
            return None
        return super().check_xsrf_cookie()

    @property
    def owner(self) -> str:
        model = self.current_user or {}
        name = model.get("name", "")
        if model.get("kind", "user") != "user" or not USER_NAME_RE.match(name):
            raise web.HTTPError(403, "only hub users (not services) own runs")
        return name

    def write_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code >= 500:
            message = "the runs service failed on this request; try again, and tell the admins if it persists"
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    def body(self) -> dict:
        if len(self.request.body) > MAX_BODY:
            raise web.HTTPError(413, f"the request is over {MAX_BODY // 2**20} MiB")
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return data

    def run_or_404(self, run_id: str) -> Run:
        run = self.runs.store.get(self.owner, run_id) if RUN_ID_RE.match(run_id) else None
        if run is None:
            raise web.HTTPError(404, f"no run {run_id[:40]} of yours")
        return run

    def describe(self, run: Run) -> dict:
        outputs = [output_name(task, bool(run.sweep)) for task in range(run.tasks)]
        base = url_path_join(self.hub_auth.base_url, "scheduler/jobs", run.run_id)
        return {
            "job_id": run.run_id,
            "name": run.name,
            "input_filename": run.input_filename,
            "runtime_environment_name": run.request.get("image", ""),
            "compute_type": run.request.get("partition", ""),
            "resources": run.request,
            "parameters": run.parameters,
            "sweep": run.sweep,
            "data": run.data,
            "tasks": run.tasks,
            "status": run.status,
            "status_message": run.status_message,
            "slurm_job_id": run.job_id,
            "create_time": _ms(run.create_time),
            "update_time": _ms(run.update_time),
            "start_time": _ms(run.start_time),
            "end_time": _ms(run.end_time),
            "efficiency": run.efficiency or None,
            "job_definition_id": run.job_definition_id or None,
            "job_files": [
                {"display_name": name, "file_format": name.rsplit(".", 1)[-1], "file_path": f"{base}/files/{name}"}
                for name in ["input.ipynb", *outputs, *(f"job-{i}.log" for i in range(run.tasks))]
            ],
        }


class RuntimeEnvironmentsHandler(BaseHandler):
    @web.authenticated
    def get(self):
        # a compute type is one of the site's profiles (a whole shape: partition, CPUs, memory, time, GPUs) or a
        # partition with its defaults
        offer = self.runs.offer
        compute_types = [p["slug"] for p in offer["profiles"] if p.get("kind", "slurm") == "slurm"] + [
            p["name"] for p in offer["partitions"]
        ]
        self.write_json(
            [
                {
                    "name": image["name"],
                    "label": image.get("display_name", image["name"]),
                    "description": "the nodes' own environment"
                    if not image.get("path")
                    else f"Apptainer {image['path']}",
                    "file_extensions": ["ipynb"],
                    "output_formats": [{"name": "ipynb", "label": "Notebook"}, {"name": "html", "label": "HTML"}],
                    "compute_types": compute_types,
                    "default_compute_type": (compute_types or [""])[0],
                    "utc_only": False,  # a schedule is read in the time zone it names
                }
                for image in self.runs.offer["images"]
            ]
        )


class JobsHandler(BaseHandler):
    @web.authenticated
    def get(self):
        try:
            limit = int(self.get_argument("limit", "100"))
            before = float(self.get_argument("next_token")) / 1000 if self.get_argument("next_token", "") else None
        except ValueError:
            raise web.HTTPError(400, "limit and next_token must be numbers") from None
        status = self.get_argument("status", "") or None
        definition = self.get_argument("job_definition_id", "") or None
        found = self.runs.store.list(
            self.owner, limit=limit, before=before, status=status, job_definition_id=definition
        )
        self.write_json(
            {
                "jobs": [self.describe(run) for run in found],
                "total_count": self.runs.store.count(self.owner, status=status, job_definition_id=definition),
                "next_token": str(_ms(found[-1].create_time)) if len(found) == max(1, min(limit, 1000)) else None,
            }
        )

    @web.authenticated
    async def post(self):
        spec = read_spec(self.body(), self.runs.offer)
        job = checked(spec, self.runs.offer)
        try:
            run = await self.runs.blocking(
                lambda: submit(self.runs.store, self.runs.slurm, self.owner, spec, job, offer=self.runs.offer)
            )
        except (OptionsError, SlurmError) as exc:
            raise web.HTTPError(400, str(exc)) from None
        self.write_json({"job_id": run.run_id, "slurm_job_id": run.job_id}, status=201)


class JobHandler(BaseHandler):
    @web.authenticated
    async def get(self, run_id: str):
        run = self.run_or_404(run_id)
        described = self.describe(run)
        if run.status == states.FAILED:
            described.update(await self.failure(run))
        self.write_json(described)

    async def failure(self, run: Run) -> dict:
        """The failing cell of the executed notebook and the job log's tail, where the run left them."""
        for task in range(run.tasks):
            name = output_name(task, bool(run.sweep))
            try:
                cell = states.failed_cell(json.loads(await self.runs.blocking(self.runs.read_run_file, run, name)))
                if not cell:
                    continue
                log_text = await self.runs.blocking(self.runs.read_run_file, run, f"job-{task}.log")
            except (OSError, ValueError):
                continue
            return {"failed_cell": cell | {"task": task}, "log_tail": _tail(log_text)}
        # no cell failed (its data could not be copied, a time limit, ...): the first task's log says why
        try:
            log_text = await self.runs.blocking(self.runs.read_run_file, run, "job-0.log")
        except OSError:
            log_text = b""
        return {"failed_cell": None, "log_tail": _tail(log_text)}

    @web.authenticated
    async def patch(self, run_id: str):
        run = self.run_or_404(run_id)
        if self.body().get("status") != states.STOPPED:
            raise web.HTTPError(400, 'only {"status": "STOPPED"} can be set')
        if run.active:
            try:
                await self.runs.blocking(self.runs.cancel, run)
            except SlurmError as exc:
                raise web.HTTPError(409, str(exc)) from None
            self.runs.store.update(run.run_id, status_message="stopping")
        self.set_status(204)
        self.finish()

    @web.authenticated
    async def delete(self, run_id: str):
        run = self.run_or_404(run_id)
        if run.active:
            try:
                await self.runs.blocking(self.runs.cancel, run)
            except SlurmError as exc:
                raise web.HTTPError(409, str(exc)) from None
        self.runs.store.delete(run.owner, run.run_id)
        log.info("run %s of %s deleted (job %s)", run.run_id, run.owner, run.job_id)
        self.set_status(204)
        self.finish()


def _tail(log_text: bytes) -> str:
    return "\n".join(log_text.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:])


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


class DefinitionBase(BaseHandler):
    def definition_or_404(self, definition_id: str) -> Definition:
        found = self.runs.store.definition(self.owner, definition_id) if RUN_ID_RE.match(definition_id) else None
        if found is None:
            raise web.HTTPError(404, f"no job definition {definition_id[:40]} of yours")
        return found

    def describe_definition(self, d: Definition) -> dict:
        options = d.spec.get("options", {})
        return {
            "job_definition_id": d.job_definition_id,
            "name": d.name,
            "input_filename": d.input_filename,
            "runtime_environment_name": options.get("image", ""),
            "compute_type": options.get("partition") if options.get("profile") == "custom" else options.get("profile"),
            "resources": options,
            "parameters": d.spec.get("parameters", {}),
            "data": d.spec.get("data") or [],
            "sweep": d.spec.get("sweep", ""),
            "schedule": d.schedule,
            "timezone": d.timezone,
            "active": d.active,
            "next_run_time": _ms(d.next_time),
            "last_run_id": d.last_run_id or None,
            "status_message": d.status_message,
            "create_time": _ms(d.create_time),
            "update_time": _ms(d.update_time),
        }

    def schedule_of(self, expression, timezone) -> schedule.Schedule:
        try:
            return schedule.parse(str(expression or ""), str(timezone or "UTC"))
        except OptionsError as exc:
            raise web.HTTPError(400, str(exc)) from None


class DefinitionsHandler(DefinitionBase):
    @web.authenticated
    def get(self):
        found = self.runs.store.definitions(self.owner)
        self.write_json(
            {
                "job_definitions": [self.describe_definition(d) for d in found],
                "total_count": len(found),
                "next_token": None,
            }
        )

    @web.authenticated
    def post(self):
        data = self.body()
        owner = self.owner
        spec = read_spec(data, self.runs.offer)
        checked(spec, self.runs.offer)  # what would be refused at every firing is refused now
        when = self.schedule_of(data.get("schedule"), data.get("timezone"))
        if self.runs.store.count_definitions(owner) >= self.runs.max_definitions:
            raise web.HTTPError(
                409, f"you have {self.runs.max_definitions} job definitions, the most this hub allows; delete one first"
            )
        now, active = time.time(), bool(data.get("active", True))
        definition = Definition(
            job_definition_id=new_run_id(),
            owner=owner,
            notebook=spec["notebook"],
            schedule=when.expression,
            timezone=when.timezone,
            create_time=now,
            update_time=now,
            name=spec["name"],
            input_filename=spec["input_filename"],
            spec=stored_spec(spec),
            active=active,
            next_time=when.next_after(now) if active else None,
        )
        self.runs.store.add_definition(definition)
        log.info("job definition %s of %s: %r %s", definition.job_definition_id, owner, when.expression, when.timezone)
        self.write_json(
            {"job_definition_id": definition.job_definition_id, "next_run_time": _ms(definition.next_time)}, 201
        )


class DefinitionHandler(DefinitionBase):
    @web.authenticated
    def get(self, definition_id: str):
        self.write_json(self.describe_definition(self.definition_or_404(definition_id)))

    @web.authenticated
    def patch(self, definition_id: str):
        """Change the schedule, the time zone, the name, the parameters or the notebook; pause or resume."""
        d = self.definition_or_404(definition_id)
        data = self.body()
        spec = definition_spec(d) | {
            "notebook": str(data.get("notebook", d.notebook)),
            "name": str(data.get("name") or d.name)[:255],
        }
        if "parameters" in data:
            spec["parameters"] = typed_parameters(data)
        checked(spec, self.runs.offer)
        when = self.schedule_of(data.get("schedule", d.schedule), data.get("timezone") or d.timezone)
        active = bool(data.get("active", d.active))
        self.runs.store.update_definition(
            d.job_definition_id,
            notebook=spec["notebook"],
            name=spec["name"],
            spec=stored_spec(spec),
            schedule=when.expression,
            timezone=when.timezone,
            active=active,
            next_time=when.next_after(time.time()) if active else None,
            status_message=d.status_message if active else "paused",
        )
        self.set_status(204)
        self.finish()

    @web.authenticated
    def delete(self, definition_id: str):
        d = self.definition_or_404(definition_id)
        self.runs.store.delete_definition(d.owner, d.job_definition_id)
        log.info("job definition %s of %s deleted", d.job_definition_id, d.owner)
        self.set_status(204)
        self.finish()


class DefinitionJobsHandler(DefinitionBase):
    @web.authenticated
    async def post(self, definition_id: str):
        """Run the definition now (its parameters, or those given)."""
        d = self.definition_or_404(definition_id)
        data = self.body()
        spec = definition_spec(d)
        if data.get("parameters"):
            spec["parameters"] = typed_parameters(data)
        job = checked(spec, self.runs.offer)
        try:
            run = await self.runs.blocking(
                lambda: submit(
                    self.runs.store,
                    self.runs.slurm,
                    d.owner,
                    spec,
                    job,
                    offer=self.runs.offer,
                    definition_id=d.job_definition_id,
                )
            )
        except (OptionsError, SlurmError) as exc:
            raise web.HTTPError(400, str(exc)) from None
        self.runs.store.update_definition(d.job_definition_id, last_run_id=run.run_id)
        self.write_json({"job_id": run.run_id, "slurm_job_id": run.job_id}, status=201)


def stored_spec(spec: dict) -> dict:
    """What a definition keeps of a spec beside its own columns (notebook, name, input_filename)."""
    return {key: spec[key] for key in SPEC_KEYS}


def definition_spec(d: Definition) -> dict:
    """A definition's spec, whole again (read_spec's shape)."""
    return {key: d.spec.get(key) for key in SPEC_KEYS} | {
        "notebook": d.notebook,
        "name": d.name,
        "input_filename": d.input_filename,
    }


def fire_due(store: Store, slurm: SlurmCommands, offer: dict, now: float | None = None) -> int:
    """One poll's firings: every active definition whose time has come submits a run as its owner, once (missed
    firings while the service was down make one run, not many), unless its previous run is still queued or
    running (then this firing is skipped, and said so). A run refused at firing (a profile the site removed,
    Slurm's refusal) is recorded as FAILED with the reason, so its owner sees it in the list."""
    now = time.time() if now is None else now
    fired = 0
    for d in store.due(now):
        try:
            following = schedule.parse(d.schedule, d.timezone).next_after(now)
        except OptionsError as exc:
            store.update_definition(d.job_definition_id, active=False, next_time=None, status_message=f"paused: {exc}")
            continue
        last = store.get(d.owner, d.last_run_id) if d.last_run_id else None
        # the next time is stored before submitting: a crash in between loses this firing, never doubles it
        store.update_definition(d.job_definition_id, next_time=following)
        if last is not None and last.active:
            store.update_definition(
                d.job_definition_id,
                status_message=f"skipped {_when(now)}: the previous run was still {last.status.lower()}",
            )
            continue
        spec = definition_spec(d)
        try:
            job = build_job(spec, offer)
            run = submit(store, slurm, d.owner, spec, job, offer=offer, definition_id=d.job_definition_id)
            message = f"last run {_when(now)}"
        except (OptionsError, SlurmError) as exc:
            run = Run(
                run_id=new_run_id(),
                owner=d.owner,
                status=states.FAILED,
                create_time=now,
                update_time=now,
                end_time=now,
                name=d.name,
                input_filename=d.input_filename,
                tasks=0,
                status_message=f"the scheduled run could not be submitted: {exc}",
                job_definition_id=d.job_definition_id,
            )
            store.add(run)
            message = f"the run of {_when(now)} was refused: {exc}"
        store.update_definition(d.job_definition_id, last_run_id=run.run_id, status_message=message)
        fired += 1
    return fired


class JobFileHandler(BaseHandler):
    @web.authenticated
    async def get(self, run_id: str, name: str):
        run = self.run_or_404(run_id)
        if not FILE_RE.match(name):
            raise web.HTTPError(404, f"a run has no file {name[:60]}")
        try:
            data = await self.runs.blocking(self.runs.read_run_file, run, name)
        except OSError:
            raise web.HTTPError(404, f"{name} is not there (yet): the run may not have started or written it") from None
        if self.get_argument("format", "") == "html" and name.endswith(".ipynb"):
            try:
                page = render_html(json.loads(data), f"{run.name} ({name})")
            except ValueError:
                raise web.HTTPError(422, f"{name} is not a readable notebook") from None
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'unsafe-inline'")
            self.finish(page)
            return
        self.set_header("Content-Type", "application/x-ipynb+json" if name.endswith(".ipynb") else "text/plain")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(data)


def render_html(notebook: dict, title: str) -> str:
    """An executed notebook as a page: sources, text and error outputs escaped, PNG images inline. HTML and
    JavaScript outputs are shown as text: a notebook's markup never runs in the service's origin."""
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
        "<style>pre{background:#f6f6f6;padding:.5em;overflow:auto}.err{background:#fdd}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for cell in notebook.get("cells", []):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        parts.append(f"<pre class=src>{html.escape(source)}</pre>")
        for output in cell.get("outputs", []) or []:
            kind = output.get("output_type")
            data = output.get("data", {})
            if kind == "stream":
                parts.append(f"<pre>{html.escape(''.join(output.get('text', '')))}</pre>")
            elif kind == "error":
                trace = "\n".join(states.ANSI.sub("", t) for t in output.get("traceback", []))
                parts.append(f"<pre class=err>{html.escape(trace)}</pre>")
            elif "image/png" in data and re.match(r"^[A-Za-z0-9+/=\s]+$", "".join(data["image/png"])):
                png = "".join(data["image/png"]).replace("\n", "")
                parts.append(f'<img alt="output" src="data:image/png;base64,{png}">')
            elif "text/plain" in data:
                parts.append(f"<pre>{html.escape(''.join(data['text/plain']))}</pre>")
    return "\n".join(parts)


class PageHandler(BaseHandler):
    @web.authenticated
    def get(self):
        offer = self.runs.offer
        page = PAGE.render(
            user=self.owner,
            xsrf=self.xsrf_token.decode(),
            profiles=offer["profiles"],
            partitions=offer["partitions"],
            allow_custom=offer["allow_custom"],
            data_hosts=run_data.host_names(offer.get("data_hosts", []), bool(offer.get("webdav"))),
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)


def read_as_owner(
    runs_dir: str = RUNS_DIR, cat: tuple[str, ...] = ("sudo", "-n", "-u", "{owner}", "/usr/bin/cat", "--")
):
    """A file of a run, read as its owner (the service itself cannot read users' homes): owner and relative path
    come from the records and FILE_RE, never from a request as given."""

    def read(owner: str, relative: str) -> bytes:
        home = os.path.expanduser(f"~{owner}")
        return read_output([word.format(owner=owner) for word in cat] + [f"{home}/{runs_dir}/{relative}"], 60)

    return read


class RunsService(Application):
    """clusterhub-runs: the notebook runs service (a JupyterHub service with its own systemd unit)."""

    name = "clusterhub-runs"
    config_file = Unicode("/etc/clusterhub/runs.json", help="The site's offer: profiles, partitions, images").tag(
        config=True
    )
    db_url = Unicode("sqlite:////var/lib/clusterhub-runs/runs.sqlite", help="SQLAlchemy URL of the records").tag(
        config=True
    )
    port = Integer(8089, help="Port on 127.0.0.1 (the hub's proxy forwards /services/runs/ to it)").tag(config=True)
    poll_interval = Float(5.0, help="Seconds between reconciliations with Slurm").tag(config=True)
    sbatch = List(Unicode(), SlurmCommands().sbatch).tag(config=True)
    scancel = List(Unicode(), SlurmCommands().scancel).tag(config=True)
    squeue = List(Unicode(), SlurmCommands().squeue).tag(config=True)
    sacct = List(Unicode(), SlurmCommands().sacct).tag(config=True)
    api_token_file = Unicode(
        "", help="File with the service's hub API token (systemd's credential); empty: $JUPYTERHUB_API_TOKEN"
    ).tag(config=True)
    db_url_file = Unicode("", help="File with the database URL (systemd's credential; it may hold a password)").tag(
        config=True
    )
    max_definitions = Integer(20, help="Job definitions (scheduled notebooks) a user may have").tag(config=True)
    data_file = Unicode(
        "",
        help="JSON file of the runs' external data: {hosts: [{name, address, port}] (reached over SSH with the"
        " users' keys), webdav: {mount_dir, mount, umount} (the users' WebDAV spaces on the nodes) or null}",
    ).tag(config=True)
    remote_file = Unicode(
        "",
        help="JSON file of remote HPC mode: {ssh: [the ssh command to hpc-gate on the login node, with the service's"
        " own key], user_map: {hub user: HPC account}}; empty: remote partitions are not offered for runs",
    ).tag(config=True)
    debug = Bool(False).tag(config=True)
    aliases = Dict(
        {
            "config": "RunsService.config_file",
            "db": "RunsService.db_url",
            "port": "RunsService.port",
            "api-token-file": "RunsService.api_token_file",
            "db-url-file": "RunsService.db_url_file",
            "poll-interval": "RunsService.poll_interval",
            "data": "RunsService.data_file",
            "remote": "RunsService.remote_file",
        }
    )

    def offer(self) -> dict:
        with open(self.config_file, encoding="utf-8") as f:
            offer = json.load(f)
        # remote HPC mode's partitions are offered for runs where their jobs run as the users' own HPC accounts
        # (through hpc-gate, with the service's own key); a shared account's are not (every job of it could read
        # every run's files)
        remote = self.remote_settings()
        partitions = [
            p
            for p in offer.get("partitions", [])
            if not p.get("remote") or (remote["ssh"] and p.get("run_as", "account") == "user")
        ]
        names = {p["name"] for p in partitions}
        profiles = offer.get("profiles", [])
        return {
            "partitions": partitions,
            # Docker profiles stay, for job.build's own message; remote ones are named for the service's
            "profiles": [p for p in profiles if p.get("kind", "slurm") != "slurm" or p.get("partition") in names],
            "remote_profiles": {
                p["slug"]: SHARED_ACCOUNT if remote["ssh"] else NO_REMOTE
                for p in profiles
                if p.get("kind", "slurm") == "slurm" and p.get("partition") not in names
            },
            "images": offer.get("images", []),
            "allow_custom": bool(offer.get("allow_custom", True)),
            "hpc_user_map": remote["user_map"],
            **self.data_places(),
        }

    def remote_settings(self) -> dict:
        """How the service reaches remote HPC mode's login node: {ssh: argv up to the command, user_map: hub user:
        HPC account (empty: the same names)}; no ssh where the site has no remote partition."""
        if not self.remote_file:
            return {"ssh": [], "user_map": {}}
        with open(self.remote_file, encoding="utf-8") as f:
            remote = json.load(f)
        ssh, user_map = remote.get("ssh") or [], remote.get("user_map") or {}
        if not isinstance(ssh, list) or not all(isinstance(word, str) and word for word in ssh):
            raise ValueError(f"{self.remote_file}: ssh must be a list of words (the ssh command up to the command)")
        if not isinstance(user_map, dict):
            raise ValueError(f"{self.remote_file}: user_map must map hub user names to HPC account names")
        return {"ssh": ssh, "user_map": user_map}

    def data_places(self) -> dict:
        """Where runs may read and write external data: the site's data hosts, and the WebDAV spaces."""
        if not self.data_file:
            return {"data_hosts": [], "webdav": None}
        with open(self.data_file, encoding="utf-8") as f:
            places = json.load(f)
        webdav = places.get("webdav") or None
        plain = re.compile(r"^[A-Za-z0-9_./-]+$")
        if webdav and not all(plain.match(str(webdav.get(k, ""))) for k in ("mount_dir", "mount", "umount")):
            raise ValueError(f"{self.data_file}: webdav needs plain mount_dir, mount and umount paths")
        return {"data_hosts": run_data.check_hosts(places.get("hosts")), "webdav": webdav}

    def make_app(self, store: Store, slurm: SlurmCommands, read_file) -> web.Application:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/runs/")
        settings = Settings(store, slurm, self.offer(), read_file, self.max_definitions)
        return web.Application(
            [
                (prefix, PageHandler),
                (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
                (url_path_join(prefix, "scheduler/runtime_environments"), RuntimeEnvironmentsHandler),
                (url_path_join(prefix, "scheduler/jobs"), JobsHandler),
                (url_path_join(prefix, r"scheduler/jobs/([^/]+)"), JobHandler),
                (url_path_join(prefix, r"scheduler/jobs/([^/]+)/files/([^/]+)"), JobFileHandler),
                (url_path_join(prefix, "scheduler/job_definitions"), DefinitionsHandler),
                (url_path_join(prefix, r"scheduler/job_definitions/([^/]+)"), DefinitionHandler),
                (url_path_join(prefix, r"scheduler/job_definitions/([^/]+)/jobs"), DefinitionJobsHandler),
            ],
            runs=settings,
            cookie_secret=os.urandom(32),
            xsrf_cookies=True,
            debug=self.debug,
        )

    def start(self):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        if self.api_token_file:  # read by HubAuth from the environment, never from a command line
            os.environ["JUPYTERHUB_API_TOKEN"] = Path(self.api_token_file).read_text().strip()
        if self.db_url_file:
            self.db_url = Path(self.db_url_file).read_text().strip()
        store = Store(self.db_url)
        slurm = SlurmCommands(sbatch=self.sbatch, scancel=self.scancel, squeue=self.squeue, sacct=self.sacct)
        ssh = self.remote_settings()["ssh"]
        slurm.remote = RemoteCommands(ssh=ssh) if ssh else None
        app = self.make_app(store, slurm, read_as_owner())
        HTTPServer(app, xheaders=True).listen(self.port, "127.0.0.1")
        shared = app.settings["runs"]

        async def poll():
            try:
                fired = await shared.blocking(fire_due, store, slurm, shared.offer)
                if fired:
                    log.info("job definitions fired: %s", fired)
            except Exception:
                log.exception("firing the job definitions failed; trying again at the next poll")
            try:
                changed = await shared.blocking(reconcile, store, slurm)
                if changed:
                    log.info("reconciled: %s", changed)
            except Exception:
                log.exception("reconciliation failed; trying again at the next poll")

        ioloop.PeriodicCallback(poll, self.poll_interval * 1000).start()
        log.info("clusterhub-runs on 127.0.0.1:%s, records in %s", self.port, self.db_url.split("@")[-1])
        ioloop.IOLoop.current().start()


main = RunsService.launch_instance
