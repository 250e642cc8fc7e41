"""The runs service's records (src/clusterhub/runs/store.py) in a real SQLite file, and its reconciler
(src/clusterhub/runs/slurm.py) against a scripted Slurm: what squeue and sacct print, and when they fail."""

from __future__ import annotations

import json

import pytest

from clusterhub.runs import job as runjob
from clusterhub.runs.slurm import LOST_AFTER_S, SlurmCommands, SlurmError, reconcile
from clusterhub.runs.store import Run, Store

ALICE_RUN = "0b6a9c1e-1111-4a4a-8b8b-000000000001"
BOB_RUN = "0b6a9c1e-2222-4a4a-8b8b-000000000002"
FIELDS = "|00:01:00|00:15:00|00:30|1|1G||billing=1,cpu=1,mem=1G,node=1|None"


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'runs.sqlite'}")


def add(store, run_id, owner, job_id, *, status="QUEUED", t=100.0):
    return store.add(
        Run(
            run_id=run_id,
            owner=owner,
            status=status,
            create_time=t,
            update_time=t,
            job_id=job_id,
            parameters={"n": 5},
            request={"partition": "jupyter"},
        )
    )


class FakeSlurm:
    """Scripted answers: squeue's text (None: the controller is down) and sacct's text per owner (None: down)."""

    def __init__(self):
        self.queue_text: str | None = ""
        self.sacct_text: dict[str, str | None] = {}
        self.calls: list[list[str]] = []

    def __call__(self, argv, stdin=None):
        self.calls.append(argv)
        if argv[0] == "squeue":
            return (
                (1, "", "slurm_load_jobs error: Unable to contact slurm controller")
                if self.queue_text is None
                else (0, self.queue_text, "")
            )
        owner = argv[3]
        if "sacct" in argv:
            text = self.sacct_text.get(owner, "")
            return (1, "", "Connection refused") if text is None else (0, text, "")
        if "sbatch" in argv:
            assert stdin.startswith("#!/bin/bash\n")
            return 0, "4242\n", ""
        if "scancel" in argv:
            return (0, "", "") if owner == "alice" else (1, "", "Access/permission denied")
        raise AssertionError(argv)


@pytest.fixture
def slurm():
    fake = FakeSlurm()
    return fake, SlurmCommands(runner=fake)


def test_runs_persist_and_are_read_through_their_owner(store, tmp_path):
    add(store, ALICE_RUN, "alice", "7")
    add(store, BOB_RUN, "bob", "8", t=101.0)
    again = Store(f"sqlite:///{tmp_path / 'runs.sqlite'}")  # a restarted service
    assert again.get("alice", ALICE_RUN).parameters == {"n": 5}
    assert again.get("bob", ALICE_RUN) is None  # another user's run: not found
    assert [r.run_id for r in again.list("alice")] == [ALICE_RUN]
    assert again.count("bob") == 1 and {r.owner for r in again.active()} == {"alice", "bob"}


def test_listing_pages_newest_first(store):
    for i in range(5):
        add(store, f"0b6a9c1e-1111-4a4a-8b8b-00000000000{i}", "alice", str(i), t=100.0 + i)
    first = store.list("alice", limit=2)
    assert [r.job_id for r in first] == ["4", "3"]
    assert [r.job_id for r in store.list("alice", limit=2, before=first[-1].create_time)] == ["2", "1"]
    store.update(first[0].run_id, status="COMPLETED")
    assert [r.job_id for r in store.list("alice", status="COMPLETED")] == ["4"]


def test_queue_states_then_final_states_from_accounting(store, slurm):
    fake, commands = slurm
    add(store, ALICE_RUN, "alice", "7")
    add(store, BOB_RUN, "bob", "8")
    fake.queue_text = "7|RUNNING|None\n8|PENDING|Resources\n"
    assert reconcile(store, commands, now=200.0) == {"IN_PROGRESS": 1, "QUEUED": 1}
    run = store.get("alice", ALICE_RUN)
    assert (run.status, run.start_time) == ("IN_PROGRESS", 200.0)
    assert store.get("bob", BOB_RUN).status_message == "queued (Resources)"
    # both leave the queue: alice's completed, bob's hit its time limit
    fake.queue_text = ""
    fake.sacct_text = {
        "alice": f"7|COMPLETED|0:0{FIELDS}\n7.batch|COMPLETED|0:0|00:01:00||00:30|1||100M||\n",
        "bob": f"8|TIMEOUT|0:15{FIELDS}\n",
    }
    assert reconcile(store, commands, now=300.0) == {"COMPLETED": 1, "FAILED": 1}
    alice, bob = store.get("alice", ALICE_RUN), store.get("bob", BOB_RUN)
    assert (alice.status, alice.end_time) == ("COMPLETED", 300.0)
    assert alice.efficiency["elapsed_s"] == 60 and alice.efficiency["peak_memory_bytes"] == 100 * 2**20
    assert bob.status == "FAILED" and "time limit" in bob.status_message
    # one sacct per owner, each as that owner
    assert [c[:4] for c in fake.calls if "sacct" in c] == [["sudo", "-n", "-u", "alice"], ["sudo", "-n", "-u", "bob"]]
    assert reconcile(store, commands, now=400.0) == {}  # nothing active: Slurm is not even asked
    assert sum("squeue" in c[0] for c in fake.calls) == 2


def test_nothing_changes_while_the_controller_or_slurmdbd_is_down(store, slurm):
    fake, commands = slurm
    add(store, ALICE_RUN, "alice", "7", status="IN_PROGRESS")
    fake.queue_text = None
    assert reconcile(store, commands, now=200.0) == {}
    fake.queue_text, fake.sacct_text = "", {"alice": None}
    for now in (300.0, 300.0 + 2 * LOST_AFTER_S):
        assert reconcile(store, commands, now=now) == {}
    assert store.get("alice", ALICE_RUN).status == "IN_PROGRESS"
    fake.sacct_text = {"alice": f"7|OUT_OF_MEMORY|0:125{FIELDS}\n"}  # slurmdbd back: the record arrives
    assert reconcile(store, commands, now=2000.0) == {"FAILED": 1}
    assert "out of memory" in store.get("alice", ALICE_RUN).status_message


def test_a_job_nobody_knows_fails_as_vanished_after_the_grace_period(store, slurm):
    _, commands = slurm
    add(store, ALICE_RUN, "alice", "7", status="IN_PROGRESS")
    assert reconcile(store, commands, now=200.0) == {}
    assert reconcile(store, commands, now=200.0 + LOST_AFTER_S - 1) == {}
    assert reconcile(store, commands, now=200.0 + LOST_AFTER_S) == {"FAILED": 1}
    assert "vanished" in store.get("alice", ALICE_RUN).status_message


def test_submit_and_cancel_run_as_the_owner(slurm):
    fake, commands = slurm
    job = runjob.build(
        {},
        json.dumps({"cells": [], "nbformat": 4}),
        {},
        profiles=[{"slug": "s", "partition": "jupyter"}],
        partitions=[{"name": "jupyter", "max_cpus": 1, "max_memory_gb": 1, "max_hours": 1}],
        images=[],
    )
    assert commands.submit("alice", job) == "4242"
    assert fake.calls[-1] == ["sudo", "-n", "-u", "alice", "sbatch", "--parsable"]
    commands.cancel("alice", "4242")
    with pytest.raises(SlurmError, match=r"could not stop job 4242 .*permission denied"):
        commands.cancel("bob", "4242")
