"""Apptainer and the site's notebook images in the lab: real SIF files, real Slurm jobs, real kernels."""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import PLAYBOOK, run_module, run_playbook, squeue_jobs, wait_for

pytestmark = pytest.mark.apptainer

SIF = "/opt/clusterhub/images/python.sif"
APPTAINER_HOSTS = ("login", "node1", "node2")
HASH_LABEL = "org.clusterhub.spec-hash"


@pytest.fixture(scope="module")
def apptainer_hosts(login, nodes):
    return dict(zip(APPTAINER_HOSTS, [login, *nodes], strict=True))


def conf(host) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in host.file("/etc/apptainer/apptainer.conf").content_string.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_apptainer_conf_is_hardened_on_every_host(apptainer_hosts):
    for name, host in apptainer_hosts.items():
        settings = conf(host)
        assert settings["mount hostfs"] == ["no"], name
        assert settings["allow setuid"] == ["no"], name
        assert settings["bind path"] == ["/etc/localtime", "/etc/hosts"], name
        # no setuid starter on disk either
        assert not host.check_output("find /usr/lib -name 'starter-suid' -perm -4000 2>/dev/null"), name


def test_a_container_cannot_see_the_host_shadow_file(nodes):
    node = nodes[0]
    host_shadow = node.check_output("grep '^alice:' /etc/shadow")
    assert host_shadow
    # the container's /etc/shadow is the image's own, for root and for alice: no host account in it
    for who in ("root", "alice"):
        inside = node.check_output(f"sudo -u {who} apptainer exec {SIF} cat /etc/shadow")
        assert "alice:" not in inside, who
    # and alice cannot bind the host's file in
    bound = node.run(f"sudo -u alice apptainer exec --bind /etc/shadow:/mnt/shadow {SIF} cat /mnt/shadow")
    assert bound.rc != 0 and "alice:" not in bound.stdout
    assert "Permission denied" in bound.stderr
    # the host's root file system is not mounted anywhere inside
    mounts = node.check_output(f"sudo -u alice apptainer exec {SIF} cat /proc/self/mounts")
    assert " /host" not in mounts and " /etc/shadow " not in mounts


def test_the_sif_is_the_same_on_the_build_host_and_every_node(apptainer_hosts):
    sums = {name: host.check_output(f"sha256sum {SIF}").split()[0] for name, host in apptainer_hosts.items()}
    assert len(set(sums.values())) == 1, sums
    labels = json.loads(apptainer_hosts["node1"].check_output(f"apptainer inspect --labels --json {SIF}"))
    assert len(labels["data"]["attributes"]["labels"][HASH_LABEL]) == 64


NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "metadata": {"tags": ["parameters"]},
            "source": "n = 1",
            "outputs": [],
            "execution_count": None,
        },
        {
            "cell_type": "code",
            "metadata": {},
            "source": "import os\nprint(n * 7, os.environ.get('APPTAINER_NAME'))",
            "outputs": [],
            "execution_count": None,
        },
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_papermill_runs_a_parameterised_notebook_in_the_sif_as_a_slurm_job(login):
    login.check_output("sudo -u alice mkdir -p /home/alice/papermill")
    login.check_output(
        f"printf %s {shlex.quote(json.dumps(NOTEBOOK))} | sudo -u alice tee /home/alice/papermill/in.ipynb >/dev/null"
    )
    job = f"apptainer exec {SIF} python -m papermill in.ipynb out.ipynb -p n 6"
    jobid = login.check_output(
        f"sudo -u alice sbatch --parsable --wait --chdir /home/alice/papermill -o run-%j.log --wrap {shlex.quote(job)}"
    ).strip()
    out = json.loads(login.file("/home/alice/papermill/out.ipynb").content_string)
    printed = "".join("".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", []))
    assert printed.strip() == "42 python.sif", login.file(f"/home/alice/papermill/run-{jobid}.log").content_string
    assert login.file("/home/alice/papermill/out.ipynb").user == "alice"


HUB = pytest.mark.skipif(PLAYBOOK != "playbooks/site.yml", reason="the scenario did not converge the hub")
OVERLAY = "/home/{user}/.clusterhub/{user}.img"
# the wrappers' play alone (its tag), on the direct mode's nodes: where a change of the overlay size applies
WRAPPERS_PLAY = ("playbooks/containers.yml", "--limit", "node1,node2", "--tags", "job_wrappers")


@HUB
def test_hub_server_in_the_image_runs_in_apptainer_on_a_node(hub_as, login):
    alice = hub_as("alice")
    alice.stop()
    try:
        alice.start(options={"profile": "small", "image": "python"})
        code = "import os, socket, sys; print(socket.gethostname(), os.environ.get('APPTAINER_NAME'), sys.prefix,"
        code += " os.getuid())"
        out = alice.run_code(code)
        host, name, prefix, uid = out.split()
        assert host in {"node1", "node2"}
        assert (name, prefix) == ("python.sif", "/opt/notebook")
        # the wrapper made alice's overlay on first use: hers, private, the configured size
        overlay = login.file(OVERLAY.format(user="alice"))
        assert (overlay.user, overlay.mode, overlay.size) == ("alice", 0o600, 256 * 2**20)
        assert int(uid) == login.user("alice").uid
    finally:
        alice.stop()
        wait_for(lambda: not squeue_jobs(login, "alice"), what="alice's job gone")


def test_a_failed_build_leaves_the_previous_sif_working(login):
    before = login.check_output(f"sha256sum {SIF}").split()[0]
    result = run_module(
        "login",
        "notebook_image",
        {
            "engine": "apptainer",
            "name": SIF,
            "debootstrap": {"suite": "trixie", "mirror": "http://deb.debian.org/debian"},
            "apt_packages": ["clusterhub-no-such-package"],
            "notebook_packages": ["jupyterlab==4.6.6", "papermill==2.7.0", "ipykernel==7.4.0"],
            "pip_packages": ["jupyterhub==6.1.1", "batchspawner==1.3.0"],
            "trust_host_ca": True,
        },
    )
    assert result.get("failed"), result
    assert "the previous image is unchanged" in result["msg"]
    assert "clusterhub-no-such-package" in result["msg"], "the build log's tail names the package"
    assert login.check_output(f"sha256sum {SIF}").split()[0] == before
    assert login.check_output(f"apptainer exec {SIF} jupyter lab --version") == "4.6.6"
    assert not login.check_output("ls -A /opt/clusterhub/images | grep -v '^python.sif$' || true")


@HUB
def test_the_overlay_home_survives_a_size_change_and_hides_other_users(hub_as, login, bob_overlay):
    alice = hub_as("alice")
    alice.stop()
    overlay = OVERLAY.format(user="alice")
    try:
        alice.start(options={"profile": "small", "image": "python"})
        out = alice.run_code(
            "import os; open(os.path.expanduser('~/keep.txt'), 'w').write('kept'); "
            "print(os.path.expanduser('~'), os.path.exists('/home/bob'), os.path.exists('/home/alice/.clusterhub'))"
        )
        assert out.split() == ["/home/alice", "False", "False"], "only her overlay: no host home, no bob"
        alice.stop()
        # the site doubles the overlay size and re-runs the wrappers' play: nothing is reformatted
        # (on the direct mode's nodes, where her server runs)
        result = run_playbook(*WRAPPERS_PLAY, "-e", "job_wrappers_overlay_size_mib=512")
        assert result.returncode == 0, result.stdout[-3000:]
        alice.start(options={"profile": "small", "image": "python"})
        assert alice.run_code("import os; print(open(os.path.expanduser('~/keep.txt')).read())").strip() == "kept"
        assert login.file(overlay).size == 256 * 2**20, "kept at its size until grown explicitly"
        log = login.file("/home/alice/.clusterhub/logs/alice/startjob.log").content_string
        assert "kept " + overlay in log and "clusterhub-overlay grow" in log
    finally:
        alice.stop()
        run_playbook(*WRAPPERS_PLAY)
        wait_for(lambda: not squeue_jobs(login, "alice"), what="alice's job gone")


@pytest.fixture
def bob_overlay(nodes):
    """bob has an overlay too (made by the wrapper's tool as bob), so there is something to hide."""
    nodes[0].check_output(
        "sudo -u bob mkdir -p -m 0700 /home/bob/.clusterhub && "
        "sudo -u bob clusterhub-overlay ensure /home/bob/.clusterhub/bob.img --size-mib 64 --home bob"
    )
    return "/home/bob/.clusterhub/bob.img"


def test_a_damaged_overlay_stops_only_that_users_start(nodes, login):
    node = nodes[0]
    node.check_output(
        "sudo -u bob mkdir -p -m 0700 /home/bob/.clusterhub && "
        "sudo -u bob clusterhub-overlay ensure /home/bob/.clusterhub/bob.img --size-mib 64 --home bob"
    )
    node.check_output("cp -a /home/bob/.clusterhub/bob.img /home/bob/.clusterhub/bob.img.good")
    try:
        node.check_output("debugfs -w -R 'clri <2>' /home/bob/.clusterhub/bob.img")
        bad = node.run(f"sudo -u bob clusterhub-startjob {SIF} true")
        assert bad.rc != 0
        assert "your server cannot start" in bad.stderr and "is damaged" in bad.stderr
        # alice is not affected
        assert node.run(f"sudo -u alice clusterhub-startjob {SIF} true").rc == 0
    finally:
        node.check_output("mv /home/bob/.clusterhub/bob.img.good /home/bob/.clusterhub/bob.img")


E2FSCK = "/usr/sbin/e2fsck"
E2FSCK_LOG = "/tmp/clusterhub-test-e2fsck-calls"


@pytest.fixture
def e2fsck_logged(nodes):
    """On both nodes, e2fsck logs each call (its arguments) to E2FSCK_LOG, then runs as always; restored after."""
    shim = f'#!/bin/sh\necho "$*" >> {E2FSCK_LOG}\nexec {E2FSCK}.clusterhub-test "$@"\n'
    for node in nodes:
        node.check_output(
            f"install -m 0666 /dev/null {E2FSCK_LOG} && cp -p {E2FSCK} {E2FSCK}.clusterhub-test && "
            f"printf %s {shlex.quote(shim)} > {E2FSCK}.new && chmod 0755 {E2FSCK}.new && mv {E2FSCK}.new {E2FSCK}"
        )
    yield lambda node: node.file(E2FSCK_LOG).content_string
    for node in nodes:
        node.check_output(f"mv {E2FSCK}.clusterhub-test {E2FSCK} && rm -f {E2FSCK_LOG}")


@HUB
@pytest.mark.security
def test_a_live_overlay_is_never_grown_or_checked_and_grows_once_the_server_stops(hub_as, login, nodes, e2fsck_logged):
    """While alice's server runs, its overlay's lock is held (by the job's wrapper and apptainer): `grow` (as alice
    and as root), `check` and a second server's start on it all refuse, saying to stop the server first, and none
    of them runs e2fsck on the mounted file or changes it. Once the server has stopped, grow works."""
    alice = hub_as("alice")
    alice.stop()
    overlay = OVERLAY.format(user="alice")
    backup = overlay + ".before-grow-test"
    grow = f"clusterhub-overlay grow {overlay} --size-mib 512"
    try:
        alice.start(options={"profile": "small", "image": "python"})
        (job,) = squeue_jobs(login, "alice")
        host = alice.run_code("import socket; print(socket.gethostname())").strip()
        node = nodes[0] if host == "node1" else nodes[1]
        stat = f"stat -c '%i %s %Y' {overlay}"
        before = node.check_output(stat)
        checks_at_start = e2fsck_logged(node)  # the start's own check, before the server mounted it
        busy = f"{overlay} is in use by a running server (job {job}); stop the server first, then "
        for attempt in (f"runuser -u alice -- {grow}", grow):
            refused = node.run(attempt)
            assert (refused.rc, refused.stderr.strip()) == (4, f"clusterhub-overlay: {busy}grow it"), attempt
        refused = node.run(f"runuser -u alice -- clusterhub-overlay check {overlay}")
        assert (refused.rc, refused.stderr.strip()) == (4, f"clusterhub-overlay: {busy}check it")
        second = node.run(f"runuser -u alice -- clusterhub-startjob {SIF} true")
        assert second.rc != 0 and f"(job {job}); stop that server first, then start this one" in second.stderr
        assert node.check_output(stat) == before, "the live overlay is unchanged"
        assert e2fsck_logged(node) == checks_at_start, "no damage check read the live overlay"
        assert alice.run_code("print(6 * 7)").strip() == "42", "the server kept working"
        alice.stop()
        wait_for(lambda: not squeue_jobs(login, "alice"), what="alice's job gone")
        # the server's processes let go of the lock as they end; then grow works, on a copy swapped in
        wait_for(lambda: node.run(f"flock -n {overlay}.lock true").rc == 0, timeout=30, what="the lock released")
        node.check_output(f"cp --sparse=always -p {overlay} {backup}")
        grown = node.run(f"runuser -u alice -- {grow}")
        assert grown.rc == 0 and f"grew {overlay} from 256 to 512 MiB" in grown.stdout, grown.stderr
        assert f"-f -n {overlay}" in e2fsck_logged(node)[len(checks_at_start) :], "checked once nothing has it"
        assert node.run(f"runuser -u alice -- clusterhub-overlay check {overlay}").rc == 0
        alice.start(options={"profile": "small", "image": "python"})
        size = alice.run_code("import os; s = os.statvfs(os.path.expanduser('~')); print(s.f_blocks * s.f_frsize)")
        assert int(size) > 400 * 2**20, "her server has the grown overlay"
    finally:
        alice.stop()
        wait_for(lambda: not squeue_jobs(login, "alice"), what="alice's job gone")
        # her overlay as it was before the grow (the test's own change undone)
        for node in nodes:
            if node.file(backup).exists:
                wait_for(lambda n=node: n.run(f"flock -n {overlay}.lock true").rc == 0, timeout=30, what="the lock")
                node.check_output(f"mv {backup} {overlay}")


def test_maintenance_switch_stops_a_start_with_its_message(nodes):
    node = nodes[0]
    node.check_output("echo 'Back at 14:00.' > /etc/clusterhub/maintenance")
    try:
        result = node.run(f"sudo -u alice clusterhub-startjob {SIF} true")
        assert result.rc == 75
        assert "maintenance: Back at 14:00." in result.stderr
    finally:
        node.check_output("rm -f /etc/clusterhub/maintenance")


@HUB
def test_the_docker_image_of_the_same_spec_runs_papermill_too(hub, login):
    """notebook_images built the lab's one spec twice: a SIF (above) and a Docker image on the hub."""
    login.check_output("sudo -u alice mkdir -p /home/alice/papermill-docker")
    login.check_output(
        f"printf %s {shlex.quote(json.dumps(NOTEBOOK))} | sudo -u alice tee /home/alice/papermill-docker/in.ipynb"
        " >/dev/null"
    )
    labels = json.loads(hub.check_output("docker image inspect clusterhub/python:latest"))[0]["Config"]["Labels"]
    assert len(labels[HASH_LABEL]) == 64
    hub.check_output(
        "docker run --rm --network none --user 2001:2001 -v /home/alice/papermill-docker:/work -w /work "
        "clusterhub/python:latest python -m papermill in.ipynb out.ipynb -p n 6"
    )
    out = json.loads(login.file("/home/alice/papermill-docker/out.ipynb").content_string)
    printed = "".join("".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", []))
    assert printed.strip() == "42 None"
