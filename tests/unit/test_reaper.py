"""The orphaned-job check (src/clusterhub/hub/reaper.py): Slurm jobs with the hub's job
names that no server has are cancelled, logged, and nothing else is ever touched.

The queue is the spawners' shared SlurmQueue fed by a fake squeue; scancel is a fake executable that records
its arguments (direct mode) or the commands are checked against hpc-gate's own parser (remote mode)."""

import asyncio
import logging
from types import SimpleNamespace

import pytest

from clusterhub import gate
from clusterhub.hub.reaper import (
    RETRY_AFTER,
    DirectBackend,
    Reaper,
    RemoteBackend,
    ServerView,
    hub_servers,
    state_job_ids,
)
from clusterhub.hub.slurm_queue import SlurmQueue

SSH = ["/usr/bin/ssh", "-i", "/var/lib/jupyterhub/.ssh/clusterhub_hpc", "clusterhub-gate@login"]
GRACE = 60.0

# squeue -h --name jupyterhub -o '%i|%T|%B|%r|%u|%P|%j' (direct mode)
DIRECT = """\
101|RUNNING|node1|None|alice|jupyter|jupyterhub
102|RUNNING|node2|None|bob|jupyter|jupyterhub
103|PENDING|n/a|Resources|carol|jupyter|jupyterhub
"""


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeSqueue:
    """The squeue process: answers the current text (or fails), counts its calls."""

    def __init__(self, text):
        self.text = text
        self.calls = 0

    async def __call__(self, argv):
        self.calls += 1
        if self.text is None:
            return 1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
        return 0, self.text, ""


@pytest.fixture
def scancel(tmp_path):
    """A fake scancel executable: records `user job` per call in calls.txt, exits with exit.txt's status."""
    calls = tmp_path / "calls.txt"
    status = tmp_path / "exit.txt"
    status.write_text("0")
    tool = tmp_path / "scancel"
    tool.write_text(
        f'#!/bin/sh\necho "$1 $2" >> {calls}\nexit $(cat {status})\n',
    )
    tool.chmod(0o755)

    def recorded():
        return calls.read_text().split("\n")[:-1] if calls.exists() else []

    return SimpleNamespace(command=f"{tool} {{username}} {{job_id}}", calls=recorded, status=status)


def make_direct(text, scancel, clock):
    squeue = FakeSqueue(text)
    queue = SlurmQueue(["squeue"], timeout=5, runner=squeue, clock=clock)
    return DirectBackend(queue, "jupyterhub", scancel.command, timeout=5), squeue


def sweep(reaper, times=1, step=GRACE):
    for _ in range(times):
        asyncio.run(reaper.sweep())
        reaper.clock.now += step


def test_jobs_of_no_server_are_cancelled_and_logged(scancel, caplog):
    clock = Clock()
    backend, _ = make_direct(DIRECT, scancel, clock)
    servers = [ServerView("alice", False, frozenset({"101"})), ServerView("bob", False, frozenset({"102"}))]
    reaper = Reaper([backend], lambda: servers, GRACE, max_age=0, clock=clock)
    caplog.set_level(logging.INFO)
    sweep(reaper)  # first seen: within the grace
    assert scancel.calls() == []
    sweep(reaper)
    assert scancel.calls() == ["carol 103"]
    message = next(r.getMessage() for r in caplog.records if "Cancelled orphaned" in r.getMessage())
    assert "job 103" in message and "user carol" in message and "no server of the hub has it" in message
    assert reaper.cancelled[0][:2] == ("103", "carol")


def test_a_job_known_only_in_the_database_is_left_alone(scancel):
    # after a hub restart: bob's spawner is not in the hub's memory yet, his server record has the job
    memory = [SimpleNamespace(name="alice", spawners={"": SimpleNamespace(pending=None, get_state=lambda: {})})]
    rows = [
        SimpleNamespace(user=SimpleNamespace(name="bob"), state={"kind": "slurm", "child": {"job_id": "102"}}),
        SimpleNamespace(user=SimpleNamespace(name="alice"), state={"job_id": "101"}),
        SimpleNamespace(user=SimpleNamespace(name="carol"), state={"job_id": "103"}),
    ]
    clock = Clock()
    backend, _ = make_direct(DIRECT, scancel, clock)
    reaper = Reaper([backend], lambda: hub_servers(memory, rows), GRACE, max_age=0, clock=clock)
    sweep(reaper, times=3)
    assert scancel.calls() == []


def test_a_pending_spawn_within_the_grace_is_left_alone(scancel):
    # carol's start: sbatch took the job, its id is nowhere yet (sbatch has not returned); then the start ends
    pending = {"carol": True}
    clock = Clock()
    backend, _ = make_direct(DIRECT, scancel, clock)
    reaper = Reaper(
        [backend],
        lambda: [
            ServerView("alice", False, frozenset({"101"})),
            ServerView("bob", False, frozenset({"102"})),
            ServerView("carol", pending["carol"]),
        ],
        GRACE,
        max_age=0,
        clock=clock,
    )
    sweep(reaper, times=3)  # pending for longer than the grace: still left alone
    assert scancel.calls() == []
    pending["carol"] = False  # the start failed (sbatch timed out) and left the job behind
    sweep(reaper)
    assert scancel.calls() == ["carol 103"]


def test_a_young_job_waits_for_the_grace(scancel):
    clock = Clock()
    backend, _ = make_direct(DIRECT, scancel, clock)
    known = [ServerView("alice", False, frozenset({"101"})), ServerView("bob", False, frozenset({"102"}))]
    reaper = Reaper([backend], lambda: known, GRACE, max_age=0, clock=clock)
    sweep(reaper, times=2, step=GRACE / 2 - 1)
    sweep(reaper, step=2)  # seen 58 s
    assert scancel.calls() == []
    sweep(reaper)  # seen 60 s
    assert scancel.calls() == ["carol 103"]


def test_an_old_job_goes_at_the_first_check_after_the_controller_returns(scancel):
    # alice's job was seen while her server ran; slurmctld stops, her server is stopped (scancel fails and
    # JupyterHub forgets it), slurmctld returns: the job goes at once, not a grace later
    clock = Clock()
    backend, squeue = make_direct(DIRECT, scancel, clock)
    servers = [ServerView("alice", False, frozenset({"101"})), ServerView("bob", False, frozenset({"102"}))]
    reaper = Reaper([backend], lambda: servers, GRACE, max_age=0, clock=clock)
    servers.append(ServerView("carol", False, frozenset({"103"})))
    sweep(reaper, step=10)
    text, squeue.text = squeue.text, None  # slurmctld stopped
    servers.pop(0)  # alice's server stopped
    sweep(reaper, times=6, step=10)
    assert scancel.calls() == []  # nothing is decided while Slurm does not answer
    squeue.text = text
    sweep(reaper, step=10)
    assert scancel.calls() == ["alice 101"]


def test_a_job_gone_in_a_fresh_squeue_is_not_cancelled(scancel):
    # the shared snapshot (up to max_age old) still lists a job that ended since: the fresh one decides
    clock = Clock()
    backend, squeue = make_direct(DIRECT, scancel, clock)
    reaper = Reaper([backend], lambda: [], GRACE, max_age=GRACE * 2, clock=clock)
    asyncio.run(backend.queue.snapshot(0))  # the snapshot the spawners' polls left, 103 still in it
    squeue.text = "\n".join(DIRECT.splitlines()[:2]) + "\n"  # 103 ended
    clock.now += GRACE + 1
    reaper.seen = {("direct", j): 0.0 for j in ("101", "102", "103")}
    asyncio.run(reaper.sweep())
    assert sorted(scancel.calls()) == ["alice 101", "bob 102"]
    assert squeue.calls == 2  # the polls' snapshot, then one fresh squeue to confirm


@pytest.mark.parametrize(
    "line",
    [
        "201|RUNNING|node1|None|alice|jupyter|myjob",  # a job of another name
        "202|RUNNING|node1|None|alice|jupyter|jupyterhub-alice",  # remote mode's name, not direct mode's
        "203|RUNNING|node1|None|alice|jupyter|jupyterhubx",
        "204|RUNNING|node1|None",  # an old-format line: no owner, no name
        "205|RUNNING|node1|None|-oProxyCommand=x|jupyter|jupyterhub",  # not a user name: never passed to sudo
        "206|COMPLETING|node1|None|alice|jupyter|jupyterhub",  # already ending
    ],
)
def test_jobs_of_other_names_are_never_touched(scancel, line):
    clock = Clock()
    backend, _ = make_direct(line + "\n", scancel, clock)
    reaper = Reaper([backend], lambda: [], GRACE, max_age=0, clock=clock)
    sweep(reaper, times=3)
    assert scancel.calls() == []


def test_nothing_is_decided_while_slurm_does_not_answer(scancel):
    clock = Clock()
    backend, _ = make_direct(None, scancel, clock)
    reaper = Reaper([backend], lambda: [], GRACE, max_age=0, clock=clock)
    sweep(reaper, times=5)
    assert scancel.calls() == [] and reaper.seen == {}


def test_a_failed_cancellation_is_logged_once_and_tried_again(scancel, caplog):
    scancel.status.write_text("1")
    clock = Clock()
    backend, _ = make_direct(DIRECT.splitlines()[2] + "\n", scancel, clock)
    reaper = Reaper([backend], lambda: [], 0, max_age=0, clock=clock)
    caplog.set_level(logging.WARNING)
    sweep(reaper, times=3)
    assert scancel.calls() == ["carol 103"] * 3
    assert sum("Could not cancel orphaned Slurm job 103" in r.getMessage() for r in caplog.records) == 1
    scancel.status.write_text("0")
    sweep(reaper)
    assert reaper.cancelled and reaper.cancelled[0][0] == "103"


def test_a_cancelled_job_still_listed_is_not_cancelled_again_at_once(scancel):
    clock = Clock()
    backend, _ = make_direct(DIRECT.splitlines()[2] + "\n", scancel, clock)
    reaper = Reaper([backend], lambda: [], 0, max_age=0, clock=clock)
    sweep(reaper, times=3, step=10)  # Slurm still lists it for a moment after scancel
    assert scancel.calls() == ["carol 103"]
    clock.now += RETRY_AFTER
    sweep(reaper)
    assert scancel.calls() == ["carol 103"] * 2


def test_the_direct_cancel_command_is_the_spawners_own():
    backend = DirectBackend(None, "jupyterhub", "sudo -n -u {username} /usr/bin/scancel {job_id}", 5)
    job = SimpleNamespace(user="alice", job_id="101")
    assert backend.cancel_argv(job) == ["sudo", "-n", "-u", "alice", "/usr/bin/scancel", "101"]


# hpc-gate with users_group: squeue lists the hub's jobs of every account (direct mode's too), by name
REMOTE = """\
301|RUNNING|rnode1|None|jupyterhpc|hpc|jupyterhub-alice
302|RUNNING|rnode1|None|bob|hpcown|jupyterhub-bob
303|RUNNING|node1|None|alice|jupyter|jupyterhub
304|RUNNING|rnode1|None|jupyterhpc|hpc|jupyterhub-carol
"""


def test_remote_orphans_are_cancelled_through_the_gate_as_the_account_they_run_as(monkeypatch):
    # the login node's accounts, as hpc-gate looks them up: bob (uid 1001) is in hpcusers
    monkeypatch.setattr(gate.pwd, "getpwnam", lambda name: SimpleNamespace(pw_uid=1001, pw_gid=100, pw_name=name))
    monkeypatch.setattr(gate.grp, "getgrnam", lambda name: SimpleNamespace(gr_gid=100, gr_mem=[]))
    cancelled = []

    async def runner(argv):
        cancelled.append(argv)
        return 0, "", ""

    clock = Clock()
    queue = SlurmQueue(["squeue"], timeout=5, runner=FakeSqueue(REMOTE), clock=clock)
    backend = RemoteBackend(queue, "jupyterhub", SSH, {"hpcown"}, timeout=5)
    servers = [ServerView("carol", True)]  # carol's start is under way: her job is left alone
    reaper = Reaper([backend], lambda: servers, GRACE, max_age=0, runner=runner, clock=clock)
    sweep(reaper, times=2)
    assert [argv[:-1] for argv in cancelled] == [SSH, SSH]
    config = gate.Config(job_name="jupyterhub", users_group="hpcusers", job_account="jupyterhpc")
    requests = [gate.parse(argv[-1], config, "jupyterhpc") for argv in cancelled]
    # alice's job runs as the hub's job account; bob's as his own (run_as: user): `as bob scancel 302`
    assert [(r.tool, r.as_user, r.args) for r in requests] == [
        ("scancel", "", ("--user=jupyterhpc", "301")),
        ("scancel", "bob", ("--user=bob", "302")),
    ]


def test_state_job_ids_reads_the_dispatching_spawners_child():
    assert state_job_ids({"job_id": "7"}) == {"7"}
    assert state_job_ids({"kind": "remote", "child": {"job_id": "8", "tunnel_port": 5}}) == {"8"}
    assert state_job_ids({"kind": "docker", "child": {"container_id": "abc"}}) == set()
    assert state_job_ids({}) == state_job_ids(None) == set()


def test_hub_servers_reads_memory_and_database():
    spawner = SimpleNamespace(pending="spawn", get_state=lambda: {"kind": "slurm", "child": {"job_id": "9"}})
    users = [SimpleNamespace(name="alice", spawners={"": spawner})]
    rows = [SimpleNamespace(user=SimpleNamespace(name="bob"), state=None)]
    assert hub_servers(users, rows) == [ServerView("alice", True, frozenset({"9"})), ServerView("bob", False)]
