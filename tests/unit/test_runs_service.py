"""The runs service's REST API (src/clusterhub/runs/service.py) in process: tornado serving the real handlers and
a real SQLite store, Slurm scripted (what sbatch, squeue, sacct and scancel answer), the hub's token check replaced
by a table of tokens (the lab tests log in through the real hub)."""

from __future__ import annotations

import asyncio
import json

import pytest
from jupyterhub.services import auth
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from clusterhub.runs.service import RunsService, render_html
from clusterhub.runs.slurm import SlurmCommands, reconcile
from clusterhub.runs.store import Store

ACCESS = "access:services!service=runs"
TOKENS = {
    "alice-token": {"name": "alice", "kind": "user", "scopes": [ACCESS]},
    "bob-token": {"name": "bob", "kind": "user", "scopes": [ACCESS]},
    "noaccess-token": {"name": "carol", "kind": "user", "scopes": []},
    "service-token": {"name": "culler", "kind": "service", "scopes": [ACCESS]},
}
OFFER = {
    "profiles": [
        {"slug": "small", "display_name": "Small", "partition": "jupyter", "cpus": 1, "memory_gb": 1, "hours": 2},
        {"slug": "hpc", "display_name": "HPC", "partition": "hpc", "cpus": 1, "memory_gb": 1, "hours": 2},
        {"slug": "ws", "kind": "docker", "display_name": "Workstation", "image": "python"},
    ],
    "partitions": [
        {"name": "jupyter", "max_cpus": 2, "max_memory_gb": 4, "max_hours": 12, "max_gpus": 0},
        {"name": "hpc", "max_cpus": 2, "max_memory_gb": 4, "max_hours": 12, "max_gpus": 0, "remote": True},
    ],
    "images": [{"name": "node", "path": ""}, {"name": "python", "path": "/opt/clusterhub/images/python.sif"}],
    "allow_custom": True,
}
NOTEBOOK = json.dumps(
    {
        "cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "n = 1", "outputs": []}],
        "nbformat": 4,
        "nbformat_minor": 5,
    }
)


class Slurm:
    def __init__(self):
        self.calls, self.queue, self.acct, self.next_id = [], "", "", 100

    def __call__(self, argv, stdin=None):
        self.calls.append((argv, stdin))
        if "sbatch" in argv:
            self.next_id += 1
            return 0, f"{self.next_id}\n", ""
        if argv[0] == "squeue":
            return 0, self.queue, ""
        if "sacct" in argv:
            return 0, self.acct, ""
        return 0, "", ""


class Service:
    """A running service for one test: `run(scenario)` serves it on a free port while `await scenario(base)`."""

    def __init__(self, app, slurm, store, files):
        self.app, self.slurm, self.store, self.files = app, slurm, store, files

    def run(self, scenario):
        async def serve():
            sock, port = bind_unused_port()
            server = HTTPServer(self.app)
            server.add_sockets([sock])
            try:
                return await scenario(f"http://127.0.0.1:{port}/services/runs/")
            finally:
                server.stop()

        return asyncio.run(asyncio.wait_for(serve(), 60))


@pytest.fixture
def service(tmp_path, monkeypatch):
    return make_service(tmp_path, monkeypatch)


def make_service(tmp_path, monkeypatch, offer=None, **settings) -> Service:
    """The service on OFFER (or `offer`), with RunsService's other settings as given (data_file, ...)."""
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/services/runs/")
    monkeypatch.setenv("JUPYTERHUB_OAUTH_ACCESS_SCOPES", json.dumps([ACCESS]))

    def get_user(self, handler, *, sync=True):
        words = handler.request.headers.get("Authorization", "").split()
        return dict(TOKENS[words[1]]) if len(words) == 2 and words[1] in TOKENS else None

    monkeypatch.setattr(auth.HubAuth, "get_user", get_user)
    config = tmp_path / "runs.json"
    config.write_text(json.dumps(offer or OFFER))
    slurm = Slurm()
    store = Store(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    files: dict[tuple[str, str], bytes] = {}

    def read_file(owner, relative):
        if (owner, relative) not in files:
            raise OSError("No such file or directory")
        return files[(owner, relative)]

    app = RunsService(config_file=str(config), **settings).make_app(store, SlurmCommands(runner=slurm), read_file)
    return Service(app, slurm, store, files)


async def call(base, path, token="alice-token", method="GET", body=None):
    """(status, JSON or text) of one request with a hub API token."""
    try:
        response = await AsyncHTTPClient().fetch(
            base + path,
            method=method,
            headers={"Authorization": f"token {token}"} if token else {},
            body=None if body is None else json.dumps(body),
            follow_redirects=False,
            allow_nonstandard_methods=True,
        )
    except HTTPClientError as exc:
        response = exc.response
    text = response.body.decode() if response.body else ""
    try:
        return response.code, json.loads(text) if text else None
    except ValueError:
        return response.code, text


def submit_body(**extra):
    return {
        "notebook": NOTEBOOK,
        "input_filename": "n.ipynb",
        "profile": "small",
        "runtime_environment_name": "python",
        "parameters": {"n": 5},
        **extra,
    }


def test_a_run_is_submitted_as_its_owner_and_followed_to_the_end(service):
    async def scenario(base):
        status, created = await call(base, "scheduler/jobs", method="POST", body=submit_body())
        assert status == 201, created
        run_id = created["job_id"]
        argv, script = service.slurm.calls[-1]
        assert argv == ["sudo", "-n", "-u", "alice", "sbatch", "--parsable"]
        assert "#SBATCH --partition=jupyter" in script and "/opt/clusterhub/images/python.sif python3" in script
        status, run = await call(base, f"scheduler/jobs/{run_id}")
        assert (status, run["status"], run["slurm_job_id"], run["parameters"]) == (200, "QUEUED", "101", {"n": 5})
        assert run["resources"]["partition"] == "jupyter" and run["runtime_environment_name"] == "python"
        service.slurm.queue = "101|RUNNING|None\n"
        reconcile(service.store, SlurmCommands(runner=service.slurm))
        assert (await call(base, f"scheduler/jobs/{run_id}"))[1]["status"] == "IN_PROGRESS"
        service.slurm.queue = ""
        service.slurm.acct = "101|COMPLETED|0:0|00:00:20|02:00:00|00:10|1|1G||cpu=1|None\n"
        reconcile(service.store, SlurmCommands(runner=service.slurm))
        run = (await call(base, f"scheduler/jobs/{run_id}"))[1]
        assert run["status"] == "COMPLETED" and run["efficiency"]["elapsed_s"] == 20
        listed = (await call(base, "scheduler/jobs"))[1]
        assert [j["job_id"] for j in listed["jobs"]] == [run_id] and listed["total_count"] == 1
        service.files[("alice", f"{run_id}/output.ipynb")] = NOTEBOOK.encode()
        status, text = await call(base, f"scheduler/jobs/{run_id}/files/output.ipynb")
        assert status == 200 and text["cells"][0]["source"] == "n = 1"
        status, page = await call(base, f"scheduler/jobs/{run_id}/files/output.ipynb?format=html")
        assert status == 200 and "<pre class=src>n = 1</pre>" in page

    service.run(scenario)


@pytest.mark.security
def test_another_users_run_is_not_found_and_cannot_be_stopped(service):
    async def scenario(base):
        run_id = (await call(base, "scheduler/jobs", method="POST", body=submit_body()))[1]["job_id"]
        for method, path, body in [
            ("GET", "", None),
            ("PATCH", "", {"status": "STOPPED"}),
            ("GET", "/files/output.ipynb", None),
            ("GET", "/files/job-0.log", None),
        ]:
            status, answer = await call(
                base, f"scheduler/jobs/{run_id}{path}", token="bob-token", method=method, body=body
            )
            assert status == 404 and "of yours" in answer["message"], (method, path, answer)
        assert (await call(base, "scheduler/jobs", token="bob-token"))[1]["jobs"] == []
        assert not any("scancel" in argv for argv, _ in service.slurm.calls)
        # no token, no access scope, a service's token: refused
        assert (await call(base, "scheduler/jobs", token=""))[0] in (302, 403)
        assert (await call(base, "scheduler/jobs", token="noaccess-token"))[0] == 403
        assert (await call(base, "scheduler/jobs", token="service-token"))[0] == 403

    service.run(scenario)


@pytest.mark.security
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"profile": "custom", "partition": "jupyter; id"}, "unknown partition"),
        ({"profile": "custom", "partition": "jupyter", "cpus": "1\n#SBATCH --uid=0"}, "cpus must be a number"),
        ({"profile": "custom", "partition": "jupyter", "cpus": 8}, "8 CPUs requested; partition jupyter allows 1 to 2"),
        ({"profile": "hpc"}, "profile hpc runs in remote HPC mode, which this service is not set up to reach"),
        ({"profile": "ws"}, "not a Slurm profile"),
        ({"runtime_environment_name": "../../etc/passwd"}, "unknown image"),
        ({"parameters": {"os.system('id')": 1}}, "must be an identifier"),
        ({"parameters": {"n": {"nested": 1}}}, "a number, true/false, null, a string or a list of those"),
        ({"input_filename": "../../.bashrc"}, "input_filename must be a file name without '/'"),
        ({"kernel": "python3 --ip=0.0.0.0"}, "is not a kernel name"),
        ({"sweep": "n"}, "must be a list of 2 to 1000 values"),
        ({"notebook": "{}"}, "not a Jupyter notebook in format 4"),
    ],
)
def test_bad_requests_say_why_and_submit_nothing(service, extra, message):
    async def scenario(base):
        status, answer = await call(base, "scheduler/jobs", method="POST", body=submit_body(**extra))
        assert status == 400 and message in answer["message"], answer
        assert service.slurm.calls == [] and service.store.count("alice") == 0

    service.run(scenario)


def test_file_names_are_checked_and_a_missing_file_is_explained(service):
    async def scenario(base):
        run_id = (await call(base, "scheduler/jobs", method="POST", body=submit_body()))[1]["job_id"]
        for name in ("..%2F..%2F.ssh%2Fid_rsa", "job-0.log.bak", ".bashrc"):
            status, answer = await call(base, f"scheduler/jobs/{run_id}/files/{name}")
            assert status == 404, answer
        status, answer = await call(base, f"scheduler/jobs/{run_id}/files/output.ipynb")
        assert status == 404 and "not there (yet)" in answer["message"]

    service.run(scenario)


def test_stopping_cancels_as_the_owner(service):
    async def scenario(base):
        run_id = (await call(base, "scheduler/jobs", method="POST", body=submit_body()))[1]["job_id"]
        assert (await call(base, f"scheduler/jobs/{run_id}", method="PATCH", body={"status": "RUNNING"}))[0] == 400
        assert (await call(base, f"scheduler/jobs/{run_id}", method="PATCH", body={"status": "STOPPED"}))[0] == 204
        assert service.slurm.calls[-1][0] == ["sudo", "-n", "-u", "alice", "scancel", "101"]

    service.run(scenario)


def test_a_failed_run_shows_its_failing_cell_and_the_logs_end(service):
    async def scenario(base):
        run_id = (await call(base, "scheduler/jobs", method="POST", body=submit_body()))[1]["job_id"]
        service.slurm.acct = "101|FAILED|1:0|00:00:20|02:00:00|00:10|1|1G||cpu=1|None\n"
        reconcile(service.store, SlurmCommands(runner=service.slurm))
        executed = {
            "cells": [
                {
                    "cell_type": "code",
                    "source": "1/0",
                    "outputs": [
                        {
                            "output_type": "error",
                            "ename": "ZeroDivisionError",
                            "evalue": "division by zero",
                            "traceback": ["Z"],
                        }
                    ],
                }
            ]
        }
        service.files[("alice", f"{run_id}/output.ipynb")] = json.dumps(executed).encode()
        service.files[("alice", f"{run_id}/job-0.log")] = "\n".join(f"line {i}" for i in range(100)).encode()
        run = (await call(base, f"scheduler/jobs/{run_id}"))[1]
        assert run["status"] == "FAILED" and "exit code 1" in run["status_message"]
        assert run["failed_cell"]["ename"] == "ZeroDivisionError" and run["failed_cell"]["source"] == "1/0"
        assert run["log_tail"].splitlines() == [f"line {i}" for i in range(60, 100)]

    service.run(scenario)


def test_runtime_environments_and_the_page(service):
    async def scenario(base):
        status, envs = await call(base, "scheduler/runtime_environments")
        assert status == 200 and [e["name"] for e in envs] == ["node", "python"]
        # the Slurm profiles, then the partitions: no remote one, no Docker profile
        assert envs[0]["compute_types"] == ["small", "jupyter"]
        status, page = await call(base, "")
        assert status == 200 and "Notebook runs of alice" in page and 'id="drop"' in page

    service.run(scenario)


def test_notebook_html_never_runs_markup():
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": "<script>alert(1)</script>",
                "outputs": [
                    {
                        "output_type": "display_data",
                        "data": {"text/html": "<img src=x onerror=alert(1)>", "text/plain": "<b>"},
                    },
                    {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=\n"}},
                ],
            }
        ]
    }
    page = render_html(nb, "<t>")
    assert "<script>" not in page and "onerror" not in page and "&lt;b&gt;" in page
    assert '<img alt="output" src="data:image/png;base64,iVBORw0KGgo=">' in page


# --- the shell's door: clusterhub-run against the same service ---------------------------------------------


def test_the_cli_submits_lists_fetches_and_cancels(service, tmp_path, capsys, monkeypatch):
    from clusterhub.runs import cli  # noqa: PLC0415

    notebook = tmp_path / "square.ipynb"
    notebook.write_text(NOTEBOOK)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")

    async def scenario(base):
        loop = asyncio.get_running_loop()

        async def run(*argv):
            return await loop.run_in_executor(None, cli.main, ["--url", base, *argv])

        assert await run(str(notebook), "-p", "n=5", "-p", "label=a b", "--image", "python", "--profile", "small") == 0
        run_id = capsys.readouterr().out.split()[0]
        _, script = service.slurm.calls[-1]
        assert "#SBATCH --partition=jupyter" in script
        assert service.store.get("alice", run_id).parameters == {"n": 5, "label": "a b"}
        assert await run("list") == 0 and run_id in capsys.readouterr().out
        service.files[("alice", f"{run_id}/output.ipynb")] = NOTEBOOK.encode()
        assert await run("fetch", run_id, "-o", str(tmp_path / "out")) == 0
        assert (tmp_path / "out" / run_id / "output.ipynb").read_text() == NOTEBOOK
        assert await run("cancel", run_id) == 0
        assert service.slurm.calls[-1][0][-2:] == ["scancel", "101"]
        with pytest.raises(SystemExit, match=r"no run .* of yours"):
            await run("status", "0b6a9c1e-1111-4a4a-8b8b-000000000001")

    service.run(scenario)


def test_the_cli_waits_and_exits_with_the_runs_status(service, tmp_path, capsys, monkeypatch):
    from clusterhub.runs import cli  # noqa: PLC0415

    notebook = tmp_path / "fails.ipynb"
    notebook.write_text(NOTEBOOK)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")
    monkeypatch.setattr(cli, "POLL_INTERVAL", 0.05)

    async def scenario(base):
        loop = asyncio.get_running_loop()
        waiting = loop.run_in_executor(None, cli.main, ["--url", base, str(notebook), "-p", "n=1", "--wait"])
        await asyncio.sleep(0.5)
        service.slurm.acct = "101|FAILED|1:0|00:00:20|02:00:00|00:10|1|1G||cpu=1|None\n"
        reconcile(service.store, SlurmCommands(runner=service.slurm))
        assert await waiting == 1
        assert "FAILED" in capsys.readouterr().out

    service.run(scenario)
