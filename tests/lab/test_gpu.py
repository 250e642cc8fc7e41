"""The lab's GPU node (node2): a container with the driver packages and no GPU, no kernel module.

What a site without a loadable module sees: the driver installed, nvidia-smi failing, gpu_validate
naming the cause, the play going on with a reason. The container toolkit's repository is out of the
lab's reach, so its install stops naming it, and only its configuration (daemon.json) runs.
"""

from __future__ import annotations

import json

import pytest
from conftest import lab_host, recap_changed, run_playbook

pytestmark = pytest.mark.gpu

DAEMON_JSON = "/etc/docker/daemon.json"
TOOLKIT_REPO = "https://nvidia.github.io/libnvidia-container/stable/deb/amd64"
# A site's own settings, in a layout Ansible would not write.
SITE_DAEMON_JSON = '{"log-driver": "json-file", "log-opts": {"max-size": "10m"}, "features": {"buildkit": true}}\n'


@pytest.fixture(scope="module")
def node2():
    return lab_host("node2")


@pytest.fixture
def staged_daemon_json(node2):
    """A daemon.json with foreign keys on node2 (no Docker there in the lab); removed afterwards."""
    node2.check_output(f"mkdir -p /etc/docker && printf '%s' '{SITE_DAEMON_JSON}' > {DAEMON_JSON}")
    yield DAEMON_JSON
    node2.check_output("rm -rf /etc/docker")


def gpu_play(*args: str):
    return run_playbook("playbooks/gpu.yml", "--limit", "node2", *args)


def toolkit_play(*args: str):
    """The toolkit's play of gpu.yml alone (its tag): what the daemon.json and repository cases exercise."""
    return gpu_play("--tags", "nvidia_container_toolkit", *args)


def test_nvidia_smi_is_installed_but_reaches_no_driver(node2):
    smi = node2.run("nvidia-smi")
    assert smi.rc != 0
    assert "couldn't communicate with the NVIDIA driver" in smi.stdout + smi.stderr


def test_gpu_validate_names_the_missing_kernel_driver():
    result = run_playbook("playbooks/validate-gpus.yml", "--limit", "node2")
    assert result.returncode != 0
    assert "node2: driver package installed but no NVIDIA kernel driver loaded" in result.stdout


def test_modprobe_refuses_nouveau(node2):
    config = node2.check_output("modprobe --showconfig").splitlines()
    assert "blacklist nouveau" in config
    assert "options nouveau modeset=0" in config


def test_persistence_daemon_is_enabled_for_the_next_boot(node2):
    assert node2.check_output("systemctl is-enabled nvidia-persistenced") == "enabled"


def test_converged_play_changes_nothing_and_says_why_the_module_is_not_loaded():
    result = gpu_play()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "NVIDIA kernel module not loaded: running in a container" in result.stdout
    assert recap_changed(result.stdout)["node2"] == 0


def test_daemon_json_keeps_foreign_keys_and_gains_the_runtime(node2, staged_daemon_json):
    first = toolkit_play()
    assert first.returncode == 0, first.stdout[-3000:]
    merged = json.loads(node2.file(staged_daemon_json).content_string)
    assert merged["log-opts"] == {"max-size": "10m"}
    assert merged["features"] == {"buildkit": True}
    assert merged["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}
    assert "default-runtime" not in merged
    second = toolkit_play()
    assert second.returncode == 0
    assert recap_changed(second.stdout)["node2"] == 0


def test_invalid_daemon_json_is_refused_and_left_alone(node2, staged_daemon_json):
    broken = '{"log-driver": "json-file",\n'
    node2.check_output(f"printf '%s' '{broken}' > {staged_daemon_json}")
    result = toolkit_play()
    assert result.returncode != 0
    assert f"{staged_daemon_json} is not valid JSON" in result.stdout
    assert node2.file(staged_daemon_json).content_string == broken


def test_toolkit_install_without_its_repository_stops_naming_it_and_changes_nothing(node2):
    snapshot = "ls -l /etc/apt/sources.list.d /etc/apt/keyrings; dpkg-query -W -f '${Package} ${Version}\\n'"
    before = node2.check_output(snapshot)
    result = toolkit_play("-e", json.dumps({"nvidia_container_toolkit_install": True}))
    assert result.returncode != 0
    assert "NVIDIA's container toolkit repository cannot be reached from node2" in result.stdout
    assert f"{TOOLKIT_REPO}/InRelease" in result.stdout
    assert "nvidia_container_toolkit_local_packages_dir" in result.stdout
    assert recap_changed(result.stdout)["node2"] == 0
    assert node2.check_output(snapshot) == before
