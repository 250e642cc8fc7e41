"""The notebook runs service in the lab (role notebook_runner): the real hub's OAuth and tokens, real Slurm with
accounting, real papermill in the python SIF, Chromium on the service's page."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest
import requests
from conftest import CHROMIUM, LAB_USERS, ROOT, browser_page, wait_for
from hubclient import HUB_URL, parameterised_notebook

pytestmark = pytest.mark.apptainer
ARTIFACTS = Path(os.environ.get("CLUSTERHUB_ARTIFACTS", ROOT / "artifacts"))
RUNS = "/services/runs/scheduler"


def api(client, method: str, path: str, **kwargs):
    return client.api.request(method, f"{client.url}{RUNS}{path}", timeout=60, **kwargs)


def create(client, source: str, **extra) -> dict:
    body = {
        "notebook": parameterised_notebook(source),
        "input_filename": "square.ipynb",
        "profile": "small",
        "runtime_environment_name": "python",
        "parameters": {"n": 5},
        **extra,
    }
    r = api(client, "POST", "/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def refused(client, extra: dict, message: str) -> None:
    """A run asked for with `extra` is refused (400) with `message` in its sentence."""
    body = {"notebook": parameterised_notebook("1"), "profile": "small", "runtime_environment_name": "python", **extra}
    r = api(client, "POST", "/jobs", json=body)
    assert r.status_code == 400 and message in r.json()["message"], r.text


def finished(client, run_id: str, timeout: float = 180) -> dict:
    def done():
        r = api(client, "GET", f"/jobs/{run_id}")
        if r.status_code != 200:  # the hub or the service restarting (tests restart them)
            return None
        run = r.json()
        return run if run["status"] not in ("QUEUED", "IN_PROGRESS") else None

    return wait_for(done, timeout=timeout, interval=2, what=f"run {run_id} finished")


def running(client, run_id: str) -> None:
    """Wait until the service shows the run IN_PROGRESS (Slurm started it)."""
    wait_for(
        lambda: api(client, "GET", f"/jobs/{run_id}").json()["status"] == "IN_PROGRESS",
        timeout=90,
        interval=2,
        what="run running",
    )


def test_a_run_through_the_hub_completes_as_its_owner(hub_as, login):
    alice = hub_as("alice")
    created = create(alice, "print('square', n * n)")
    run = finished(alice, created["job_id"])
    assert (run["status"], run["status_message"]) == ("COMPLETED", "completed"), run
    out = api(alice, "GET", f"/jobs/{created['job_id']}/files/output.ipynb").json()
    assert "square 25" in json.dumps(out)
    page = api(alice, "GET", f"/jobs/{created['job_id']}/files/output.ipynb?format=html")
    assert page.status_code == 200 and "square 25" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    # a Slurm job of alice's, in accounting
    assert login.check_output(f"sacct -n -X -P -j {created['slurm_job_id']} -o User,State") == "alice|COMPLETED"
    listed = api(alice, "GET", "/jobs").json()
    assert created["job_id"] in [j["job_id"] for j in listed["jobs"]]


@pytest.mark.security
def test_another_user_cannot_see_or_stop_a_run_and_bad_requests_submit_nothing(hub_as, login):
    alice, bob = hub_as("alice"), hub_as("bob")
    run_id = create(alice, "import time\ntime.sleep(30)")["job_id"]
    try:
        for method, path, body in [
            ("GET", "", None),
            ("PATCH", "", {"status": "STOPPED"}),
            ("GET", "/files/output.ipynb", None),
        ]:
            r = api(bob, method, f"/jobs/{run_id}{path}", json=body)
            assert r.status_code == 404 and "of yours" in r.json()["message"], (method, r.text)
        assert run_id not in json.dumps(api(bob, "GET", "/jobs").json())
        before = login.check_output("squeue -h --name=clusterhub-run -o %i | sort")
        for extra, message in [
            ({"profile": "custom", "partition": "jupyter; id"}, "unknown partition"),
            ({"profile": "custom", "partition": "jupyter", "cpus": "1\n#SBATCH --uid=0"}, "cpus must be a number"),
            ({"parameters": {"n; import os": 1}}, "must be an identifier"),
            ({"input_filename": "../../.bashrc"}, "without '/'"),
            ({"profile": "hpc"}, "one shared HPC account"),
        ]:
            refused(bob, extra, message)
        assert login.check_output("squeue -h --name=clusterhub-run -o %i | sort") == before
        # no hub token or cookie: the API does not answer
        anonymous = requests.Session()
        anonymous.trust_env = False
        anonymous.verify = alice.api.verify
        assert anonymous.get(f"{alice.url}{RUNS}/jobs", allow_redirects=False, timeout=30).status_code in (302, 403)
    finally:
        api(alice, "PATCH", f"/jobs/{run_id}", json={"status": "STOPPED"})


def test_a_run_stopped_through_the_api_leaves_slurm(hub_as, login):
    alice = hub_as("alice")
    created = create(alice, "import time\ntime.sleep(600)")
    running(alice, created["job_id"])
    assert api(alice, "PATCH", f"/jobs/{created['job_id']}", json={"status": "STOPPED"}).status_code == 204
    assert finished(alice, created["job_id"])["status"] == "STOPPED"
    job = created["slurm_job_id"]
    assert login.check_output(f"squeue -h -j {job} 2>/dev/null || true") == ""
    assert login.check_output(f"sacct -n -X -P -j {job} -o State").startswith("CANCELLED")


def test_a_run_over_its_time_limit_is_failed_saying_so(hub_as, login):
    """A real Slurm TIMEOUT: the form's shortest time is 15 minutes, so the admin (root) moves the running job's end
    to 5 s from now, as `scontrol update` lets an admin do (slurmctld lowers its time limit to match and ends it at
    its next time-limit check, within 30 s); the reconciler reads sacct."""
    alice = hub_as("alice")
    created = create(alice, "import time\ntime.sleep(600)")
    running(alice, created["job_id"])
    login.check_output(f"scontrol update JobId={created['slurm_job_id']} EndTime=now+5")
    run = finished(alice, created["job_id"], timeout=240)
    assert run["status"] == "FAILED" and "time limit" in run["status_message"], run
    assert login.check_output(f"sacct -n -X -P -j {created['slurm_job_id']} -o State").startswith("TIMEOUT")


def test_a_failed_run_shows_the_failing_cell_and_the_log(hub_as):
    alice = hub_as("alice")
    created = create(alice, "raise RuntimeError(f'no good: {n}')")
    run = finished(alice, created["job_id"])
    assert run["status"] == "FAILED" and "exit code 1" in run["status_message"]
    assert (run["failed_cell"]["ename"], run["failed_cell"]["evalue"]) == ("RuntimeError", "no good: 5")
    assert "ended with status 1" in run["log_tail"]


def test_runs_survive_a_restart_of_the_service_and_of_the_hub(hub_as, hub):
    alice = hub_as("alice")
    created = create(alice, "import time\ntime.sleep(20)\nprint('after the restarts')")
    hub.check_output("systemctl restart clusterhub-runs jupyterhub")
    run = finished(alice, created["job_id"], timeout=240)
    assert run["status"] == "COMPLETED", run
    health = "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/hub/health')\""
    wait_for(lambda: hub.run(health).rc == 0, timeout=60, what="the hub back")
    assert "after the restarts" in json.dumps(api(alice, "GET", f"/jobs/{created['job_id']}/files/output.ipynb").json())


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_the_page_takes_a_dropped_notebook_and_shows_it_complete(browser):
    with browser_page(browser, "runs-page", ARTIFACTS) as page:
        page.goto(f"{HUB_URL}/hub/login?next=/services/runs/")
        page.fill("input[name=username]", "bob")
        page.fill("input[name=password]", LAB_USERS["bob"])
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/services/runs/**")
        page.get_by_text("Notebook runs of bob").wait_for()
        # drag and drop, as a person does: a drop event carrying the file (a new name: earlier runs stay listed)
        name = f"dropped-{uuid.uuid4().hex[:8]}.ipynb"
        page.evaluate(
            """([text, name]) => { const data = new DataTransfer();
                 data.items.add(new File([text], name, {type: "application/json"}));
                 document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data})); }""",
            [parameterised_notebook("import time\ntime.sleep(8)\nprint('dropped', n + 1)"), name],
        )
        page.locator("#filename", has_text=name).wait_for()
        page.fill("#parameters", "n=41")
        page.select_option("#image", "python")
        page.click("#submit")
        states = []  # the states the page showed, in order
        row = page.locator("tr", has_text=name).first
        for _ in range(240):
            state = row.locator("td").nth(1).inner_text()
            if not states or states[-1] != state:
                states.append(state)
            if state in ("COMPLETED", "FAILED", "STOPPED"):
                break
            page.wait_for_timeout(500)
        assert states == ["QUEUED", "IN_PROGRESS", "COMPLETED"], states
        page.screenshot(path=str(ARTIFACTS / "runs-page.png"))
        with page.context.expect_page() as opened:
            row.get_by_text("(view)").first.click()
        view = opened.value
        view.get_by_text("dropped 42").wait_for()
        view.screenshot(path=str(ARTIFACTS / "runs-output.png"))


def test_the_cli_submits_waits_with_the_runs_status_and_fetches(hub_as, hub_cert, tmp_path, capsys, monkeypatch):
    from clusterhub.runs import cli  # noqa: PLC0415

    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub_as("alice").token)
    common = ["--url", f"{HUB_URL}/services/runs/", "--cacert", hub_cert]
    good, bad = tmp_path / "cube.ipynb", tmp_path / "bad.ipynb"
    good.write_text(parameterised_notebook("print('cube', n ** 3)"))
    bad.write_text(parameterised_notebook("1 / 0"))
    assert cli.main([*common, str(good), "-p", "n=4", "--image", "python", "--profile", "small", "--wait"]) == 0
    run_id = capsys.readouterr().out.split()[0]
    assert cli.main([*common, "fetch", run_id, "-o", str(tmp_path)]) == 0
    assert "cube 64" in (tmp_path / run_id / "output.ipynb").read_text()
    assert cli.main([*common, str(bad), "--image", "python", "--wait"]) == 1
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_clusterhub_run_on_the_login_node_needs_only_the_users_token(hub_as, login):
    """The shell door where users work: the role's clusterhub-run on the login node, the site's URL and CA from
    /etc/clusterhub/run.json, alice's token in her own 0600 file."""
    token = hub_as("alice").token
    notebook = base64.b64encode(parameterised_notebook("print('square', n * n)").encode()).decode()
    as_alice = "runuser -u alice -- sh -c"
    login.check_output(
        f"printf %s {token} | {as_alice} 'umask 077; mkdir -p ~/.config/clusterhub; cat >~/.config/clusterhub/token' "
        f"&& echo {notebook} | base64 -d | {as_alice} 'cat >~/cli-square.ipynb'"
    )
    try:
        done = login.run(
            f"{as_alice} 'cd && clusterhub-run cli-square.ipynb -p n=6 --image python --profile small --wait'"
        )
        assert done.rc == 0 and "COMPLETED" in done.stdout, done.stdout + done.stderr
        run_id = done.stdout.split()[0]
        login.check_output(f"{as_alice} 'cd && clusterhub-run fetch {run_id} -o cli-out'")
        assert "square 36" in login.check_output(f"cat ~alice/cli-out/{run_id}/output.ipynb")
        # bob, without a token of his: told what to give, nothing submitted
        refused = login.run("runuser -u bob -- sh -c 'cd && clusterhub-run list'")
        assert refused.rc == 2 and "a hub API token" in refused.stderr, refused.stderr
    finally:
        login.run(f"{as_alice} 'rm -rf ~/.config/clusterhub/token ~/cli-square.ipynb ~/cli-out'")
