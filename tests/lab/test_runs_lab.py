"""The JupyterLab door of the runs service (role notebook_scheduler): jupyter-scheduler's own "Create Job" form in
JupyterLab, in Chromium, with clusterhub's scheduler behind it. The job is a run of the service, a Slurm batch job
of the user's: it completes while the user's server is stopped, and the server started again downloads its files."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from conftest import CHROMIUM, LAB_USERS, ROOT, browser_page, wait_for
from hubclient import HUB_URL, parameterised_notebook
from test_runs_service import api, finished

pytestmark = [
    pytest.mark.apptainer,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
ARTIFACTS = Path(os.environ.get("CLUSTERHUB_ARTIFACTS", ROOT / "artifacts"))


def put_notebook(client, name: str, text: str) -> None:
    r = client.api.put(
        f"{client.url}/user/{client.user}/api/contents/{name}",
        json={"type": "notebook", "format": "json", "content": json.loads(text)},
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text


def create_in_jupyterlab(browser, name: str, user: str = "alice") -> None:
    """As a person: the file browser's context menu, "Create Job", a parameter n=5, "Create"."""
    with browser_page(browser, "jupyterlab-job", ARTIFACTS) as page:
        page.goto(f"{HUB_URL}/hub/login?next=/user/{user}/lab")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", LAB_USERS[user])
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(f"**/user/{user}/lab**")
        item = page.locator(".jp-DirListing-item", has_text=name).first
        item.click(button="right")
        page.locator(".lm-Menu-item", has_text="Create Job").first.click()
        page.get_by_title("Add new parameter").click()
        # the form checks a field when it loses the focus, as when a person tabs on
        for field, value in (("name", "n"), ("value", "5")):
            page.fill(f"input[name=parameter-0-{field}]", value)
            page.press(f"input[name=parameter-0-{field}]", "Tab")
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-create-job.png"))
        page.get_by_role("button", name="Create", exact=True).click()
        # the form gives way to the list of jobs, which lists this one (read from the runs service)
        page.locator(".jp-notebook-job-list, .MuiTable-root", has_text=name.removesuffix(".ipynb")).first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-jobs.png"))


def test_a_job_created_in_jupyterlab_completes_after_the_server_stops_and_downloads(browser, hub_as, login):
    alice = hub_as("alice")
    alice.stop()
    alice.start(options={"profile": "small"})
    name = f"lab-job-{uuid.uuid4().hex[:8]}.ipynb"
    put_notebook(alice, name, parameterised_notebook("import time\ntime.sleep(20)\nprint('square', n * n)"))
    before = {run["job_id"] for run in api(alice, "GET", "/jobs").json()["jobs"]}
    create_in_jupyterlab(browser, name)
    runs = [run for run in api(alice, "GET", "/jobs").json()["jobs"] if run["job_id"] not in before]
    assert [run["input_filename"] for run in runs] == [name], runs
    run = runs[0]
    # typed as on the CLI: the form's "5" is the number 5; a Slurm job of alice's, not of the server's
    assert run["parameters"] == {"n": 5} and run["resources"]["profile"] == "small", run
    owner = login.check_output(f"squeue -h -j {run['slurm_job_id']} -o %u || true").strip()
    assert owner in ("alice", ""), owner  # "" once it has already finished
    alice.stop()
    assert alice.server() is None
    done = finished(alice, run["job_id"], timeout=240)
    assert done["status"] == "COMPLETED", done
    # the server again: jupyter-scheduler's "Download job files" fetches them from the service into jobs/
    alice.start(options={"profile": "small"})
    try:
        got = alice.user_get(f"/scheduler/jobs/{run['job_id']}/download_files", timeout=60)
        assert got.status_code == 204, got.text

        def downloaded():
            job = alice.user_get(f"/scheduler/jobs/{run['job_id']}", timeout=60).json()
            return job if job.get("downloaded") else None

        job = wait_for(downloaded, timeout=60, what="the job's files in the server's jobs/ folder")
        assert job["status"] == "COMPLETED"
        path = next(f["file_path"] for f in job["job_files"] if f["file_format"] == "ipynb")
        output = alice.user_get(f"/api/contents/{path}", timeout=60).json()
        assert "square 25" in json.dumps(output["content"]), output
    finally:
        alice.stop()


@pytest.mark.security
def test_a_server_token_reaches_only_its_own_users_runs(hub_as):
    """The scope the servers' tokens carry for the door lets bob's server see none of alice's runs."""
    alice, bob = hub_as("alice"), hub_as("bob")
    mine = api(alice, "GET", "/jobs").json()["jobs"]
    assert mine, "the JupyterLab test left a run of alice's"
    bob.stop()
    bob.start(options={"profile": "small"})
    try:
        seen = bob.user_get("/scheduler/jobs", timeout=60)
        assert seen.status_code == 200, seen.text
        assert not {job["job_id"] for job in seen.json()["jobs"]} & {run["job_id"] for run in mine}
        stolen = bob.user_get(f"/scheduler/jobs/{mine[0]['job_id']}", timeout=60)
        assert stolen.status_code == 500 and "of yours" in stolen.json()["message"], stolen.text
        assert api(alice, "GET", f"/jobs/{mine[0]['job_id']}").status_code == 200
    finally:
        bob.stop()
