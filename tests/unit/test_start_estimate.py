"""The form's start estimates (src/clusterhub/hub/start_estimate.py): sbatch --test-only's answers read, put
in words, asked with the profile's resources, and shared for one interval by every user."""

import asyncio
from datetime import datetime

import pytest

from clusterhub.hub.request import Request
from clusterhub.hub.start_estimate import Estimate, StartEstimates, duration, parse, question_argv

NOW = datetime(2026, 12, 7, 16, 0, 0)
# sbatch --test-only's answer (Slurm 22.05, on its standard error)
ANSWER = "sbatch: Job 4242 to start at 2026-12-07T16:25:00 using 2 processors on nodes node2 in partition gpu\n"


@pytest.mark.parametrize(
    ("code", "err", "expected"),
    [
        (0, ANSWER, Estimate(start=datetime(2026, 12, 7, 16, 25))),
        (
            1,
            "sbatch: error: Batch job submission failed: Requested node configuration is not available\n",
            Estimate(error="Requested node configuration is not available"),
        ),
        (1, "sbatch: error: QOSMaxGRESPerUser\n", Estimate(error="QOSMaxGRESPerUser")),
        # the controller down or slow is nobody's answer about the profile
        (1, "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n", None),
        (1, "sbatch: error: Socket timed out on send/recv operation\n", None),
        (0, "", None),
        (1, "sudo: a password is required\n", None),
    ],
    ids=["start", "impossible", "qos", "controller-down", "timeout", "silent", "sudo"],
)
def test_sbatch_answers_are_read(code, err, expected):
    assert parse(code, "", err) == expected


@pytest.mark.parametrize(
    ("estimate", "words"),
    [
        (Estimate(start=NOW), "starts now"),
        (Estimate(start=datetime(2026, 12, 7, 15, 59)), "starts now"),  # the controller's clock a little behind
        (Estimate(start=datetime(2026, 12, 7, 16, 25)), "expected wait about 25 min, from 16:25 (Slurm's estimate)"),
        (Estimate(start=datetime(2026, 12, 7, 20, 0)), "expected wait about 4 h, from 20:00 (Slurm's estimate)"),
        (Estimate(error="QOSMaxGRESPerUser"), "cannot start now: QOSMaxGRESPerUser"),
    ],
)
def test_estimates_in_words(estimate, words):
    assert estimate.words(NOW) == words


def test_durations():
    assert [duration(s) for s in (5, 60, 89 * 60, 3 * 3600, 72 * 3600)] == ["1 min", "1 min", "89 min", "3 h", "3 days"]


def test_the_question_has_the_batch_scripts_resources_and_submits_nothing():
    request = Request(profile="gpu", partition="gpu", cpus=4, memory_gb=16, hours=1.5, gpus=2)
    argv = question_argv(["/usr/bin/sbatch"], request, "jupyterhub")
    assert argv[:2] == ["/usr/bin/sbatch", "--test-only"]
    for option in ("--partition=gpu", "--cpus-per-task=4", "--mem=16G", "--time=01:30:00", "--gres=gpu:2"):
        assert option in argv
    assert argv[-1] == "--wrap=true" and "--chdir=/tmp" in argv
    assert not any(a.startswith("--gres") for a in question_argv(["sbatch"], Request("s", "p", 1, 1, 1, 0), "j"))


class Runner:
    def __init__(self, delay=0.0):
        self.argvs = []
        self.delay = delay

    async def __call__(self, argv):
        self.argvs.append(argv)
        await asyncio.sleep(self.delay)
        return 0, "", ANSWER


def test_one_answer_per_interval_serves_every_user_and_parallel_forms_share_one_question():
    runner = Runner(delay=0.05)
    clock = [0.0]
    estimates = StartEstimates(runner, ttl=30, clock=lambda: clock[0])

    def ask(user):
        argv = ["sudo", "-n", "-u", user, "sbatch", "--test-only", "--partition=gpu"]
        return estimates.ask({"gpu": argv}, lambda a: tuple(a[4:]))

    async def forms():
        return await asyncio.gather(ask("alice"), ask("bob"))

    alice, bob = asyncio.run(forms())
    assert alice == bob == {"gpu": Estimate(start=datetime(2026, 12, 7, 16, 25))}
    assert len(runner.argvs) == 1 and runner.argvs[0][3] == "alice"
    clock[0] = 29
    asyncio.run(ask("carol"))
    assert len(runner.argvs) == 1
    clock[0] = 31  # a poll interval later: asked again
    asyncio.run(ask("carol"))
    assert len(runner.argvs) == 2


def test_a_slow_controller_bounds_the_forms_wait_and_gives_no_estimate():
    estimates = StartEstimates(Runner(delay=5), ttl=30, timeout=0.1)
    assert asyncio.run(asyncio.wait_for(estimates.ask({"gpu": ["sbatch"]}, tuple), 2)) == {"gpu": None}
