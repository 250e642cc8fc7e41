"""A person in a real browser (Debian's Chromium driven by Playwright): log in, pick a profile,
run a cell in JupyterLab, log out; and another user who cannot open that server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import CHROMIUM, LAB_USERS, ROOT
from hubclient import HUB_URL

ARTIFACTS = Path(os.environ.get("CLUSTERHUB_ARTIFACTS", ROOT / "artifacts"))

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def sign_in(page, user: str) -> None:
    page.goto(f"{HUB_URL}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", LAB_USERS[user])
    page.click("input[type=submit], button[type=submit]")


def test_bob_logs_in_picks_a_profile_and_runs_a_cell(browser, hub_as, login):
    hub_as("bob").stop()
    # a fresh start: no notebooks or JupyterLab layout left from an earlier run
    login.check_output("rm -rf /home/bob/Untitled*.ipynb /home/bob/.jupyter/lab/workspaces")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(ignore_https_errors=True)  # the lab's self-signed certificate
    page = context.new_page()
    page.set_default_timeout(90_000)
    try:
        sign_in(page, "bob")
        page.wait_for_url("**/hub/spawn**")
        page.check("#profile-small")
        page.screenshot(path=str(ARTIFACTS / "spawn-form.png"))
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=120_000)
        page.goto(f"{HUB_URL}/user/bob/lab?reset")
        page.locator(".jp-LauncherCard[data-category='Notebook'][title*='Python 3']").first.click()
        page.locator(".jp-Notebook").first.wait_for()
        # the kernel starts on the compute node; type once it is idle
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()
        cell = page.locator(".jp-Cell .cm-content").first
        cell.click()
        page.keyboard.type("print(6*7)")
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-OutputArea-output").first
        output.wait_for()
        assert output.inner_text().strip() == "42"
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-42.png"))
        page.goto(f"{HUB_URL}/hub/logout")
        page.wait_for_url("**/hub/login**")
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failure-bob.png"))
        raise
    finally:
        context.close()
        hub_as("bob").stop()


def test_bob_cannot_open_alice_server(browser, hub_as, login):
    alice = hub_as("alice")
    alice.stop()
    alice.start(options={"profile": "small"})
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    try:
        sign_in(page, "bob")
        page.wait_for_url("**/hub/**")
        response = page.goto(f"{HUB_URL}/user/alice/lab")
        assert response.status in (403, 404)
        assert "/user/alice/lab" not in page.url or response.status != 200
        page.screenshot(path=str(ARTIFACTS / "bob-denied.png"))
    finally:
        context.close()
        alice.stop()
