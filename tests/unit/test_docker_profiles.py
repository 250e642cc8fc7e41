"""Docker profiles next to Slurm ones: the site's rules, users' requests, the form, and the dispatcher's state
(src/clusterhub/hub/request.py, rules.py, form.py and kinds.py)."""

import pytest
from clusterhub_rules import jupyterhub_profile_errors

from clusterhub.hub.form import render_form
from clusterhub.hub.kinds import (
    GpusBusy,
    assign_gpus,
    child_kind,
    child_state,
    device_requests,
    held_gpus,
    host_gpu_ids,
    wrap_state,
)
from clusterhub.hub.request import OptionsError, docker_gpus, validate_options
from clusterhub.hub.rules import config_errors

PARTS = [{"name": "jupyter", "max_cpus": 4, "max_memory_gb": 8, "max_hours": 12, "max_gpus": 0}]
DOCKER_IMAGES = [
    {"name": "notebook", "display_name": "Debian, JupyterLab", "image": "clusterhub/notebook:lab"},
    {"name": "torch", "display_name": "PyTorch", "image": "site/torch:2.5"},
]
PROFILES = [
    {"slug": "small", "partition": "jupyter", "cpus": 1, "memory_gb": 2, "hours": 2},
    {"slug": "ws", "kind": "docker", "image": "notebook", "cpus": 2, "memory_gb": 4},
    {"slug": "ws-gpu", "kind": "docker", "image": "torch", "cpus": 8, "memory_gb": 32, "gpus": "all"},
    {"slug": "ws-1gpu", "kind": "docker", "image": "torch", "cpus": 4, "memory_gb": 16, "gpus": 1},
]
GPU_HOST = {"images": DOCKER_IMAGES, "gpus": 2}
NO_GPU_HOST = {"images": DOCKER_IMAGES, "gpus": 0}


@pytest.mark.parametrize(
    ("raw", "host", "expected"),
    [
        ({"profile": "ws"}, NO_GPU_HOST, ("docker", "notebook", 2, 4, 0)),
        ({"profile": "ws", "docker_image": "torch"}, NO_GPU_HOST, ("docker", "torch", 2, 4, 0)),
        ({"profile": "ws-gpu"}, GPU_HOST, ("docker", "torch", 8, 32, "all")),
        ({"profile": "ws-1gpu"}, GPU_HOST, ("docker", "torch", 4, 16, 1)),
        ({"profile": "ws", "docker_gpus": "2"}, GPU_HOST, ("docker", "notebook", 2, 4, 2)),
        ({"profile": "ws", "docker_gpus": "all"}, GPU_HOST, ("docker", "notebook", 2, 4, "all")),
        ({"profile": "ws-gpu", "docker_gpus": "0"}, GPU_HOST, ("docker", "torch", 8, 32, 0)),
        ({"profile": "ws-gpu", "docker_gpus": ""}, GPU_HOST, ("docker", "torch", 8, 32, "all")),
        # the Slurm form's own fields never leak into a docker request
        ({"profile": "ws", "gpus": "1", "cpus": "64", "partition": "x"}, NO_GPU_HOST, ("docker", "notebook", 2, 4, 0)),
        ({"profile": "small"}, GPU_HOST, ("slurm", "", 1, 2, 0)),
    ],
    ids=[
        "profile",
        "image-choice",
        "all-gpus",
        "one-gpu",
        "gpu-count",
        "gpu-all",
        "no-gpu",
        "blank",
        "slurm-fields",
        "slurm",
    ],
)
def test_requests_become_validated_docker_or_slurm_requests(raw, host, expected):
    req = validate_options(raw, PROFILES, PARTS, docker=host)
    assert (req.kind, req.image, req.cpus, req.memory_gb, req.gpus) == expected


@pytest.mark.parametrize(
    ("raw", "host", "message"),
    [
        (
            {"profile": "ws", "docker_gpus": "1"},
            NO_GPU_HOST,
            "1 GPUs requested; the Docker host has no GPUs configured (jupyterhub_docker_gpus is 0)",
        ),
        (
            {"profile": "ws", "docker_gpus": "all"},
            NO_GPU_HOST,
            "all GPUs requested; the Docker host has no GPUs configured",
        ),
        ({"profile": "ws-gpu"}, NO_GPU_HOST, "the Docker host has no GPUs configured"),
        ({"profile": "ws", "docker_gpus": "3"}, GPU_HOST, "3 GPUs requested; the Docker host has 2 GPUs"),
        ({"profile": "ws", "docker_gpus": "-1"}, GPU_HOST, "docker_gpus must be a number"),
        ({"profile": "ws", "docker_gpus": "1.5"}, GPU_HOST, "docker_gpus must be a number"),
        ({"profile": "ws", "docker_gpus": "1; reboot"}, GPU_HOST, "docker_gpus must be a number"),
        ({"profile": "ws", "docker_image": "ubuntu:latest"}, GPU_HOST, "unknown Docker image 'ubuntu:latest'"),
        ({"profile": "ws", "docker_image": "clusterhub/notebook:lab"}, GPU_HOST, "unknown Docker image"),
        ({"profile": "ws"}, {"images": [], "gpus": 0}, "unknown Docker image 'notebook'; choose one of none"),
    ],
    ids=[
        "count",
        "all",
        "profile-gpus",
        "too-many",
        "negative",
        "fraction",
        "shell",
        "image",
        "reference",
        "no-images",
    ],
)
def test_docker_requests_outside_the_rules_are_refused(raw, host, message):
    with pytest.raises(OptionsError) as e:
        validate_options(raw, PROFILES, PARTS, docker=host)
    assert message in str(e.value)


def test_docker_request_round_trips_through_user_options():
    req = validate_options(
        {"profile": "ws", "docker_image": "torch", "docker_gpus": "1"}, PROFILES, PARTS, docker=GPU_HOST
    )
    again = validate_options(req.as_user_options(), PROFILES, PARTS, docker=GPU_HOST)
    assert again == req
    assert req.as_user_options()["image"] == "torch"


@pytest.mark.parametrize(
    ("profiles", "host", "message"),
    [
        (
            [{"slug": "w", "kind": "docker", "image": "nope"}],
            GPU_HOST,
            "image 'nope' is not in jupyterhub_docker_images",
        ),
        (
            [{"slug": "w", "kind": "docker"}],
            {"images": [], "gpus": 0},
            "needs jupyterhub_docker_images, which is empty",
        ),
        ([{"slug": "w", "kind": "docker", "gpus": 1}], NO_GPU_HOST, "no GPUs configured (jupyterhub_docker_gpus is 0)"),
        ([{"slug": "w", "kind": "docker", "gpus": "all"}], NO_GPU_HOST, "no GPUs configured"),
        ([{"slug": "w", "kind": "docker", "gpus": 4}], GPU_HOST, "4 GPUs requested; the Docker host has 2 GPUs"),
        ([{"slug": "w", "kind": "docker", "gpus": "some"}], GPU_HOST, "gpus must be a number"),
        ([{"slug": "w", "kind": "docker", "cpus": 0}], GPU_HOST, "cpus must be a whole number of at least 1"),
        ([{"slug": "w", "kind": "docker", "memory_gb": "4"}], GPU_HOST, "memory_gb must be a whole number"),
        ([{"slug": "w", "kind": "kubernetes"}], GPU_HOST, "kind 'kubernetes' is not one of slurm, docker"),
        ([], {"images": DOCKER_IMAGES, "gpus": -1}, "jupyterhub_docker_gpus must be a whole number, 0 or more"),
    ],
    ids=[
        "image",
        "no-images",
        "gpus-no-host",
        "all-no-host",
        "too-many",
        "word",
        "cpus",
        "memory",
        "kind",
        "host-gpus",
    ],
)
def test_site_docker_profile_errors_name_the_variable(profiles, host, message):
    errors = config_errors(profiles, PARTS, [], host)
    assert any(message in e for e in errors), errors
    assert all(e.startswith(("jupyterhub_profiles (w)", "jupyterhub_docker_gpus")) for e in errors), errors


def test_good_mixed_configurations_have_no_errors():
    assert config_errors(PROFILES, PARTS, [], GPU_HOST) == []
    # a Docker-only hub needs no partitions
    assert config_errors(PROFILES[1:2], [], [], NO_GPU_HOST) == []
    # the inventory filter applies the same rules
    assert jupyterhub_profile_errors(PROFILES, PARTS, [], GPU_HOST) == []
    assert "no GPUs configured" in " ".join(jupyterhub_profile_errors(PROFILES, PARTS, [], NO_GPU_HOST))


def test_form_offers_slurm_and_docker_profiles_together():
    html = render_form(PROFILES, PARTS, docker=GPU_HOST)
    assert html.count('data-kind="slurm"') == 1 and html.count('data-kind="docker"') == 3
    assert 'value="ws"' in html and 'value="small"' in html
    assert "Docker: PyTorch" in html and "all GPUs" in html
    assert 'name="docker_image"' in html and 'name="docker_gpus"' in html
    no_gpu = render_form(PROFILES[:2], PARTS, docker={"images": DOCKER_IMAGES[:1], "gpus": 0})
    assert 'name="docker_gpus"' not in no_gpu and 'name="docker_image"' not in no_gpu


@pytest.mark.parametrize(
    ("ids", "requests"),
    [
        ([], []),
        (["1"], [{"device_ids": ["1"], "capabilities": [["gpu"]]}]),
        (["0", "1"], [{"device_ids": ["0", "1"], "capabilities": [["gpu"]]}]),
    ],
)
def test_assigned_gpus_become_device_requests_by_id_never_a_count(ids, requests):
    assert device_requests(ids) == requests


TWO_GPUS = host_gpu_ids(2)


def container(*device_requests, status="running"):
    """A container as `docker inspect` shows it (the fields held_gpus reads)."""
    return {"State": {"Status": status}, "HostConfig": {"DeviceRequests": list(device_requests) or None}}


def by_ids(*ids):
    return {"Driver": "", "Count": 0, "DeviceIDs": list(ids), "Capabilities": [["gpu"]], "Options": {}}


def by_count(count):
    return {"Driver": "", "Count": count, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}


def start(gpus, running):
    """What the spawner does at a start: the GPUs held by the hub's containers, read again, then the assignment."""
    ids = assign_gpus(gpus, TWO_GPUS, held_gpus(running, TWO_GPUS))
    running.append(container(by_ids(*ids)) if ids else container())
    return ids


def test_two_users_asking_one_gpu_each_get_different_gpus_and_a_third_is_refused():
    assert TWO_GPUS == ["0", "1"]
    running = []
    alice, bob = start(1, running), start(1, running)
    assert len(alice) == len(bob) == 1 and alice != bob
    with pytest.raises(GpusBusy) as e:
        start(1, running)
    assert str(e.value) == "all GPUs of this workstation are in use, try again later or ask for fewer"
    assert len(running) == 2  # the refused start made no container


def test_released_gpus_are_reused():
    running = []
    start(1, running)
    start(1, running)
    running.pop(0)  # the first server stopped: its container is removed
    assert start(1, running) == ["0"]
    running[0]["State"]["Status"] = "exited"  # the second one ended (not removed yet): it holds nothing
    assert start(1, running) == ["1"]


def test_no_gpu_requests_need_no_free_gpu():
    running = [container(by_ids("0", "1"))]
    assert assign_gpus(0, TWO_GPUS, held_gpus(running, TWO_GPUS)) == []


def test_all_gpus_take_every_gpu_only_when_every_gpu_is_free():
    assert assign_gpus("all", TWO_GPUS, set()) == ["0", "1"]
    with pytest.raises(GpusBusy, match="only 1 of the 2 GPUs of this workstation is free and 2 were asked for"):
        assign_gpus("all", TWO_GPUS, {"1"})
    with pytest.raises(GpusBusy, match="try again later or ask for fewer"):
        assign_gpus(2, TWO_GPUS, {"0"})
    assert assign_gpus(1, TWO_GPUS, {"0"}) == ["1"]


@pytest.mark.parametrize(
    ("containers", "held"),
    [
        ([], set()),
        ([container(by_ids("1"))], {"1"}),
        ([container(by_ids("0")), container(by_ids("1"), status="created")], {"0", "1"}),
        ([container(by_ids("1"), status="paused")], {"1"}),
        ([container(by_ids("1"), status="exited")], set()),
        ([container(by_ids("1"), status="dead")], set()),
        ([container()], set()),  # a container without GPUs
        ([container(by_count(-1))], {"0", "1"}),  # made before GPUs were assigned: 'all' holds every GPU
        ([container(by_count(1))], {"0"}),  # ... and a count the first ones
        ([container({"Driver": "nvidia", "Count": 0, "DeviceIDs": ["1"], "Capabilities": None})], {"1"}),
        ([container({"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["tpu"]]})], set()),
        ([container(by_ids("GPU-1a2b", "7"))], set()),  # not devices of jupyterhub_docker_gpus
        ([{"State": {"Status": "running"}, "HostConfig": {}}], set()),
    ],
    ids=[
        "none",
        "ids",
        "created",
        "paused",
        "exited",
        "dead",
        "no-gpu",
        "legacy-all",
        "legacy-count",
        "nvidia-driver",
        "other-device",
        "foreign-ids",
        "no-requests",
    ],
)
def test_gpus_held_are_read_from_the_containers_host_config(containers, held):
    """After a hub restart the assignment is known again from what Docker reports, nothing kept in the hub."""
    assert held_gpus(containers, TWO_GPUS) == held


def test_a_host_without_gpus_has_no_device_ids():
    assert host_gpu_ids(0) == [] and host_gpu_ids(-1) == []
    assert assign_gpus(0, [], set()) == []


@pytest.mark.parametrize(
    ("state", "kind", "inner"),
    [
        ({}, "", {}),
        ({"job_id": "42", "job_status": "RUNNING node1"}, "slurm", {"job_id": "42", "job_status": "RUNNING node1"}),
        (
            {"kind": "docker", "child": {"object_id": "abc", "object_name": "jupyter-bob"}},
            "docker",
            {"object_id": "abc", "object_name": "jupyter-bob"},
        ),
        ({"kind": "slurm", "child": {"job_id": "7"}}, "slurm", {"job_id": "7"}),
    ],
    ids=["none", "legacy-slurm", "docker", "slurm"],
)
def test_persisted_state_names_the_kind_and_keeps_the_child_state(state, kind, inner):
    assert child_kind(state) == kind
    if kind:
        assert child_state(state) == inner
        assert wrap_state(kind, child_state(state)) == {"kind": kind, "child": inner}


def test_docker_gpus_accepts_counts_and_all_within_the_host():
    assert docker_gpus("all", 1) == "all"
    assert docker_gpus(0, 0) == 0
    assert docker_gpus("2", 2) == 2
    assert wrap_state("docker", {}) == {}
