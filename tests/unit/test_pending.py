"""What a user reads while the server waits in the queue (src/clusterhub/hub/pending.py): its place among the
partition's pending jobs, Slurm's expected start and the pending reason in words, from the hub's one squeue."""

from __future__ import annotations

from datetime import datetime

import pytest

from clusterhub.hub.pending import expected_start, position, waiting, waiting_for
from clusterhub.hub.slurm_queue import parse_squeue
from clusterhub.protocol import SQUEUE_FORMAT

NOW = datetime(2026, 12, 7, 13, 50)
# the hub's squeue (every job of the cluster), in SQUEUE_FORMAT's fields
QUEUE = parse_squeue(
    "\n".join(
        [
            "90|RUNNING|node1|None|bob|gpu|train|5000|2026-12-07T12:00:00",
            "91|PENDING|n/a|Resources|carol|gpu|sim|9000|2026-12-07T14:05:00",
            "92|PENDING|n/a|Priority|dave|gpu|sim|7000|N/A",
            "93_[0-9]|PENDING|n/a|Priority|erin|gpu|sweep|7000|N/A",
            "95|PENDING|n/a|Resources|alice|gpu|jupyterhub|7000|2026-12-07T14:20:00",
            "96|PENDING|n/a|Priority|frank|gpu|sim|100|N/A",
            "97|PENDING|n/a|Resources|gina|batch|other|99999|N/A",
        ]
    )
)


def test_the_format_carries_priority_and_expected_start():
    assert SQUEUE_FORMAT.endswith("|%Q|%S")
    assert (QUEUE["95"].priority, QUEUE["95"].start) == ("7000", "2026-12-07T14:20:00")


def test_the_place_counts_the_partitions_pending_jobs_in_slurms_order():
    # ahead of alice's 95: 91 (higher priority), 92 and the array 93 (same priority, older); not the running
    # job 90, not frank's 96 (lower priority), not gina's 97 on another partition
    assert position(QUEUE, QUEUE["95"]) == (4, 5)
    assert position(QUEUE, QUEUE["91"]) == (1, 5)
    assert position(QUEUE, QUEUE["97"]) == (1, 1)
    assert position(QUEUE, QUEUE["90"]) is None


def test_the_expected_start_is_slurms_estimate_when_it_lies_ahead():
    assert expected_start(QUEUE["95"], NOW) == datetime(2026, 12, 7, 14, 20)
    assert expected_start(QUEUE["92"], NOW) is None  # N/A: no estimate yet
    assert expected_start(QUEUE["95"], datetime(2026, 12, 8)) is None  # passed: not a promise any more


@pytest.mark.parametrize(
    ("reason", "asked", "words"),
    [
        ("Resources", {"gpus": 2}, "waiting for 2 GPUs to free up on partition gpu"),
        ("Resources", {"gpus": 1}, "waiting for 1 GPU to free up on partition gpu"),
        ("Resources", {"cpus": 4, "memory_gb": 8}, "waiting for 4 CPUs and 8 GB of memory to free up"),
        ("Priority", {}, "jobs of higher priority on partition gpu go first"),
        ("ReqNodeNotAvail, UnavailableNodes:node[1-2]", {}, "are down, drained or reserved (maintenance?)"),
        ("PartitionDown", {}, "partition gpu is closed for now"),
        ("PartitionTimeLimit", {}, "it asks for more than partition gpu allows"),
        ("QOSMaxGRESPerUser", {}, "a limit on your (or your group's) jobs or resources is reached"),
        ("QOSMaxWallDurationPerJobLimit", {}, "it asks for more hours than your account may"),
        ("InvalidAccount", {}, "Slurm says InvalidAccount"),
        ("QOSMaxCpuPerUserLimit", {}, "a limit on your (or your group's) jobs or resources is reached"),
        ("AssocGrpCpuLimit", {}, "it starts when one of them ends"),
        ("JobHeldAdmin", {}, "it is held by an administrator"),
        ("None", {}, "the scheduler has not looked at it yet"),
    ],
)
def test_the_reason_in_words(reason, asked, words):
    assert words in waiting_for(reason, "gpu", **asked)


def test_the_progress_event_says_it_all_in_one_message_and_in_fields():
    event = waiting(QUEUE["95"], QUEUE, gpus=2, now=NOW).event(NOW)
    assert event["message"] == (
        "Job 95 is in the queue of partition gpu, 4th of 5 waiting there: waiting for 2 GPUs to free up on partition"
        " gpu; Slurm expects it to start at 14:20 (in about 30 min)"
    )
    assert event["queue"] == {
        "job_id": "95",
        "partition": "gpu",
        "position": 4,
        "pending": 5,
        "reason": "Resources",
        "expected_start": "2026-12-07T14:20:00",
    }


def test_without_the_clusters_jobs_no_place_is_claimed():
    # remote mode: hpc-gate's squeue shows the hub's own jobs only
    event = waiting(QUEUE["92"], None, now=NOW).event(NOW)
    assert (
        event["message"] == "Job 92 is in the queue of partition gpu: jobs of higher priority on partition gpu go first"
    )
    assert event["queue"]["position"] is None
