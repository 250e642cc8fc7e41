"""Servers that end without a user stopping them, and starts the hub refuses, as users meet them: a profile's own
idle limit stops an idle server (and no other), a home without room refuses the start at once saying so (even
where it took the job's output with it), and named servers run as jobs of their own up to the per-user limit.
Real Slurm with accounting, real hub, real Jupyter Server; a real full filesystem.

alice's idle server of profile brief (idle_minutes 0.5: Jupyter Server looks every 60 s) starts with the module;
the other tests run while it idles, and the last one waits for it to have stopped itself."""

from __future__ import annotations

import re
import time

import pytest
from conftest import squeue_jobs, wait_for
from hubclient import StartFailed

from clusterhub.protocol import EXIT_HOME_FULL


@pytest.fixture(scope="module")
def idle_alice(hub_as, login):
    """alice's server of profile brief, left idle from the module's start: (her client, its job, when ready)."""
    alice = hub_as("alice")
    alice.stop()
    alice.start(options={"profile": "brief"})
    (job,) = squeue_jobs(login, "alice")
    yield alice, job, time.monotonic()
    alice.stop()
    for name in list(alice.get("/users/alice").json()["servers"]):
        if name:
            alice.delete(f"/users/alice/servers/{name}", json={"remove": True})
    wait_for(lambda: not squeue_jobs(login, "alice"), what="alice's jobs gone")


@pytest.fixture
def full_home(nodes):
    """bob's home on the compute nodes is a filesystem of 256 KiB (the hub still sees his real one, as a hub
    sees an NFS home whose server is full): nothing of 1 MiB fits."""
    for node in nodes:
        node.check_output("mount -t tmpfs -o size=256k,uid=2002,gid=2002,mode=0700 clusterhub-full-home /home/bob")
    yield
    for node in nodes:
        node.run("umount -l /home/bob")


def test_a_full_home_refuses_the_start_at_once_and_says_so(idle_alice, hub_as, login, full_home):
    bob = hub_as("bob")
    bob.stop()
    t0 = time.monotonic()
    with pytest.raises(StartFailed) as failure:
        bob.start(options={"profile": "small"}, timeout=120)
    seconds = time.monotonic() - t0
    message = failure.value.message
    assert failure.value.status != 500, message
    assert "your home directory is full (no space or quota left); delete or move files there" in message, message
    assert seconds < 60, "the start failed when the job did, not at the start-up limit"
    # the job's status in Slurm's accounting carried it: its output had no room
    job = re.search(r"Slurm job (\d+)", message).group(1)
    assert login.check_output(f"sacct -n -P -X -j {job} -o ExitCode") == f"{EXIT_HOME_FULL}:0"


def test_named_servers_run_as_jobs_of_their_own_up_to_the_limit(idle_alice, login):
    alice, brief_job, _ = idle_alice

    def named() -> dict:
        return {k: v for k, v in alice.get("/users/alice").json()["servers"].items() if k}

    try:
        for name in ("one", "two"):
            r = alice.post(f"/users/alice/servers/{name}", json={"profile": "small"})
            assert r.status_code in (201, 202), r.text
        wait_for(
            lambda: len(named()) == 2 and all(s.get("ready") for s in named().values()),
            timeout=120,
            what="alice's two named servers ready",
        )
        jobs = squeue_jobs(login, "alice")
        assert len(jobs) == 3 and brief_job in jobs  # her default server and one job per named server
        # jupyterhub_named_server_limit (2 in the lab): a third is refused before any job, saying why
        r = alice.post("/users/alice/servers/three", json={"profile": "small"})
        assert r.status_code == 400, r.text
        assert "already has the maximum of 2 named servers" in r.json()["message"], r.text
        assert len(squeue_jobs(login, "alice")) == 3
        assert alice.api.get(f"{alice.url}/user/alice/two/api/status").status_code == 200
    finally:
        for name in ("one", "two"):
            alice.delete(f"/users/alice/servers/{name}", json={"remove": True})
        wait_for(lambda: squeue_jobs(login, "alice") == [brief_job], what="alice's named servers' jobs gone")


def test_an_idle_server_of_a_brief_profile_stops_itself_and_a_small_one_stays(idle_alice, hub_as, login):
    alice, job, ready = idle_alice
    bob = hub_as("bob")
    bob.stop()
    bob.start(options={"profile": "small"})  # profile small: no idle limit of its own (the hub's culler: an hour)
    bob_ready = time.monotonic()
    try:
        # Jupyter Server culls itself: no kernel, no terminal, no request for 30 s (it looks every 60 s)
        wait_for(lambda: alice.server() is None, timeout=150, interval=2, what="alice's idle server to stop itself")
        print(f"alice's idle brief server gone {time.monotonic() - ready:.0f} s after it was ready")
        assert login.check_output(f"sacct -n -P -X -j {job} -o State") == "COMPLETED"
        log = login.check_output(f"cat /home/alice/.jupyterhub_slurmspawner_{job}.log")
        assert "Will shut down after 30 seconds with no kernels" in log and "shutting down" in log, log[-2000:]
        # the site venv's JupyterLab settings apply, every extension links (no traceback in any server's log)
        assert "Extension Manager is 'readonly'" in log and "error linking extension" not in log, log[:3000]
        # bob's server of another profile, idle for longer than brief's 30 s by now, still runs and answers
        wait_for(lambda: time.monotonic() - bob_ready > 35, timeout=40, what="bob's server idle over 35 s")
        assert (bob.server() or {}).get("ready")
        assert bob.user_get("/api/status").status_code == 200
    finally:
        bob.stop()
