"""While a server waits in a full partition, the hub's progress events say where it stands: its place among the
partition's pending jobs, why it waits in words, and when Slurm expects it to start, all from the hub's one
batched squeue; before Start, the form's cards say the expected wait (sbatch --test-only).
Real Slurm (backfill, multifactor priority), real hub; the partition filled by bob's real jobs."""

from __future__ import annotations

import json
import re
import time

from conftest import wait_for

CUSTOM = {"profile": "custom", "partition": "batch", "cpus": "1", "memory_gb": "1", "hours": "1", "image": "node"}


def queue_events(client, timeout: float = 90) -> list[dict]:
    """The server's progress events until one carries Slurm's expected start (or the time is up)."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/users/{client.user}/server/progress", stream=True, timeout=30)
        with r:
            for line in r.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                events.append(event)
                if event.get("queue", {}).get("expected_start") or event.get("ready") or event.get("failed"):
                    return events
                if time.monotonic() > deadline:
                    break
    return events


def form_cards(client) -> dict[str, str]:
    """The spawn page's profile cards as the user sees them: {slug: the card's text}."""
    page = client.session.get(f"{client.url}/hub/spawn", timeout=30)
    page.raise_for_status()
    return dict(re.findall(r'<input[^>]*name="profile"[^>]*value="([^"]+)"[^>]*>(.*?)</div>', page.text))


def bob_job(login, shape: str, seconds: int) -> str:
    """A job of bob's on partition batch, five minutes at most."""
    options = f"--parsable --chdir=/tmp --output=/dev/null -p batch {shape} --mem=512M --time=5"
    return login.check_output(f"su bob -c \"sbatch {options} --wrap 'sleep {seconds}'\"")


def test_a_server_in_a_full_partition_shows_its_place_the_reason_and_the_expected_start(hub_as, login):
    alice = hub_as("alice")
    alice.stop()
    # bob fills both nodes of partition batch for five minutes, and queues one more job behind it
    fill = bob_job(login, "-N 2 --ntasks-per-node=2", 300)
    behind = bob_job(login, "-n 1", 60)
    try:
        wait_for(
            lambda: login.check_output(f"squeue -h -j {fill} -o %T") == "RUNNING", timeout=60, what="bob's jobs running"
        )
        # before Start, the form says it: Slurm's own estimate (sbatch --test-only) on the profiles of those nodes,
        # none on the remote and Docker ones
        cards = wait_for(
            lambda: (c := form_cards(alice)) and "expected wait about" in c["large"] and c,
            timeout=30,
            what="the form's expected wait on the full nodes",
        )
        estimate = r"\(expected wait about ([1-9]|1[0-5]) min, from \d\d:\d\d \(Slurm&#39;s estimate\)\)"
        assert re.search(estimate, cards["large"]), cards
        assert "expected wait about" in cards["small"], cards  # partition jupyter: the same two nodes
        assert "clusterhub-start" not in cards["hpc"] and "clusterhub-start" not in cards["workstation"], cards
        r = alice.post(f"/users/{alice.user}/server", json=CUSTOM)
        assert r.status_code in (201, 202), r.text
        events = queue_events(alice)
        queued = [e for e in events if "queue" in e]
        assert queued, events
        last = queued[-1]
        place = last["queue"]
        # bob's second job waits there too: alice's server is 1st or 2nd of 2 (multifactor: fair share may put her
        # ahead of bob, whose jobs fill the partition)
        assert place["partition"] == "batch" and place["pending"] == 2 and place["position"] in (1, 2), place
        assert place["reason"] in ("Resources", "Priority"), place
        assert "is in the queue of partition batch" in last["message"], last
        assert f"{'1st' if place['position'] == 1 else '2nd'} of 2 waiting there" in last["message"], last
        assert (
            "waiting for 1 CPU and 1 GB of memory to free up on partition batch" in last["message"]
            or "jobs of higher priority on partition batch go first" in last["message"]
        ), last
        # backfill's estimate: when bob's five-minute jobs end at the latest
        assert place["expected_start"], queued
        assert "Slurm expects it to start at" in last["message"], last
    finally:
        login.run(f"scancel {fill} {behind}")
    # the partition frees up: her server starts
    wait_for(lambda: (alice.server() or {}).get("ready"), timeout=180, interval=1, what="alice's server ready")
    alice.stop()
