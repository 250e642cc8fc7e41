"""Servers that end without a user stopping them, and what users read: a profile's own idle limit stops an idle
server (and no other), and a home without room refuses the start at once, saying so, even where it took the job's
output with it. Real Slurm with accounting, real hub, real Jupyter Server; a real full filesystem."""

from __future__ import annotations

import re
import time

import pytest
from conftest import squeue_jobs, wait_for
from hubclient import StartFailed

from clusterhub.protocol import EXIT_HOME_FULL


def test_an_idle_server_of_a_brief_profile_stops_itself_and_a_small_one_stays(hub_as, login):
    alice, bob = hub_as("alice"), hub_as("bob")
    alice.stop()
    bob.stop()
    try:
        # profile brief: idle_minutes 0.5; small: none (the hub's culler, after an hour)
        alice.start(options={"profile": "brief"})
        bob.start(options={"profile": "small"})
        (job,) = squeue_jobs(login, "alice")
        # Jupyter Server culls itself: no kernel, no terminal, no request for 30 s (it looks every 60 s)
        wait_for(lambda: alice.server() is None, timeout=150, interval=2, what="alice's idle server to stop itself")
        assert login.check_output(f"sacct -n -P -X -j {job} -o State") == "COMPLETED"
        log = login.check_output(f"cat /home/alice/.jupyterhub_slurmspawner_{job}.log")
        assert "Will shut down after 30 seconds with no kernels" in log and "shutting down" in log, log[-2000:]
        # bob's server of another profile, just as idle, still runs and answers
        assert (bob.server() or {}).get("ready")
        assert bob.user_get("/api/status").status_code == 200
    finally:
        alice.stop()
        bob.stop()


@pytest.fixture
def full_home(nodes):
    """bob's home on the compute nodes is a filesystem of 256 KiB (the hub still sees his real one, as a hub
    sees an NFS home whose server is full): nothing of 1 MiB fits."""
    for node in nodes:
        node.check_output("mount -t tmpfs -o size=256k,uid=2002,gid=2002,mode=0700 clusterhub-full-home /home/bob")
    yield
    for node in nodes:
        node.run("umount -l /home/bob")


def test_a_full_home_refuses_the_start_at_once_and_says_so(hub_as, login, full_home):
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
