"""GPU workstation mode: servers in Docker containers on the hub host, next to Slurm profiles in one form.

Real containers on the hub's Docker engine (nested in the lab's hub container), started through the
hub's REST API as users do; checks run inside them with a kernel and with `docker exec`.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import wait_for

pytestmark = pytest.mark.docker

PROFILE = "workstation"
IMAGE = "clusterhub/python:latest"
CONTAINER = "jupyter-bob"
SHARED = "/srv/shared"
HEALTH = "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/hub/health')\""


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
