"""Why a server's job ended, read from its output: the outputs in fixtures/job_end were captured from
real jobs in the lab (tests/lab/test_start_failures.py makes each of them), in direct and remote mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterhub.hub.job_end import HOME_FULL, MAX_CHARS, accounted, cause
from clusterhub.protocol import EXIT_HOME_FULL, parse_sacct

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


# sacct -n -P -j 42 -o SACCT_FIELDS (the fields the hub and the gate read), a job and its batch step
def sacct(state: str, exit_code: str = "0:0") -> list[dict]:
    return parse_sacct(
        f"42|{state}|{exit_code}|00:00:09|02:00:00|00:00:01|1|1G||cpu=1,mem=1G|None\n"
        f"42.batch|CANCELLED|0:15|00:00:09||00:00:01|1||120K|cpu=1,mem=1G|\n"
    )


@pytest.mark.parametrize(
    ("rows", "what"),
    [
        (sacct("NODE_FAIL", "0:0"), "its compute node failed"),
        (sacct("BOOT_FAIL", "0:0"), "its compute node failed to boot"),
        (sacct("PREEMPTED", "0:15"), "a job of higher priority preempted it"),
        (sacct("TIMEOUT", "0:0"), "it reached its time limit"),
        (sacct("OUT_OF_MEMORY", "0:125"), "it ran out of memory"),
        (sacct("FAILED", f"{EXIT_HOME_FULL}:0"), "your home directory is full (no space or quota left)"),
        (sacct("FAILED", "1:0"), None),  # a crash: the output says more
        (sacct("CANCELLED by 1000", "0:15"), None),
        (sacct("RUNNING"), None),  # accounting behind the queue
        (parse_sacct("43|NODE_FAIL|0:0\n"), None),  # another job's
        ([], None),  # no accounting (sacct failed, or none is kept)
    ],
)
def test_what_accounting_explains(rows, what):
    found = accounted(rows, "42")
    assert (found.what if found else None) == what


def test_accounting_explains_what_the_output_cannot_and_never_hides_what_it_can():
    node_failed = accounted(sacct("NODE_FAIL"), "42")
    home_full = accounted(sacct("FAILED", f"{EXIT_HOME_FULL}:0"), "42")
    banner = "clusterhub: job 42 on node1 for bob, 1 CPUs\n"
    # the output says nothing: accounting speaks
    assert cause(banner, LOG, home_full) == HOME_FULL
    assert cause("", LOG, node_failed).what == "its compute node failed"
    # a node that failed wins over the last words the server wrote before it died
    assert cause(banner + "[I 10:00:01 ServerApp] Serving notebooks\n", LOG, node_failed).what.startswith("its compute")
    # the output's own explanation stands (the wrapper's sentence, a memory detail)
    wrapper = banner + "clusterhub: your home directory /home/bob is full (no space or quota left); delete files\n"
    assert cause(wrapper, LOG, home_full).what.startswith("your home directory /home/bob is full")
    memory = "slurmstepd: error: StepId=42.batch exceeded memory limit (1806069760 > 1073741824), being killed\n"
    assert "1.7 GiB of its 1.0 GiB" in cause(memory, LOG, accounted(sacct("OUT_OF_MEMORY"), "42")).what


def test_a_crashed_server_is_shown_with_its_logs_last_lines():
    output = (
        "clusterhub: job 42 on node1 for bob, 1 CPUs\n"
        "[I 2026-12-01 10:11:55.100 ServerApp] Extension package jupyterlab took 0.2s to import\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/site/startup.py", line 3, in <module>\n'
        "    import missing_module\n"
        "ModuleNotFoundError: No module named 'missing_module'\n"
    )
    found = cause(output, LOG)
    assert found.what == "the server failed (ModuleNotFoundError: No module named 'missing_module')"
    assert found.tail == (
        'File "/opt/site/startup.py", line 3, in <module>',
        "import missing_module",
        "ModuleNotFoundError: No module named 'missing_module'",
    )
    assert found.sentence().endswith(
        '; its log ends: File "/opt/site/startup.py", line 3, in <module> | import missing_module | '
        "ModuleNotFoundError: No module named 'missing_module'"
    )
    assert "\n" not in found.sentence()
