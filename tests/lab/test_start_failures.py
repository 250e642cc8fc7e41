"""A server that dies while starting is reported at once, with its reason, in direct and remote mode.

Each case makes bob's start fail for real (Slurm cancels the job, the server's own code fails, the image
is gone from the node, the job goes over its memory limit) and checks what bob reads: the start fails
within a few poll intervals of the job's end (never at the 120 s start-up limit), the message names the
cause, the spawn request never answers HTTP 500, and his next start works. Both modes run bob's server in
the same Apptainer image with his persistent overlay (its $HOME): direct on node1/node2 (profile small),
remote on rnode1 as his own HPC account through hpc-gate and the tunnel (profile hpcown).
"""

from __future__ import annotations

import shlex
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import wait_for
from hubclient import StartFailed

pytestmark = [pytest.mark.apptainer, pytest.mark.remote]

SIF = "/opt/clusterhub/images/python.sif"
OVERLAY = "/home/bob/.clusterhub/bob.img"
# a system path: the servers read no configuration in the home (jupyterhub_disable_user_config), but the
# overlay covers the whole container, so bob can still break his own server there
CONFIG = "/etc/jupyter/jupyter_server_config.py"
MODES = {
    "direct": {"options": {"profile": "small", "image": "python"}, "nodes": ("node1", "node2")},
    "remote": {"options": {"profile": "hpcown", "image": "python"}, "nodes": ("rnode1",)},
}
# a failed start is reported within this many seconds of the job's end (hub poll: 0.5 s; a fresh squeue,
# and in remote mode an SSH round trip through hpc-gate, for the job's output)
PROMPT = 15


@pytest.fixture(scope="module")
def lab_hosts(nodes, rnode):
    return {"node1": nodes[0], "node2": nodes[1], "rnode1": rnode}


@pytest.fixture(scope="module", params=sorted(MODES))
def started_once(request, hub_as, lab_hosts):
    """(bob's client, his spawn options, the nodes of the mode's partition), after one start that made his
    overlay (its first run) and proved the mode works."""
    bob = hub_as("bob")
    bob.stop()
    spec = MODES[request.param]
    bob.start(options=spec["options"], timeout=240)
    bob.stop()
    return bob, spec["options"], [lab_hosts[name] for name in spec["nodes"]]


@pytest.fixture
def mode(started_once, login):
    """started_once, with bob's server stopped and no Jupyter config in his overlay after each test."""
    bob, _, nodes = started_once
    yield started_once
    bob.stop()
    wait_for(lambda: not login.check_output("squeue -h -u bob -o %i"), what="bob's jobs gone")
    in_overlay(nodes[0], f"rm -f {CONFIG}")


def in_overlay(node, script: str) -> None:
    """Run script as bob in his overlay (the files his server sees in its $HOME), as his job would. A job
    Slurm has already forgotten may still be letting go of the overlay for a moment: then it tries again."""

    def run():
        return node.run(
            "runuser -u bob -- apptainer exec --contain --no-home --overlay %s %s sh -c %s",
            OVERLAY,
            SIF,
            f"mkdir -p /etc/jupyter && {script}",
        )

    deadline = time.monotonic() + 30
    while (result := run()).rc != 0:
        if "in use" not in result.stdout + result.stderr or time.monotonic() > deadline:
            raise AssertionError(f"in bob's overlay: {script}: {result.stderr.strip()}")
        time.sleep(1)


def put_config(node, text: str) -> None:
    in_overlay(node, f"printf '%s\\n' {shlex.quote(text)} > {CONFIG}")


def failed_start(bob, options: dict, timeout: float = 200) -> tuple[StartFailed, float]:
    """Start bob's server, which must fail: the error and the seconds from the request to the failure."""
    t0 = time.monotonic()
    with pytest.raises(StartFailed) as failure:
        bob.start(options=options, timeout=timeout)
    assert failure.value.status != 500, f"the spawn request answered HTTP 500: {failure.value.message}"
    return failure.value, time.monotonic() - t0


def next_start_works(bob, options: dict) -> None:
    bob.start(options=options, timeout=240)
    assert bob.user_get("/api/status").status_code == 200
    bob.stop()


def test_a_job_cancelled_a_second_after_submission(mode, login):
    bob, options, _ = mode
    # the spawn request waits up to 10 s for a quick start: it runs beside the watch for the job
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(bob.post, "/users/bob/server", json=options)
        job = wait_for(lambda: login.check_output("squeue -h -u bob -o %i"), timeout=30, interval=0.1, what="bob's job")
        time.sleep(1)
        login.check_output(f"scancel {job}")
        cancelled = time.monotonic()
        assert request.result().status_code in (201, 202, 503), request.result().text
    wait_for(lambda: not (bob.server() or {}).get("pending"), timeout=60, what="the start to fail")
    assert time.monotonic() - cancelled < PROMPT
    assert not (bob.server() or {}).get("ready")
    message = bob.spawn_failure()
    assert f"Slurm job {job} ended before its server" in message and "cancelled" in message, message
    next_start_works(bob, options)


def failed_start_with_config(mode, text: str) -> str:
    """What bob reads when his start fails with `text` in his Jupyter config; the config is removed after."""
    bob, options, nodes = mode
    put_config(nodes[0], text)
    try:
        failure, seconds = failed_start(bob, options)
    finally:
        in_overlay(nodes[0], f"rm -f {CONFIG}")
    assert seconds < 60, "the start failed when the job did, not at the 120 s start-up limit"
    return failure.message


def test_a_server_that_fails_at_start(mode):
    # (not port_retries: remote mode's wrapper sets that one on the command line, which wins)
    said = failed_start_with_config(mode, 'c.ServerApp.max_body_size = "many"')
    assert "the server failed (Bad config encountered during initialization: The 'max_body_size' trait" in said
    assert "/etc/jupyter" in said, "it says what bob can do"
    next_start_works(*mode[:2])


def test_an_image_missing_on_the_node(mode):
    bob, options, nodes = mode
    for node in nodes:
        node.check_output(f"mv {SIF} {SIF}.away")
    try:
        failure, seconds = failed_start(bob, options)
    finally:
        for node in nodes:
            node.check_output(f"mv {SIF}.away {SIF}")
    assert seconds < 30
    assert f"the image {SIF} is missing on" in failure.message and "choose another image" in failure.message
    next_start_works(bob, options)


def test_a_job_over_its_memory_limit_while_starting(mode):
    # 1.5 GiB touched and held while the server starts, in a job of 1 GB (profiles small and hpcown):
    # Slurm's memory enforcement ends the job
    said = failed_start_with_config(mode, "import time; _held = b'x' * (1536 * 2**20); time.sleep(60)")
    assert "it ran out of memory" in said and "choose more memory" in said, said
    next_start_works(*mode[:2])
