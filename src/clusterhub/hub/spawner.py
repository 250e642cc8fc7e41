"""ClusterSlurmSpawner: batchspawner's SlurmSpawner with a validated resource form, one batched
squeue for all servers, Slurm-aware progress messages, separate queue and start-up limits,
a maintenance switch, and polling that never stops a server because Slurm did not answer."""

from __future__ import annotations

import asyncio
import shlex
import time
from datetime import datetime

from batchspawner import JobStatus, SlurmSpawner
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from traitlets import Bool, Float, Integer, List, Unicode, default

from ..protocol import SACCT_FIELDS, direct_job_log, parse_sacct
from . import port_report
from .job_end import accounted, cause
from .node_check import Reach, missed_polls, probe, resolve, server_address
from .pending import waiting
from .request import OptionsError, idle_args, validate_options
from .rules import config_errors
from .settings import FormSpawner
from .slurm_queue import SQUEUE_FORMAT, SlurmQueue, run_exec
from .start_estimate import StartEstimates, question_argv

# batchspawner's port-report handler (registered by the import above) gives way to the narrow one
port_report.install()

_QUEUES: dict[tuple, SlurmQueue] = {}
_ESTIMATES: dict[tuple, StartEstimates] = {}


def start_failed(message: str) -> web.HTTPError:
    """A start that cannot succeed: the user reads `message` (what happened, what to do) on the spawn page and in
    the REST answer, as a 503, never a bare 500."""
    error = web.HTTPError(503, message, reason="The server could not start")
    error.jupyterhub_message = message
    return error


def _apply_user_options(spawner: ClusterSlurmSpawner, user_options: dict) -> None:
    """Validate what the user asked for (form or REST body) and set the batch request from it."""
    try:
        request = validate_options(
            user_options or {}, spawner.profiles, spawner.partitions, spawner.images, spawner.allow_custom
        )
    except OptionsError as e:
        raise web.HTTPError(400, f"Cannot start the server: {e}", reason=str(e)) from None
    if request.kind != "slurm":
        reason = f"profile {request.profile} runs on Docker, not on Slurm"
        raise web.HTTPError(400, f"Cannot start the server: {reason}", reason=reason)
    spawner.request = request
    spawner.req_partition = request.partition
    spawner.req_nprocs = str(request.cpus)
    spawner.req_memory = f"{request.memory_gb}G"
    spawner.req_runtime = request.runtime
    spawner.req_gres = f"gpu:{request.gpus}" if request.gpus else ""
    # the batch script gets the image's path on the nodes (the form and REST name it; batchspawner lays
    # user_options over the req_* values, so the path needs a name of its own)
    paths = {i["name"]: i.get("path", "") for i in spawner.images}
    spawner.req_image_path = paths.get(request.image, "") if request.image else ""
    spawner.user_options = request.as_user_options()
    profile = next((p for p in spawner.profiles if p["slug"] == request.profile), {})
    spawner.idle_minutes = float(profile.get("idle_minutes") or 0)


class ClusterSlurmSpawner(FormSpawner, SlurmSpawner):
    job_name = Unicode("jupyterhub", help="Slurm job name of every server this hub starts").tag(config=True)
    queue_timeout = Integer(600, help="Seconds a server may wait in the Slurm queue").tag(config=True)
    startup_timeout = Integer(120, help="Seconds from job start until the server must answer").tag(config=True)
    squeue_max_age = Float(
        25.0, help="Seconds a batched squeue snapshot is reused by polls (keep it below the poll interval)"
    ).tag(config=True)
    squeue_timeout = Float(15.0, help="Seconds before a squeue counts as unanswered").tag(config=True)
    squeue_command = List(["squeue"], help="squeue argv prefix (e.g. via sudo where PrivateData=jobs)").tag(config=True)
    unreachable_polls = Integer(
        2, help="Polls in a row at which a running job's server does not accept connections before it counts as lost"
    ).tag(config=True)
    req_image_path = Unicode("", help="Path on the nodes of the image chosen in the form (for the batch script)").tag(
        config=True
    )
    req_job_name = Unicode("jupyterhub").tag(config=True)
    job_log_command = List(
        ["sudo", "-n", "-u", "{username}", "/usr/bin/tail", "-c", "16384", "--", "{log}"],
        help="argv printing the end of a job's output file {log} as user {username} (why a start failed)",
    ).tag(config=True)
    form_start_estimates = Bool(
        True, help="Show on each Slurm profile of the form whether it would start now or the expected wait"
    ).tag(config=True)
    server_check_interval = Float(
        0.1, help="Seconds between tries of a starting server's HTTP port once its job runs (each try is one connect)"
    ).tag(config=True)
    start_poll_growth = Float(
        0.25,
        help="While a server that reports its own port starts, the fraction of its wait so far that the next look at "
        "Slurm may lag (waited 40 s: asked again within 10 s; never less than startup_poll_interval, never more than "
        "squeue_max_age). Its port report wakes the start at once, so only a failure or the queue position is seen "
        "later; a hundred starts cost a few squeues a minute instead of two a second",
    ).tag(config=True)
    start_estimate_timeout = Float(3.0, help="Seconds the form waits for each sbatch --test-only").tag(config=True)
    idle_minutes = Float(0, help="The current server's profile's idle_minutes (0: only the hub's idle culler)")
    job_accounting_command = List(
        ["sudo", "-n", "-u", "{username}", "/usr/bin/sacct", "-n", "-P", "-j", "{job_id}", "-o", SACCT_FIELDS],
        help="argv printing Slurm's accounting of job {job_id} as user {username} (why a start failed); [] for none",
    ).tag(config=True)
    req_singleuser_venv = Unicode("/opt/jupyter", help="Venv of the single-user server on the nodes").tag(config=True)
    node_address = Unicode(
        "", help="The server's node's address as the hub last resolved it (the lost-node check, when the name does not)"
    )

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_user_options

    @default("startup_poll_interval")
    def _default_startup_poll_interval(self):
        # a server that reports its port wakes its start itself (_sleep_until_report): looking at Slurm every second
        # (batchspawner: every 0.5 s) does not delay it, and halves the squeues while a class starts at once
        return 1.0

    @default("start_timeout")
    def _default_start_timeout(self):
        return self.queue_timeout + self.startup_timeout + 30

    @default("http_timeout")
    def _default_http_timeout(self):
        # the server reports its port before it answers; on a busy node JupyterLab may need longer than 30 s
        return self.startup_timeout

    @default("req_job_name")
    def _default_req_job_name(self):
        return self.job_name

    def get_args(self) -> list[str]:
        return [*super().get_args(), *(idle_args(self.idle_minutes) if self.idle_minutes else [])]

    async def start_estimates(self) -> dict[str, str]:
        return await self.start_estimates_for(self.user.name)

    async def start_estimates_for(self, username: str) -> dict[str, str]:
        """{slug: words} for the Slurm profiles on the cluster's own partitions (start_estimate.py), asked as
        `username`, each answer shared by every user for one poll interval."""
        if not self.form_start_estimates:
            return {}
        remote = {p["name"] for p in self.partitions if p.get("remote")}
        prefix = shlex.split(self.exec_prefix.format(username=username)) if self.exec_prefix else []
        sbatch = shlex.split(self.batch_submit_cmd)[:1]
        argvs = {}
        for profile in self.profiles:
            if profile.get("kind", "slurm") != "slurm" or profile.get("partition") in remote:
                continue
            try:
                request = validate_options({"profile": profile["slug"]}, self.profiles, self.partitions, self.images)
            except OptionsError:
                continue
            argvs[profile["slug"]] = [*prefix, *question_argv(sbatch, request, self.job_name)]
        key = (float(self.poll_interval), self.start_estimate_timeout)
        if key not in _ESTIMATES:
            _ESTIMATES[key] = StartEstimates(run_exec, ttl=key[0], timeout=key[1])
        estimates = await _ESTIMATES[key].ask(argvs, lambda argv: tuple(argv[len(prefix) :]))
        now = datetime.now()  # Slurm's times are the controller's local time, naive
        return {slug: estimate.words(now) for slug, estimate in estimates.items() if estimate}

    def check_config(self) -> None:
        errors = config_errors(self.profiles, self.partitions, self.images)
        if errors:
            raise ValueError("; ".join(errors))

    # the batched squeue lists every job of the cluster (with a name filter squeue fetched every job too, and dropped
    # the others itself), so a pending server's place among its partition's pending jobs is known; remote mode's
    # sees the hub's jobs only
    cluster_wide_queue = True

    @property
    def queue(self) -> SlurmQueue:
        argv = [*self.squeue_command, "-h", "-o", SQUEUE_FORMAT]
        key = (tuple(argv), self.squeue_timeout)
        if key not in _QUEUES:
            _QUEUES[key] = SlurmQueue(argv, timeout=self.squeue_timeout)
        return _QUEUES[key]

    async def query_job_status(self, max_age: float | None = None, fresh_after: float = float("-inf")):
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        info = await self.queue.job(
            self.job_id,
            self.squeue_max_age if max_age is None else max_age,
            not_before=getattr(self, "_submitted_at", float("-inf")),
            fresh_after=fresh_after,
        )
        if info is None:
            self.job_status = f"UNKNOWN (squeue: {self.queue.last_error or 'no answer since the job was submitted'})"
            return JobStatus.UNKNOWN
        if info is False or not (info.pending or info.running):
            self.job_status = "" if info is False else f"{info.state} {info.node}"
            return JobStatus.NOTFOUND
        self.job_status = f"{info.state} {info.node}"
        self._job_info = info
        return JobStatus.RUNNING if info.running else JobStatus.PENDING

    def state_gethost(self):
        info = getattr(self, "_job_info", None)
        return info.node if info else super().state_gethost()

    def get_state(self):
        state = super().get_state()
        if self.node_address:
            state["node_address"] = self.node_address
        return state

    def load_state(self, state):
        super().load_state(state)
        self.node_address = state.get("node_address", "")

    def clear_state(self):
        super().clear_state()
        self.node_address = ""

    async def start(self):
        self.refuse_during_maintenance()
        self.ip = self.traits()["ip"].default_value
        self.port = self._fresh_port()
        if self.server:
            self.server.port = self.port
        # direct mode: the server reports the port it binds (port_report.py), which also says its job runs
        self._reports_port = not self.port
        self._reported_at: float | None = None
        await self.submit_batch_script()
        # set after sbatch returned: a snapshot taken before this moment may lack the job (another
        # spawner's refresh can run while sbatch is still talking to slurmctld)
        self._submitted_at = time.monotonic()
        if not self.job_id:
            raise start_failed("Slurm did not accept the job (no job id in sbatch's output); try again later")
        queued_since = time.monotonic()
        while True:
            status = await self.query_job_status(max_age=self._start_poll_age())
            if status != JobStatus.RUNNING and self._port_reported() > float("-inf"):
                # the server reported its port, so its job runs: a snapshot taken after the report shows where
                status = await self.query_job_status(max_age=self._start_poll_age(), fresh_after=self._port_reported())
            if status == JobStatus.RUNNING:
                break
            if await self._job_gone(status):
                raise start_failed(await self.ended_early(self._forget_job(), "its server started"))
            if time.monotonic() - queued_since > self.queue_timeout:
                await self.cancel_batch_job()
                raise start_failed(
                    f"Slurm job {self._forget_job()} waited over {self.queue_timeout} s in the queue and was "
                    "cancelled; choose fewer resources or another partition, or try again later"
                )
            await self._sleep_until_report(self._start_poll_age())
        self.ip = self.state_gethost()
        await self._wait_for_server(time.monotonic() + self.startup_timeout)
        self.node_address = await resolve(self.ip)  # kept in the server's state (the lost-node check)
        self._missed_polls = 0
        self.db.commit()
        self.log.info("Server of %s: job %s at %s:%s", self.user.name, self.job_id, self.ip, self.port)
        return self.ip, self.port

    async def _wait_for_server(self, deadline: float) -> None:
        """Until the server answers HTTP (then JupyterHub's own wait finds it up at once), tried every
        server_check_interval (a refused connection costs a millisecond; the user waits for the next try), and the
        job checked in snapshots as old as _start_poll_age allows: a job that ends meanwhile fails the start, with
        its reason."""
        while not (self.port and await self._server_answers()):
            if await self._job_gone(await self.query_job_status(max_age=self._start_poll_age())):
                raise start_failed(await self.ended_early(self._forget_job(), "its server answered"))
            if time.monotonic() > deadline:
                await self.cancel_batch_job()
                job = self._forget_job()
                raise start_failed(
                    f"Slurm job {job} runs, but its server did not answer within {self.startup_timeout} s and "
                    f"was stopped; see {self.job_log(job)}"
                )
            await asyncio.sleep(min(self.server_check_interval, self.startup_poll_interval))

    def _start_poll_age(self) -> float:
        """How old a snapshot a starting server's poll accepts: startup_poll_interval, or, for a server that
        reports its port, start_poll_growth of the wait so far (up to squeue_max_age)."""
        if not self._reports_port:
            return self.startup_poll_interval
        waited = time.monotonic() - self._submitted_at
        return max(self.startup_poll_interval, min(waited * self.start_poll_growth, self.squeue_max_age))

    def _report_unseen(self) -> bool:
        """The server has reported its port, and the start has not acted on it yet."""
        return self._reports_port and bool(self.port) and self._reported_at is None

    def _port_reported(self) -> float:
        """When the start first saw the server's reported port (the clock's time; -inf before)."""
        if self._report_unseen():
            self._reported_at = time.monotonic()
        return float("-inf") if self._reported_at is None else self._reported_at

    async def _sleep_until_report(self, seconds: float) -> None:
        """Sleep `seconds`, or less: until the server reports its port (checked every server_check_interval)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not self._report_unseen():
            await asyncio.sleep(min(self.server_check_interval, left))

    async def _job_gone(self, status: JobStatus) -> bool:
        """The job is gone: `status` says so and a fresh snapshot says it again (one missing line is not trusted)."""
        return status == JobStatus.NOTFOUND and await self.query_job_status(max_age=0) == JobStatus.NOTFOUND

    def _forget_job(self) -> str:
        job, self.job_id = self.job_id, ""
        return job

    async def _server_answers(self, timeout: float = 2.0) -> bool:
        """True when the server answers HTTP at its API (any status): it is up, not just its port or tunnel."""
        base = self.server.base_url if self.server else "/"
        url = f"http://{self.ip}:{self.port}{url_path_join(base, 'api')}"
        try:
            await AsyncHTTPClient().fetch(
                url, connect_timeout=timeout, request_timeout=timeout, follow_redirects=False, raise_error=False
            )
        except Exception:  # refused, reset, a tunnel without a server behind it, a timeout: not up
            return False
        return True

    async def ended_early(self, job: str, before: str) -> str:
        """The message for a job that ended before `before`: what ended it, from the job's own output."""
        return f"Slurm job {job} ended before {before}: {await self.job_end_reason(job)}"

    async def job_end_reason(self, job: str) -> str:
        """Why the job ended, with what to do about it, from its output file and its accounting, read at once."""
        output, accounting = await asyncio.gather(self.job_output(job), self.job_accounting(job))
        return cause(output, self.job_log(job), accounted(parse_sacct(accounting), job)).sentence()

    async def job_output(self, job: str) -> str:
        """The end of the job's output file, read as the user ("" when it cannot be read)."""
        path = direct_job_log(job, self.req_homedir)
        return await self._output_of([word.format(username=self.user.name, log=path) for word in self.job_log_command])

    async def job_accounting(self, job: str) -> str:
        """sacct's rows of the job (protocol.SACCT_FIELDS), read as the user ("" when none)."""
        return await self._output_of(
            [word.format(username=self.user.name, job_id=job) for word in self.job_accounting_command]
        )

    async def _output_of(self, argv: list[str]) -> str:
        """What argv prints; "" when there is none, it fails or it takes longer than squeue_timeout."""
        if not argv:
            return ""
        try:
            code, out, _ = await asyncio.wait_for(run_exec(argv), self.squeue_timeout)
        except (OSError, TimeoutError):
            return ""
        return out if code == 0 else ""

    def job_log(self, job: str) -> str:
        """Where the job's output is (the batch script's --output), for error messages."""
        return direct_job_log(job)

    def _fresh_port(self) -> int:
        """The port before the job starts: 0, the server reports the one it binds (batchspawner's API)."""
        return self.traits()["port"].default_value

    async def stop(self, now=False):
        if not self.job_id:
            return
        self.log.info("Stopping server job %s of %s", self.job_id, self.user.name)
        try:
            await self.cancel_batch_job()
        except (RuntimeError, OSError, TimeoutError) as e:
            # JupyterHub forgets the server all the same: the orphaned-job check (reaper.py) cancels the job
            # once Slurm answers again
            self.log.warning(
                "scancel of job %s of %s failed (%s); the orphaned-job check, where on, cancels it once Slurm answers",
                self.job_id,
                self.user.name,
                e,
            )
            return
        if now:
            return
        # until Slurm says the job ended, in snapshots taken after the scancel and at most a second old, the first
        # half a second after it (a cancelled job takes about that to leave; stops of the same moment share one)
        cancelled, deadline = time.monotonic(), time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            status = await self.query_job_status(max_age=1.0, fresh_after=cancelled)
            if status not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                return
        self.log.warning("Server job %s of %s did not end within 10 s of scancel", self.job_id, self.user.name)

    async def poll(self):
        status = await self.query_job_status()
        if status == JobStatus.UNKNOWN:
            self.log.warning("Slurm did not answer for job %s; keeping the server: %s", self.job_id, self.job_status)
            return None
        if status == JobStatus.PENDING:
            return None
        if status == JobStatus.RUNNING:
            # JupyterHub also polls while a new server is still binding its port (spawn pending):
            # only a server that was up counts as lost when it stops answering
            if self.pending:
                return None
            reach, detail = await self._server_reach()
            self._missed_polls = missed_polls(reach, getattr(self, "_missed_polls", 0))
            if reach is not Reach.DOWN and detail:
                # the hub's side (its resolver, its network): says nothing against the node
                self.log.warning("Checking the server of %s (job %s): %s; keeping it", *self._who(), detail)
            if reach is not Reach.DOWN or self._missed_polls < self.unreachable_polls:
                return None
            self.log.warning(
                "Server of %s (job %s) did not accept connections %s polls in a row (%s): its node is lost; "
                "cancelling the job",
                *self._who(),
                self._missed_polls,
                detail,
            )
            try:
                await self.cancel_batch_job()
            except (RuntimeError, OSError, TimeoutError) as e:
                self.log.warning("scancel of job %s failed: %s", self.job_id, e)
        self.clear_state()
        return 1

    def _server_address(self) -> tuple[str, int]:
        """The server's host and port: from the hub's stored server record (also after a hub restart, when
        the spawner's own ip and port are back at their defaults), else the spawner's."""
        record = self.server
        return server_address(record.ip if record else "", record.port if record else 0, self.ip, self.port)

    def _who(self) -> tuple[str, str]:
        return self.user.name, self.job_id

    async def _server_reach(self, timeout: float = 3.0) -> tuple[Reach, str]:
        """Whether the server's port accepts a TCP connection (the job may run on a dead node); UNKNOWN when
        the hub cannot tell (node_check.py)."""
        host, port = self._server_address()
        if not host or not port:
            return Reach.UNKNOWN, "the hub has no address of the server"
        reach, detail, address = await probe(host, port, timeout, self.node_address)
        self.node_address = address or self.node_address
        return reach, detail

    async def progress(self):
        """The start's progress events: what Slurm says of the job, looked at every second and sent when it changed
        (a hundred users watching their pending servers cost the hub a hundred events a minute, not a second)."""
        last = None
        while True:
            info = getattr(self, "_job_info", None)
            if not self.job_id:
                event = {"message": "Submitting the job to Slurm…"}
            elif info is None or info.job_id != self.job_id:
                event = {"message": f"Job {self.job_id} submitted, waiting for Slurm…"}
            elif info.pending:
                request = getattr(self, "request", None)
                event = waiting(
                    info,
                    self.queue.jobs if self.cluster_wide_queue else None,
                    cpus=request.cpus if request else 0,
                    memory_gb=request.memory_gb if request else 0,
                    gpus=request.gpus if request and isinstance(request.gpus, int) else 0,
                ).event()
            elif info.running:
                yield {"message": f"Job {self.job_id} running on {info.node}, starting JupyterLab…"}
                return
            else:
                event = last
            if event != last:
                yield event
                last = event
            await asyncio.sleep(1)
