"""One batched squeue for all servers (src/clusterhub/hub/slurm_queue.py)."""

import asyncio

from clusterhub.hub.slurm_queue import SlurmQueue, parse_squeue

# squeue -h --name jupyterhub -o '%i|%T|%B|%r', captured from the lab (Slurm 22.05)
SQUEUE = """\
41|RUNNING|node1|None
42|PENDING|n/a|Resources
43|COMPLETING|node2|None
"""


def test_parse_squeue():
    jobs = parse_squeue(SQUEUE + "\n garbage line\n")
    assert set(jobs) == {"41", "42", "43"}
    assert jobs["41"].running and jobs["41"].node == "node1"
    assert jobs["42"].pending and jobs["42"].node == "" and jobs["42"].reason == "Resources"
    assert jobs["43"].running


class FakeSqueue:
    """Stands in for the squeue process: counts calls, answers what it is told."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, argv):
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if answer == "hang":
            await asyncio.sleep(10)
        return answer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def run(coro):
    return asyncio.run(coro)


def test_fifty_servers_polling_share_one_squeue():
    fake, clock = FakeSqueue([(0, SQUEUE, "")]), Clock()
    queue = SlurmQueue(["squeue"], runner=fake, clock=clock)

    async def poll_all():
        return await asyncio.gather(*(queue.job(str(40 + i % 4), max_age=25) for i in range(50)))

    results = run(poll_all())
    assert fake.calls == 1
    assert results[1].running and results[2].pending and results[0] is False  # job 40 is not in the queue
    clock.now += 30
    run(poll_all())
    assert fake.calls == 2


def test_a_failing_squeue_means_unknown_never_gone():
    fake, clock = FakeSqueue([(1, "", "slurm_load_jobs error: Unable to contact slurm controller")]), Clock()
    queue = SlurmQueue(["squeue"], runner=fake, clock=clock)
    assert run(queue.job("41", max_age=25)) is None
    assert queue.failures == 1 and "Unable to contact" in queue.last_error


def test_a_hanging_squeue_times_out_as_unknown():
    queue = SlurmQueue(["squeue"], timeout=0.05, runner=FakeSqueue(["hang"]))
    assert run(queue.job("41", max_age=0)) is None


def test_a_missing_squeue_binary_is_unknown():
    queue = SlurmQueue(["squeue"], runner=FakeSqueue([FileNotFoundError("squeue")]))
    assert run(queue.job("41", max_age=0)) is None


def test_a_job_newer_than_the_snapshot_is_unknown_until_a_later_one_never_gone():
    """A snapshot begun before a job's submission cannot show it: the job is unknown (None), not gone (False), and
    costs no squeue of its own; the next snapshot, whoever takes it, shows it."""
    fake, clock = FakeSqueue([(0, "", ""), (0, "44|PENDING|n/a|Priority\n", "")]), Clock()
    queue = SlurmQueue(["squeue"], runner=fake, clock=clock)
    assert run(queue.job("41", max_age=25)) is False  # snapshot at t=100
    clock.now += 1
    submitted = clock.now - 0.5
    assert run(queue.job("44", max_age=25, not_before=submitted)) is None
    assert run(queue.job("41", max_age=25, not_before=submitted)) is None  # nor is an older job judged from it
    assert fake.calls == 1
    info = run(queue.job("44", max_age=0.5, not_before=submitted))  # the next poll's snapshot
    assert info.pending and info.reason == "Priority"
    assert fake.calls == 2


def test_waiters_for_a_snapshot_newer_than_an_event_share_one_squeue():
    """Servers that reported their ports ask for a snapshot taken after the report: one squeue serves all whose
    report came before it started, however young the cached one is."""
    fake, clock = FakeSqueue([(0, SQUEUE, ""), (0, SQUEUE.replace("PENDING", "RUNNING"), "")]), Clock()
    queue = SlurmQueue(["squeue"], runner=fake, clock=clock)
    assert run(queue.job("42", max_age=25)).pending
    clock.now += 0.5  # reports arrive half a second into a 25 s snapshot's life

    async def after_reports():
        return await asyncio.gather(*(queue.job("42", max_age=25, fresh_after=clock.now - 0.1) for _ in range(20)))

    assert all(info.running for info in run(after_reports()))
    assert fake.calls == 2


def test_parse_squeue_with_owner_partition_and_name():
    # squeue -h -o '%i|%T|%B|%r|%u|%P|%j' (SQUEUE_FORMAT): the orphaned-job check needs user and name
    jobs = parse_squeue(
        "51|RUNNING|node1|None|alice|jupyter|jupyterhub\n52|PENDING|n/a|Priority|bob|hpc|jupyterhub-bob\n"
    )
    assert (jobs["51"].user, jobs["51"].partition, jobs["51"].name) == ("alice", "jupyter", "jupyterhub")
    assert jobs["52"].pending and jobs["52"].node == "" and jobs["52"].name == "jupyterhub-bob"
    # an hpc-gate still on the old format: the jobs, without owner (the check leaves them alone)
    assert parse_squeue("53|RUNNING|node2|None\n")["53"].name == ""
    assert parse_squeue("54|RUNNING|node2|None|alice\n") == {}
