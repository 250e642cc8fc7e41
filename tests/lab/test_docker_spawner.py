"""GPU workstation mode: servers in Docker containers on the hub host, next to Slurm profiles in one form.

Real containers on the hub's Docker engine (nested in the lab's hub container), started through the
hub's REST API as users do; checks run inside them with a kernel and with `docker exec`.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import wait_for

pytestmark = pytest.mark.docker

PROFILE = "workstation"
IMAGE = "clusterhub/python:latest"
CONTAINER = "jupyter-bob"
SHARED = "/srv/shared"
HEALTH = "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/hub/health')\""
PIDS_LIMIT = 1024  # jupyterhub_docker_pids_limit's default (the lab keeps it)
MEMORY_GB = 2  # the workstation profile's memory_gb
# A fork bomb bounded in time: every process forks as fast as it can, retries when the kernel refuses,
# and ends after 20 s (each child inherits the deadline); the count of refused forks goes to stdout.
FORK_BOMB = (
    "import os, sys, time\n"
    "end, refused, parent = time.time() + 20, 0, os.getpid()\n"
    "while time.time() < end:\n"
    "    try:\n"
    "        os.fork()\n"
    "    except OSError:\n"
    "        refused += 1\n"
    "        time.sleep(0.05)\n"
    "if os.getpid() == parent:\n"
    "    print('refused', refused, flush=True)\n"
)
# Takes memory 64 MiB at a time (written, so it is really used), saying how much it holds after each step.
MEMORY_HOG = (
    "import sys\nheld = []\nwhile True:\n    held.append(b'x' * (64 << 20))\n    print(len(held) * 64, flush=True)\n"
)


def containers(hub, user: str) -> list[str]:
    """Names of the user's server containers on the hub's Docker engine (running or not)."""
    out = hub.check_output(f"docker ps -a --filter label=org.clusterhub.user={user} --format '{{{{.Names}}}}'")
    return out.split()


def inspect(hub, name: str) -> dict:
    return json.loads(hub.check_output(f"docker inspect {name}"))[0]


@pytest.fixture
def bob(hub_as, hub):
    client = hub_as("bob")
    client.stop()
    yield client
    client.stop()
    wait_for(lambda: not containers(hub, "bob"), what="bob's container removed after stop")


def test_bob_container_runs_the_configured_image_as_bob(bob, hub):
    seconds = bob.start(options={"profile": PROFILE})
    assert containers(hub, "bob") == [CONTAINER]
    info = inspect(hub, CONTAINER)
    assert info["Config"]["Image"] == IMAGE
    uid = hub.user("bob").uid
    gid = hub.user("bob").gid
    assert info["Config"]["User"] == f"{uid}:{gid}"
    assert info["HostConfig"]["NetworkMode"] == "jupyterhub"
    assert info["HostConfig"]["DeviceRequests"] in (None, [])  # no GPU asked, none given
    # a kernel in the container answers with bob's uid and his home
    out = bob.run_code("import os, socket; print(os.getuid(), os.environ['HOME'], os.environ['JUPYTER_IMAGE_SPEC'])")
    assert out.split() == [str(uid), "/home/bob", IMAGE]
    assert hub.check_output(f"docker exec {CONTAINER} id -u") == str(uid)
    print(f"docker spawn ready in {seconds:.1f} s")


def test_home_is_bobs_and_survives_stop_start_and_a_hub_restart(bob, hub):
    bob.start(options={"profile": PROFILE})
    bob.run_code("open('/home/bob/kept-in-docker.txt', 'w').write('still here')")
    # written as bob on the host's home, no permission fix needed
    assert hub.file("/home/bob/kept-in-docker.txt").user == "bob"
    bob.stop()
    wait_for(lambda: not containers(hub, "bob"), what="the container removed on stop")
    bob.start(options={"profile": PROFILE})
    assert bob.run_code("print(open('/home/bob/kept-in-docker.txt').read())").strip() == "still here"
    container_id = inspect(hub, CONTAINER)["Id"]
    hub.check_output("systemctl restart jupyterhub")
    wait_for(lambda: hub.run(HEALTH).rc == 0, what="the hub back")
    server = wait_for(bob.server, what="bob's server listed after the restart")
    assert server["ready"]
    assert inspect(hub, CONTAINER)["Id"] == container_id  # the same container, found again
    assert bob.run_code("print(open('/home/bob/kept-in-docker.txt').read())").strip() == "still here"
    hub.run("rm -f /home/bob/kept-in-docker.txt")


def test_shared_folder_is_read_only_inside(bob, hub):
    hub.check_output(f"echo shared-data > {SHARED}/readme.txt")
    bob.start(options={"profile": PROFILE})
    assert bob.run_code("print(open('/shared/readme.txt').read())").strip() == "shared-data"
    refused = bob.run_code(
        "try:\n    open('/shared/mine.txt', 'w')\nexcept OSError as e:\n    print('refused', e.errno)\nelse:\n"
        "    print('written')"
    )
    assert refused.split()[0] == "refused", refused
    assert hub.run(f"docker exec {CONTAINER} touch /shared/x").rc != 0
    mounts = {m["Destination"]: m for m in inspect(hub, CONTAINER)["Mounts"]}
    assert mounts["/shared"]["RW"] is False and mounts["/home/bob"]["RW"] is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"profile": PROFILE, "docker_gpus": "1"},
            "1 GPUs requested; the Docker host has no GPUs configured (jupyterhub_docker_gpus is 0)",
        ),
        ({"profile": PROFILE, "docker_gpus": "all"}, "all GPUs requested; the Docker host has no GPUs configured"),
        ({"profile": PROFILE, "docker_image": "ubuntu:latest"}, "unknown Docker image 'ubuntu:latest'"),
        ({"profile": PROFILE, "docker_gpus": "1; rm -rf /"}, "docker_gpus must be a number"),
    ],
    ids=["one-gpu", "all-gpus", "unknown-image", "shell"],
)
def test_bad_docker_requests_are_refused_before_any_container(bob, hub, options, message):
    r = bob.post("/users/bob/server", json=options)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert containers(hub, "bob") == []
    assert bob.server() is None


def test_form_shows_slurm_and_docker_profiles_together(bob):
    page = bob.session.get(f"{bob.url}/hub/spawn")
    assert page.status_code == 200
    found = {slug: kind for kind, slug in re.findall(r'data-kind="(\w+)"><input [^>]*value="([\w-]+)"', page.text)}
    assert found.get("small") == "slurm" and found.get(PROFILE) == "docker", found
    assert "Docker: Python 3 (JupyterLab, papermill)" in page.text


def cgroup_file(hub, container_id: str, *names: str) -> str:
    """The first of these files of the container's cgroup as the hub host sees it (cgroup v1 or v2): read from
    outside, since a container at its pids limit cannot start a `cat` of its own."""
    for name in names:
        path = hub.check_output(
            f"find /sys/fs/cgroup -maxdepth 6 -type f -name {name} -path '*{container_id}*' 2>/dev/null | head -1"
        )
        if path:
            return path
    raise AssertionError(f"none of {', '.join(names)} in the cgroup of container {container_id[:12]}")


def hub_answers(client) -> float:
    """Seconds the hub API takes to answer GET /hub/api/ (its version) and bob's own record."""
    t0 = time.monotonic()
    assert client.get("/", timeout=5).json()["version"]
    assert client.get("/users/bob", timeout=5).json()["name"] == "bob"
    return time.monotonic() - t0


def test_container_limits_are_set_from_the_profile(bob, hub):
    bob.start(options={"profile": PROFILE})
    host_config = inspect(hub, CONTAINER)["HostConfig"]
    assert host_config["PidsLimit"] == PIDS_LIMIT
    assert host_config["Memory"] == MEMORY_GB << 30
    assert host_config["MemorySwap"] == host_config["Memory"]  # no swap beyond the memory limit
    assert (host_config["CpuQuota"], host_config["CpuPeriod"]) == (100_000, 100_000)  # the profile's 1 CPU
    assert host_config["Init"] is True  # an init as PID 1 reaps orphaned processes
    assert "no-new-privileges" in host_config["SecurityOpt"] and host_config["CapDrop"] == ["ALL"]


@pytest.mark.security
def test_a_fork_bomb_stops_at_the_containers_pids_limit_and_the_hub_keeps_answering(bob, hub):
    bob.start(options={"profile": PROFILE})
    container_id = inspect(hub, CONTAINER)["Id"]
    pids_max = cgroup_file(hub, container_id, "pids.max")
    pids_current = cgroup_file(hub, container_id, "pids.current")
    assert hub.check_output(f"cat {pids_max}") == str(PIDS_LIMIT)
    latencies, peak = [], 0
    with ThreadPoolExecutor(1) as pool:
        # as bob, inside his container, the way a program of his would
        bomb = pool.submit(hub.run, "docker exec %s python3 -c %s", CONTAINER, FORK_BOMB)
        deadline = time.monotonic() + 18
        while time.monotonic() < deadline and not bomb.done():
            peak = max(peak, int(hub.check_output(f"cat {pids_current}")))
            latencies.append(hub_answers(bob))
            time.sleep(1)
        result = bomb.result(timeout=60)
    print(
        f"fork bomb: peak {peak} of {PIDS_LIMIT} pids; hub API answered {len(latencies)} times, "
        f"slowest {max(latencies):.2f} s; {result.stdout.strip()}"
    )
    assert peak == PIDS_LIMIT  # the bomb reached the container's limit ...
    assert int(result.stdout.split()[-1]) > 0, result.stdout + result.stderr  # ... and the kernel refused forks
    assert len(latencies) >= 5 and max(latencies) < 5  # the hub answered all along
    # the bomb is over: bob's server works again, in the same container
    wait_for(lambda: int(hub.check_output(f"cat {pids_current}")) < 50, what="the bomb's processes gone")
    assert bob.run_code("print(6 * 7)").strip() == "42"
    bob.stop()
    wait_for(lambda: not containers(hub, "bob"), what="bob's container removed after stop")
    assert hub.run("pgrep -u bob").rc == 1, hub.check_output("ps -u bob -o pid,cmd")  # nothing of bob left
    assert hub.run(f"find /sys/fs/cgroup -maxdepth 6 -type d -path '*{container_id}*' | grep -q .").rc == 1


@pytest.mark.security
def test_a_memory_hog_is_killed_at_the_containers_limit_and_the_hub_keeps_answering(bob, hub):
    bob.start(options={"profile": PROFILE})
    container_id = inspect(hub, CONTAINER)["Id"]
    with ThreadPoolExecutor(1) as pool:
        hog = pool.submit(hub.run, "docker exec %s timeout 60 python3 -c %s", CONTAINER, MEMORY_HOG)
        latencies = [hub_answers(bob)]
        while not hog.done():
            latencies.append(hub_answers(bob))
            time.sleep(0.5)
        result = hog.result()
    held_mb = int(result.stdout.split()[-1]) if result.stdout.split() else 0
    print(f"memory hog: rc {result.rc} after holding {held_mb} MiB; hub API slowest {max(latencies):.2f} s")
    assert result.rc == 137  # SIGKILL: the kernel's OOM killer, inside the container's cgroup
    assert 0 < held_mb <= MEMORY_GB * 1024  # never more than the limit (and no swap to go beyond it)
    assert max(latencies) < 5
    events = hub.check_output(f"cat {cgroup_file(hub, container_id, 'memory.events', 'memory.oom_control')}")
    assert int(re.search(r"oom_kill (\d+)", events).group(1)) >= 1, events
    # only the hog was killed: bob's server still runs his code
    assert bob.run_code("print(6 * 7)").strip() == "42"
    assert hub_answers(bob) < 5
