"""Why a server's job ended, read from its output: the outputs in fixtures/job_end were captured from
real jobs in the lab (tests/lab/test_start_failures.py makes each of them), in direct and remote mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterhub.hub.job_end import MAX_CHARS, cause

FIXTURES = Path(__file__).parent / "fixtures" / "job_end"
LOG = "~/.jupyterhub_slurmspawner_42.log"
SIF = "/opt/clusterhub/images/python.sif"
CANCELLED = "slurmstepd: error: *** JOB 42 ON node1 CANCELLED AT 2026-12-01T10:00:00"

# fixture file -> (what the user reads about the cause, what the advice says)
CAPTURED = {
    "direct-cancelled.log": ("it was cancelled (scancel by you or an administrator)", "start it again"),
    "remote-cancelled.log": ("it was cancelled (scancel by you or an administrator)", "start it again"),
    "direct-server-error.log": (
        "the server failed (Bad config encountered during initialization: The 'port_retries' trait",
        "check the Jupyter settings of your image or overlay (/etc/jupyter)",
    ),
    "remote-server-error.log": (
        "the server failed (Bad config encountered during initialization: The 'port_retries' trait",
        "check the Jupyter settings of your image or overlay (/etc/jupyter)",
    ),
    "direct-image-missing.log": (
        "your server cannot start: the image /opt/clusterhub/images/python.sif is missing",
        "",
    ),
    "remote-image-missing.log": (
        "your server cannot start: the image /opt/clusterhub/images/python.sif is missing",
        "",
    ),
    "direct-out-of-memory.log": ("it ran out of memory (it used 1.7 GiB of its 1.0 GiB)", "choose more memory"),
    "remote-out-of-memory.log": ("it ran out of memory (it used", "choose more memory and start again"),
    "remote-maintenance.log": ("the notebook service is in maintenance: HPC maintenance until 18:00.", ""),
}


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_the_cause_of_each_captured_end(name):
    what, advice = CAPTURED[name]
    found = cause((FIXTURES / name).read_text(), LOG)
    assert found.what.startswith(what), found
    assert found.advice.startswith(advice) if advice else found.advice == "", found
    assert "\n" not in found.sentence() and len(found.what) <= MAX_CHARS + 40


def test_every_fixture_is_in_the_table():
    assert sorted(p.name for p in FIXTURES.iterdir()) == sorted(CAPTURED)


@pytest.mark.parametrize(
    ("output", "what"),
    [
        # Slurm's own lines win over what the server printed while it was being killed
        (
            f"Traceback (most recent call last):\n  File x\nKeyboardInterrupt\n{CANCELLED} ***\n",
            "it was cancelled",
        ),
        (
            "slurmstepd: error: *** JOB 42 ON node1 CANCELLED AT 2026-12-01T10:00:00 DUE TO TIME LIMIT ***\n",
            "it reached",
        ),
        (
            "slurmstepd: error: Detected 1 oom_kill event in StepId=42.batch. Some of the step tasks have been OOM "
            f"Killed.\n{CANCELLED} ***\n",
            "it ran out of memory (Detected 1 oom_kill event",
        ),
        # the batch script's banner explains nothing; the wrapper's message does
        ("clusterhub: job 42 on node1 for bob, 1 CPUs\n", "it ended right after its script started"),
        ("clusterhub: job 42 on node1 for bob, 1 CPUs\nclusterhub: the notebook service is in maintenance: x\n", "the"),
        ("FATAL:   could not open image /x.sif: no such file\n", "the container runtime failed (could not open image"),
        # a traceback's exception line, where the server logged no critical line
        (
            "Traceback (most recent call last):\n  File \"x\", line 1\nModuleNotFoundError: No module named 'y'\n",
            "the se",
        ),
        ("", "it wrote nothing"),
    ],
)
def test_which_line_explains_the_end(output, what):
    assert cause(output, LOG).what.startswith(what)


def test_long_lines_are_shortened_to_one_line():
    found = cause("clusterhub: " + "word " * 500, LOG)
    assert len(found.what) == MAX_CHARS and found.what.endswith("…")
