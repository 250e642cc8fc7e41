"""ClusterRemoteSpawner in process, against the real hpc-gate: the hub's ssh command is a fake `ssh` that runs
clusterhub.gate as the HPC login would (SSH_ORIGINAL_COMMAND, hpc-gate.conf as the hpc_account role renders
it for the lab), in front of the fake Slurm; the server is a real TCP server on the tunnel port the hub picked
(where the job's tunnel would put it). Covers submit, poll, stop and the job's end through the gate, the
gate's refusal as a sentence, the tunnel port a restarted hub still holds, and each server's own tunnel key."""

from __future__ import annotations

import asyncio
import re
import shlex
import socket
import subprocess
import sys
import tempfile

import pytest
from fake_slurm import FakeSlurm
from role_files import ROOT, render
from spawner_harness import NodeServer, new_spawner, run, until

from clusterhub import tunnel_keys
from clusterhub.hub import remote
from clusterhub.hub.remote import ClusterRemoteSpawner
from clusterhub.protocol import EXIT_HOME_FULL

pytestmark = pytest.mark.usefixtures("alice_is_the_test_runner")

PARTITIONS = [{"name": "hpc", "max_cpus": 2, "max_memory_gb": 4, "max_hours": 12, "max_gpus": 0, "remote": True}]
PROFILES = [
    {"slug": "hpc", "display_name": "HPC", "partition": "hpc", "cpus": 1, "memory_gb": 1, "hours": 2, "image": "python"}
]
IMAGES = [{"name": "python", "display_name": "Python", "path": "/opt/images/python.sif"}]
HPC = {"profile": "hpc", "image": "python"}
BATCH_SCRIPT = (ROOT / "roles/jupyterhub/files/batch_script.sh").read_text()

# the login node's side of `ssh clusterhub-gate@login COMMAND`: hpc-gate itself, as the job account
SSH = """#!{python}
import dataclasses, os, pwd, sys, types
os.environ["SSH_ORIGINAL_COMMAND"] = sys.argv[-1]
from clusterhub import gate
config = dataclasses.replace(gate.load_config({conf!r}), job_account="", slurm_bin_dir={bin!r})
gate.load_config = lambda path=None: config
me = pwd.getpwuid(os.getuid())
gate.pwd = types.SimpleNamespace(getpwuid=lambda uid: pwd.struct_passwd(
    ("jupyterhpc", "x", me.pw_uid, me.pw_gid, "", {home!r}, "/bin/sh")), getpwnam=pwd.getpwnam)
sys.exit(gate.main([]))
"""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def login(tmp_path, monkeypatch):
    """The fake login node: hpc-gate (configured as rendered for the lab) in front of the fake Slurm."""
    slurm = FakeSlurm(tmp_path / "slurm")
    conf = tmp_path / "hpc-gate.conf"
    conf.write_text(render("hpc_account", "etc/clusterhub/hpc-gate.conf.j2", "login"))
    home = tmp_path / "jupyterhpc"
    home.mkdir()
    ssh = tmp_path / "ssh"
    ssh.write_text(SSH.format(python=sys.executable, conf=str(conf), bin=str(slurm.bin), home=str(home)))
    ssh.chmod(0o755)
    monkeypatch.setenv("FAKE_SLURM_USER", "jupyterhpc")
    monkeypatch.setattr(remote, "_HELD_PORTS", set())
    return slurm, [str(ssh), "clusterhub-gate@login"], home


def remote_spawner(db, login, tmp_path, **config) -> ClusterRemoteSpawner:
    slurm, ssh, _ = login
    keys = tmp_path / "tunnel-keys"
    keys.mkdir(exist_ok=True)
    config = {
        "ssh_command": ssh,
        "tunnel_ports": free_ports(3),
        "tunnel_keys_dir": str(keys),
        "profiles": PROFILES,
        "partitions": PARTITIONS,
        "images": IMAGES,
        "batch_script": BATCH_SCRIPT,
        **config,
    }
    spawner = new_spawner(db, slurm, tmp_path, spawner_class=ClusterRemoteSpawner, **config)
    run(spawner.apply_user_options(spawner, HPC))  # a coroutine here (JupyterHub awaits it)
    return spawner


async def start_remote(spawner, slurm, node: NodeServer):
    """The job runs on rnode1 and its tunnel brings the server to the hub's 127.0.0.1:tunnel_port."""
    task = asyncio.ensure_future(spawner.start())
    await until(lambda: spawner.job_id, task=task)
    slurm.run(spawner.job_id, node="rnode1")
    node.port = spawner.tunnel_port
    await node.open()
    ip, port = await task
    spawner.server.ip, spawner.server.port = ip, port
    return ip, port


def test_a_remote_server_is_submitted_polled_and_stopped_through_the_gate(db, login, tmp_path):
    slurm, _, _ = login
    spawner = remote_spawner(db, login, tmp_path)
    node = NodeServer()
    ports = []

    async def scenario():
        ip, port = await start_remote(spawner, slurm, node)
        assert (ip, port) == ("127.0.0.1", spawner.tunnel_port)
        ports.append(port)
        assert await spawner.poll() is None
        await spawner.stop()
        await node.close()
        return await spawner.poll()

    assert run(scenario()) == 1
    state_port = ports[0]
    job = slurm.cancelled[0]
    info = slurm.jobs[job]
    assert (info["name"], info["user"]) == ("jupyterhub-alice", "jupyterhpc")
    script = slurm.script(job)
    assert f"clusterhub-startjob --tunnel {state_port} /opt/images/python.sif jupyterhub-singleuser" in script
    assert "export JUPYTERHUB_API_TOKEN=" in script  # the token is in the script, never on a command line
    # the gate ran each command: sbatch with the job's name, squeue in the one format, scancel of that job
    tools = [call[0] for call in slurm.calls]
    assert tools[0] == "sbatch" and "squeue" in tools and tools.count("scancel") == 1
    assert ["scancel", "--user=jupyterhpc", job] in slurm.calls


def remote_start_failure(db, login, tmp_path, end) -> str:
    """What the remote start says when `end(spawner, slurm, home)` ends its job before the server answers."""
    slurm, _, home = login
    spawner = remote_spawner(db, login, tmp_path)

    async def scenario():
        task = asyncio.ensure_future(spawner.start())
        await until(lambda: spawner.job_id, task=task)
        end(spawner, slurm, home)
        return await task

    with pytest.raises(Exception) as raised:
        run(scenario())
    return raised.value.jupyterhub_message


def test_a_job_ending_early_says_why_from_the_log_the_gate_reads(db, login, tmp_path):
    def image_missing(spawner, slurm, home):
        (home / ".clusterhub" / "logs" / f"jupyterhub-alice-{spawner.job_id}.log").write_text(
            "clusterhub: the image /opt/images/python.sif is not on rnode1: ask the administrators to install it\n"
        )
        slurm.run(spawner.job_id, node="rnode1")
        slurm.end(spawner.job_id, "FAILED")

    message = remote_start_failure(db, login, tmp_path, image_missing)
    # the job may end before or after the hub saw it running: the cause is the log's sentence either way
    assert re.match(
        r"Slurm job 100 ended before its server (started|answered): the image /opt/images/python\.sif "
        r"is not on rnode1: ask the administrators to install it$",
        message,
    ), message


def test_a_full_home_that_took_the_log_with_it_is_named_from_the_gates_accounting(db, login, tmp_path):
    def home_full(spawner, slurm, _home):
        # no log at all (the home had no room for it); the batch script's status says why
        slurm.update(spawner.job_id, state="FAILED", exit_code=f"{EXIT_HOME_FULL}:0")

    message = remote_start_failure(db, login, tmp_path, home_full)
    assert "ended before its server started: your home directory is full (no space or quota left); delete" in message
    slurm, _, _ = login
    assert any(call[0] == "sacct" for call in slurm.calls), slurm.calls


def test_a_submission_the_login_node_refuses_fails_the_start_with_a_sentence(db, login, tmp_path):
    slurm, _, _ = login
    slurm.set_down()  # sbatch fails on the login node
    spawner = remote_spawner(db, login, tmp_path)
    with pytest.raises(Exception) as raised:
        run(spawner.start())
    message = raised.value.jupyterhub_message
    assert message.startswith("The HPC login node refused the job (exit 1: "), message
    assert "Unable to contact slurm controller" in message
    assert message.endswith("try again later, or tell the administrators if it persists")
    assert {spawner.tunnel_port} == remote._HELD_PORTS  # until JupyterHub clears the failed server's state
    spawner.clear_state()
    assert set() == remote._HELD_PORTS


def test_a_restarted_hub_still_holds_the_tunnel_port_of_a_running_server(db, login, tmp_path):
    slurm, _, _ = login
    ports = free_ports(2)
    first = remote_spawner(db, login, tmp_path, tunnel_ports=ports)
    node = NodeServer()

    async def before():
        await start_remote(first, slurm, node)
        await node.close()
        return first.get_state()

    state = run(before())
    assert state["tunnel_port"] in ports
    remote._HELD_PORTS.clear()  # a new hub process
    restored = remote_spawner(db, login, tmp_path, tunnel_ports=ports)
    restored.load_state(state)
    other = remote_spawner(db, login, tmp_path, tunnel_ports=ports)
    # the other server gets the other port, though nothing listens on the restored one while its tunnel is down
    assert other._fresh_port() == next(p for p in ports if p != state["tunnel_port"])
    with pytest.raises(Exception) as raised:
        remote_spawner(db, login, tmp_path, tunnel_ports=ports)._fresh_port()
    assert "All 2 tunnel ports of the hub are in use" in raised.value.jupyterhub_message


def exported(script: str, name: str) -> str:
    """The value the job script exports as name (the shell's quoting undone)."""
    marker = f"export {name}="
    assert marker in script, f"the script exports no {name}"
    return shlex.split(script[script.index(marker) + len(marker) :])[0]


def public_half(private: str, tmp_path) -> str:
    key = tmp_path / "job-key"
    key.write_text(private)
    key.chmod(0o600)
    return " ".join(subprocess.check_output(["ssh-keygen", "-y", "-f", str(key)], text=True).split()[:2])


def test_each_server_gets_a_tunnel_key_of_its_own_for_its_port_alone(db, login, tmp_path, monkeypatch):
    slurm, _, _ = login
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where ssh-keygen writes the pair
    ports = free_ports(3)
    first = remote_spawner(db, login, tmp_path, tunnel_ports=ports)
    second = remote_spawner(db, login, tmp_path, tunnel_ports=ports)
    keys = tmp_path / "tunnel-keys"

    async def scenario():
        for spawner in (first, second):
            await start_remote(spawner, slurm, NodeServer())

    run(scenario())
    scripts = [slurm.script(spawner.job_id) for spawner in (first, second)]
    privates = [exported(script, tunnel_keys.JOB_VARIABLE) for script in scripts]
    assert privates[0] != privates[1]
    # the hub published exactly the public half of each job's key, under that server's port
    for spawner, private in zip((first, second), privates, strict=True):
        published = (keys / f"{spawner.tunnel_port}.pub").read_text().strip()
        assert published == public_half(private, tmp_path)
    assert sorted(p.name for p in keys.iterdir()) == sorted(f"{s.tunnel_port}.pub" for s in (first, second))
    # sshd is told: this key may listen on its own port alone
    config = {"user": "tunnelbot", "dir": str(keys), "from": ["10.0.0.0/8"], "api_port": 8081, "ports": [[1, 65535]]}
    lines = {line.split()[-1]: line for line in tunnel_keys.authorized_lines(config)}
    for spawner, private in zip((first, second), privates, strict=True):
        line = lines[public_half(private, tmp_path).split()[1]]
        assert f'permitlisten="127.0.0.1:{spawner.tunnel_port}",' in line and line.count("permitlisten") == 1
    # nothing of the private half is kept by the hub: not in the server's state, not on disk
    assert tunnel_keys.JOB_VARIABLE not in str(first.get_state()) and "PRIVATE KEY" not in str(first.get_state())
    leftovers = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and "PRIVATE KEY" in _text(p) and "slurm" not in p.relative_to(tmp_path).parts
    ]
    assert leftovers == [tmp_path / "job-key"]  # the test's own copy; Slurm keeps the script, as with the token
    # a stopped server's key is withdrawn: its job (or one that outlived it) cannot open the port again
    first_port = first.tunnel_port
    run(first.stop())
    first.clear_state()
    assert not (keys / f"{first_port}.pub").exists()
    assert (keys / f"{second.tunnel_port}.pub").exists()


def _text(path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def test_a_hub_without_a_keys_directory_refuses_the_start_before_any_job(db, login, tmp_path):
    slurm, _, _ = login
    spawner = remote_spawner(db, login, tmp_path, tunnel_keys_dir="")
    with pytest.raises(Exception) as raised:
        run(spawner.start())
    assert "tunnel_keys_dir" in str(raised.value.jupyterhub_message) and not slurm.jobs
