"""Jobs are never lost track of: a server stopped while Slurm is down leaves no job behind (the orphaned-job
check cancels it once slurmctld is back), and a name-resolution failure on the hub drops no server.

Performed for real: slurmctld stopped on the login node, the hub's resolver broken inside the hub
container. Every finalizer puts the lab back. A node lost after a hub restart (found from the stored server
record) is tested in process (tests/unit/test_spawner.py); a lost node itself in tests/lab/test_hub.py."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import yaml
from conftest import PREFIX, ROOT, squeue_jobs, wait_for

pytestmark = pytest.mark.security

NODES = {"node1", "node2"}
# the lab hub's poll interval (the orphaned-job check runs at the same one)
LAB = {
    **yaml.safe_load((ROOT / "roles/jupyterhub/defaults/main.yml").read_text()),
    **yaml.safe_load((ROOT / "inventories/lab/group_vars/all/hub.yml").read_text()),
}
POLL = LAB["jupyterhub_poll_interval"]
# the check leaves a job alone until the hub has known it this long
GRACE = LAB["jupyterhub_orphan_jobs_grace"]
REMOTE = {"profile": "hpc", "image": "python"}


def remote_jobs(login, user: str = "alice") -> list[str]:
    return login.check_output(f"squeue -h -u jupyterhpc --name jupyterhub-{user} -o %i").split()


# how each mode's server starts, and where its job shows in squeue
MODES = {
    "direct": ({"profile": "small"}, lambda login: squeue_jobs(login, "alice")),
    "remote": (REMOTE, remote_jobs),
}


def hub_log(hub, since: float) -> str:
    return hub.check_output(f"journalctl -u jupyterhub --no-pager -o cat --since @{int(since)}")


def node_of(client) -> str:
    return client.run_code("import socket; print(socket.gethostname())").strip()


@pytest.fixture
def alice(hub_as, login):
    client = hub_as("alice")
    client.stop()
    yield client
    client.stop()
    wait_for(lambda: not squeue_jobs(login, "alice") and not remote_jobs(login), what="alice's jobs gone")


@pytest.fixture
def bob(hub_as):
    client = hub_as("bob")
    client.stop()
    yield client
    client.stop()


@pytest.fixture
def controller(login):
    """slurmctld is running again after the test, whatever happened."""
    yield
    login.run("systemctl start slurmctld")
    wait_for(lambda: login.run("scontrol ping").rc == 0, what="slurmctld back")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("controller")
def test_a_server_stopped_while_slurm_is_down_leaves_no_job(mode, alice, bob, hub, login):
    options, jobs = MODES[mode]
    alice.start(options=options, timeout=240)
    bob.start(options={"profile": "small"})
    job = jobs(login)
    assert len(job) == 1
    bobs = squeue_jobs(login, "bob")
    since = time.time()
    login.check_output("systemctl stop slurmctld")
    alice.stop(timeout=120)  # scancel cannot reach slurmctld; the hub forgets the server all the same
    assert alice.server() is None
    # an outage long enough that the job is past the grace when the controller returns (a younger job,
    # maybe of a start under way, is left alone that long)
    time.sleep(max(0.0, since + GRACE + POLL - time.time()))
    login.check_output("systemctl start slurmctld")
    wait_for(lambda: login.run("scontrol ping").rc == 0, what="slurmctld back")
    # within two polls (the first may still read the snapshot of an unanswered squeue) and a cancellation
    wait_for(lambda: job[0] not in jobs(login), timeout=2 * POLL + 15, what=f"orphaned job {job[0]} cancelled")
    log = hub_log(hub, since)
    assert f"scancel of job {job[0]} of alice failed" in log, "the stop's own scancel should have failed"
    cancelled = re.search(rf"Cancelled orphaned Slurm job {job[0]} \((\S+), user (\S+)\): (.*)", log)
    assert cancelled, log[-3000:]
    assert cancelled.group(1) == ("jupyterhub" if mode == "direct" else "jupyterhub-alice")
    assert cancelled.group(2) == ("alice" if mode == "direct" else "jupyterhpc")
    assert "no server of the hub has it" in cancelled.group(3)
    # the legitimate path: bob's server, started before and running throughout, is untouched
    assert squeue_jobs(login, "bob") == bobs
    assert bob.server()["ready"] and bob.user_get("/api/status").status_code == 200
    assert "Cancelled orphaned Slurm job " + bobs[0] not in hub_log(hub, since)


class Names:
    """The hub's name service, broken for one name (a DNS outage /etc/hosts does not cover) and restored."""

    FILES = ("/etc/hosts", "/etc/resolv.conf")

    def __init__(self, hub):
        self.hub = hub
        self.saved = {path: hub.file(path).content_string for path in self.FILES}

    def _write(self, path: str, text: str) -> None:
        # bind mounts of Docker's: written in place, never replaced
        subprocess.run(
            ["docker", "exec", "-i", f"{PREFIX}-hub", "sh", "-c", f"cat > {path}"], input=text, text=True, check=True
        )

    def unresolvable(self, name: str) -> None:
        keep = [n for n in ("login", "storage", *sorted(NODES)) if n != name]
        lines = [self.hub.check_output(f"getent hosts {n}") for n in keep]
        self._write("/etc/hosts", self.saved["/etc/hosts"] + "\n".join(lines) + "\n")
        self._write("/etc/resolv.conf", "nameserver 127.0.0.1\n")  # nothing answers there

    def restore(self) -> None:
        for path, text in self.saved.items():
            self._write(path, text)


@pytest.fixture
def names(hub):
    names = Names(hub)
    yield names
    names.restore()
    assert hub.run("getent hosts node1").rc == 0


def test_a_name_resolution_failure_on_the_hub_drops_no_server(alice, hub, login, names):
    alice.start(options={"profile": "small"})
    node = node_of(alice)
    job = squeue_jobs(login, "alice")
    since = time.time()
    names.unresolvable(node)
    assert hub.run(f"getent hosts {node}").rc != 0, f"{node} should not resolve on the hub now"
    assert hub.run("getent hosts login").rc == 0, "Slurm's controller must stay reachable by name"
    time.sleep(2 * POLL + 5)  # two polls and more
    log = hub_log(hub, since)
    names.restore()
    checked = rf"Checking the server of alice \(job {job[0]}\): the hub cannot resolve {node} "
    assert re.search(checked, log), log[-3000:]
    assert "its node is lost" not in log
    assert squeue_jobs(login, "alice") == job
    assert alice.server()["ready"]
    assert alice.user_get("/api/status").status_code == 200
    assert node_of(alice) == node
