"""clusterhub.tunnel_keys: the hub's per-server tunnel keys and sshd's AuthorizedKeysCommand that accepts them
(issue 13, item 2). The command runs as it is installed (the role's file, `python3 -I`) with the settings the
tunnel_user role writes for the lab; the lab test (tests/lab/test_tunnel.py) has the real sshd enforce it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from role_files import GOLDEN, ROOT, load, matches_golden, render_text
from test_golden_renders import LAB_ADDRESSES

from clusterhub import tunnel_keys

COMMAND = ROOT / "roles/tunnel_user/files/clusterhub_tunnel_keys.py"
CONFIG_TASK = next(task for task in load(ROOT / "roles/tunnel_user/tasks/configure.yml") if "settings" in task["name"])


@pytest.fixture(scope="module")
def lab_config() -> dict:
    """The settings file as the tunnel_user role writes it on the lab's hub."""
    text = render_text("tunnel_user", CONFIG_TASK["ansible.builtin.copy"]["content"], "hub", "lab", LAB_ADDRESSES)
    matches_golden(text, GOLDEN / "tunnel_user" / "lab" / "clusterhub-tunnel-keys.json.golden")
    return json.loads(text)


@pytest.fixture
def keys(tmp_path, lab_config):
    directory = tmp_path / "keys"
    directory.mkdir()
    config = {**lab_config, "dir": str(directory)}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return directory, config, path


def sshd_asks(user: str, config_path) -> subprocess.CompletedProcess:
    """What sshd gets from the installed command (`AuthorizedKeysCommand ... %u CONFIG`)."""
    return subprocess.run(
        [sys.executable, "-I", str(COMMAND), user, str(config_path)], capture_output=True, text=True, check=False
    )


def test_the_lab_settings_are_the_inventory_facts(lab_config):
    assert lab_config == {
        "user": "tunnelbot",
        "dir": "/var/lib/clusterhub-tunnel-keys",
        "from": ["172.30.0.3"],
        "api_port": 8081,
        "ports": [[47000, 47999]],
    }


def test_a_published_key_may_listen_on_its_own_port_alone(keys):
    directory, _, path = keys
    _, public = tunnel_keys.generate("test")
    tunnel_keys.publish(str(directory), 47123, public)
    result = sshd_asks("tunnelbot", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        'restrict,port-forwarding,command="/usr/sbin/nologin",from="172.30.0.3",permitlisten="127.0.0.1:47123",'
        f'permitopen="127.0.0.1:8081" {public}\n'
    )
    assert oct((directory / "47123.pub").stat().st_mode & 0o777) == "0o644"


def test_other_accounts_get_no_key(keys):
    directory, _, path = keys
    tunnel_keys.publish(str(directory), 47123, tunnel_keys.generate("test")[1])
    for user in ("root", "jupyterhub", "alice", "tunnelbot2"):
        assert sshd_asks(user, path).stdout == ""


def test_what_the_directory_holds_is_never_taken_as_options(keys, tmp_path):
    directory, config, path = keys
    _, good = tunnel_keys.generate("good")
    _, other = tunnel_keys.generate("other")
    tunnel_keys.publish(str(directory), 47001, good)
    # a port outside the tunnel range (the hub API's), a name that is not a port, options smuggled into the
    # text, two keys in one file, a link to a key elsewhere, a directory, an oversized file
    (directory / "8081.pub").write_text(other + "\n")
    (directory / "47002.pub.bak").write_text(other + "\n")
    (directory / "x47003.pub").write_text(other + "\n")
    (directory / "47004.pub").write_text(f'permitlisten="127.0.0.1:8081" {other}\n')
    (directory / "47005.pub").write_text(f"{other}\n{other}\n")
    outside = tmp_path / "outside.pub"
    outside.write_text(other + "\n")
    (directory / "47006.pub").symlink_to(outside)
    (directory / "47007.pub").mkdir()
    (directory / "47008.pub").write_text(other + " " + "A" * 5000 + "\n")
    (directory / "47009.pub").write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x\n")
    result = sshd_asks("tunnelbot", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [line for line in tunnel_keys.authorized_lines(config)]
    assert len(result.stdout.splitlines()) == 1 and 'permitlisten="127.0.0.1:47001"' in result.stdout


def test_a_withdrawn_key_is_no_longer_accepted_and_a_new_spawn_replaces_the_old(keys):
    directory, _, path = keys
    _, first = tunnel_keys.generate("first")
    _, second = tunnel_keys.generate("second")
    tunnel_keys.publish(str(directory), 47100, first)
    tunnel_keys.publish(str(directory), 47100, second)
    assert sshd_asks("tunnelbot", path).stdout.split()[-1] == second.split()[1]
    tunnel_keys.withdraw(str(directory), 47100)
    tunnel_keys.withdraw(str(directory), 47100)  # twice: no error
    assert sshd_asks("tunnelbot", path).stdout == ""
    assert list(directory.iterdir()) == []  # no scratch file left behind


def test_a_missing_directory_gives_no_keys_and_bad_arguments_a_usage(keys, tmp_path):
    _, config, _ = keys
    assert tunnel_keys.authorized_lines({**config, "dir": str(tmp_path / "nowhere")}) == []
    result = subprocess.run([sys.executable, "-I", str(COMMAND)], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage: clusterhub-tunnel-keys USER CONFIG" in result.stderr


def test_publish_refuses_anything_but_an_ed25519_public_key(keys):
    directory, _, _ = keys
    for text in ("ssh-ed25519 AAAA\nssh-ed25519 BBBB", 'command="x" ssh-ed25519 AAAA', "ssh-rsa AAAA"):
        with pytest.raises(ValueError):
            tunnel_keys.publish(str(directory), 47000, text)
    assert list(directory.iterdir()) == []
