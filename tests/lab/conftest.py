"""Fixtures for tests against a running lab (molecule's verify step, or `make lab` + pytest tests/lab).

Hosts are reached with `docker exec` (testinfra's docker backend); the container names come from the
same prefix the lab inventory uses (CLUSTERHUB_LAB_PREFIX, default chlab for `make lab`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
from hubclient import Hub, lab_certificate
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
PREFIX = os.environ.get("CLUSTERHUB_LAB_PREFIX", "chlab")
# what the scenario converged: site.yml (everything) or cluster.yml (the bookworm scenario: no hub)
PLAYBOOK = os.environ.get("CLUSTERHUB_LAB_PLAYBOOK", "playbooks/site.yml")


def lab_host(name: str):
    return testinfra.get_host(f"docker://{PREFIX}-{name}")


@pytest.fixture(scope="session")
def login():
    return lab_host("login")


@pytest.fixture(scope="session")
def hub():
    return lab_host("hub")


@pytest.fixture(scope="session")
def storage():
    return lab_host("storage")


@pytest.fixture(scope="session")
def rnode():
    """The remote HPC mode's compute node (HPC network only)."""
    return lab_host("rnode1")


@pytest.fixture(scope="session")
def nodes():
    return [lab_host("node1"), lab_host("node2")]


def wait_for(check, timeout: float = 60.0, interval: float = 0.5, what: str = "condition"):
    """Poll check() until it returns a truthy value; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _run_ansible(argv: list[str], **env_extra: str) -> subprocess.CompletedProcess:
    """Run an Ansible command from the project root against the lab, with the project's own settings."""
    # the project's own ansible.cfg, not the one of a molecule run that called these tests
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update(CLUSTERHUB_LAB_PREFIX=PREFIX, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), **env_extra)
    return subprocess.run(
        [*argv, "-i", "inventories/lab/hosts.yml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def run_playbook(playbook: str, *args: str) -> subprocess.CompletedProcess:
    """Run one of the project's playbooks against the lab, as a sysadmin would."""
    return _run_ansible(["ansible-playbook", playbook, *args], ANSIBLE_NOCOLOR="1")


def reconfigure_hub(*args: str, tag: str = "configure") -> subprocess.CompletedProcess:
    """Render the hub's configuration again (with extra arguments such as -e), as a site does after changing a hub
    variable: playbooks/hub.yml on the hub with one of the role's tags, `configure` or the narrower `maintenance`
    (its checks run too; no install step)."""
    return run_playbook("playbooks/hub.yml", "--limit", "hub", "--tags", tag, *args)


def run_module(host: str, module: str, args: dict) -> dict:
    """Run one module on a lab host with the project's settings; return its result (rc, msg, changed, ...)."""
    proc = _run_ansible(
        ["ansible", host, "-m", module, "-a", json.dumps(args)],
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
    )
    try:
        plays = json.loads(proc.stdout)["plays"]
    except (ValueError, KeyError):
        output = proc.stdout[-2000:] + proc.stderr[-2000:]
        raise AssertionError(f"ansible {module} gave no JSON result: {output}") from None
    return plays[0]["tasks"][0]["hosts"][host]


def recap_changed(output: str) -> dict[str, int]:
    """Parse PLAY RECAP into {host: changed count}."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", output, re.M)}


def changed_tasks(output: str) -> list[str]:
    """The tasks a playbook's output reports changed, as "TASK [role : name] host" with the diff it printed: what
    an idempotence or check-mode assertion names when it fails."""
    found, task, lines = [], "", output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("TASK ["):
            task = line.split("]")[0] + "]"
        elif line.startswith("changed: ["):
            diff = "\n".join(lines[max(0, i - 12) : i])
            found.append(f"{task} {line.split(']')[0]}]\n{diff}")
    return found


LAB_USERS = {"alice": "alice-in-the-lab", "bob": "bob-in-the-lab", "labadmin": "admin-in-the-lab"}


@pytest.fixture(scope="session")
def hub_cert():
    return lab_certificate(PREFIX)


@pytest.fixture(scope="session")
def hub_as(hub_cert):
    """hub_as('alice') -> a logged-in API client of that lab user (one per user and session)."""
    clients = {}

    def get(user: str):
        if user not in clients:
            clients[user] = Hub(user, LAB_USERS[user], verify=hub_cert)
        return clients[user]

    return get


def squeue_jobs(login, user: str | None = None) -> list[str]:
    """Job ids of the hub's servers (optionally of one user) in the queue."""
    who = f"-u {user}" if user else ""
    return login.check_output(f"squeue -h --name jupyterhub {who} -o %i").split()


def node_state(login, node: str) -> str:
    """Slurm's state of one node (a trailing * while it does not respond)."""
    return login.check_output(f"sinfo -h -N -n {node} -o %T").split()[0]


def start_node_again(login, node: str) -> None:
    """A compute node's container, stopped by a test, started again and idle in Slurm. Slurm may keep a node
    that went away DOWN ("unexpectedly rebooted", not responding): it is resumed, as an admin would."""
    subprocess.run(["docker", "start", f"{PREFIX}-{node}"], check=True, capture_output=True)
    try:
        wait_for(lambda: node_state(login, node) == "idle", timeout=120, what=f"{node} back")
    except AssertionError:
        login.run(f"scontrol update NodeName={node} State=RESUME")
        wait_for(lambda: node_state(login, node) == "idle", timeout=120, what=f"{node} back after RESUME")


# Debian's Chromium (make browser), for the browser tests
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for one test module."""
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


@contextlib.contextmanager
def browser_page(browser, failure: str, artifacts: Path):
    """A page in a fresh context of the browser (the lab's self-signed certificate accepted), 90 s per step; when
    the block fails, a screenshot of it is left as failure-<failure>.png in artifacts."""
    artifacts.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(90_000)
    try:
        yield page
    except Exception:
        page.screenshot(path=str(artifacts / f"failure-{failure}.png"))
        raise
    finally:
        context.close()
