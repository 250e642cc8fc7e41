"""Remote HPC mode over real SSH (playbooks/remote.yml: roles hpc_account on login, tunnel_user on hub).

The hub submits as clusterhub-gate@login through hpc-gate; a job on the HPC side tunnels back to the hub
as tunnelbot, with the key the hub made for that server. Here the tests make and publish such keys the way
the hub does (clusterhub.tunnel_keys in the hub's venv, as the hub's user): `job_key` for the notebook port
below, `other_job_key` for the port of another server. Slurm need not be installed: where it is not, an
accepted command ends in hpc-gate's "<tool> not found" (exit 127), which a refused one never reaches (exit 2).
"""

from __future__ import annotations

import shlex

import pytest
from conftest import PREFIX, wait_for

from clusterhub.protocol import SQUEUE_FORMAT

pytestmark = pytest.mark.tunnel

HUB_KEY = "/var/lib/jupyterhub/.ssh/clusterhub_hpc"
# what the hub runs (as its service user) for sbatch, squeue and scancel
HUB_SSH = (
    f"runuser -u jupyterhub -- ssh -i {HUB_KEY} -o IdentitiesOnly=yes -o BatchMode=yes"
    f" -o StrictHostKeyChecking=yes -o UserKnownHostsFile={HUB_KEY}_known_hosts -o ConnectTimeout=10"
)
HPC_HOME = "/home/jupyterhpc"
# the job's key (made as the hub makes one per server) in a directory of the job account's
KEYS = "/tmp/chtun-keys"
# what a job runs (as the HPC account) to open its tunnels with the key made for the port NAME
SSH_AS_JOB = (
    "runuser -u jupyterhpc -- ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes"
    f" -o StrictHostKeyChecking=yes -o UserKnownHostsFile={HPC_HOME}/.ssh/tunnel_known_hosts"
    " -o ExitOnForwardFailure=yes -o ConnectTimeout=10"
)
TUNNEL_SSH = SSH_AS_JOB.format(key=f"{KEYS}/job")
OTHER_JOB_SSH = SSH_AS_JOB.format(key=f"{KEYS}/other")
UNPUBLISHED_SSH = SSH_AS_JOB.format(key=f"{KEYS}/unpublished")
# where the hub publishes the public halves (tunnel_user_keys_dir), and how it does it
HUB_KEYS = "/var/lib/clusterhub-tunnel-keys"
HUB_PYTHON = "runuser -u jupyterhub -- /opt/jupyterhub/bin/python -I -c"
SQUEUE = f"squeue -h --name jupyterhub -o '{SQUEUE_FORMAT}'"  # the format hpc-gate lets through
# in the tunnel account's ports (tunnel_user_listen_ports: 47000-47999 by default)
NOTEBOOK_PORT = 47888
OTHER_PORT = 47889  # another server's
# the lab's hub API (tunnel_user_api_port: the hub serves its API on port 8081)
API_PORT = 8081


def background(host, command: str, name: str) -> str:
    """Start command detached on host; return its pid (the test stops exactly that process)."""
    log = f"/tmp/chtun-test-{name}.log"
    return host.check_output(f"setsid nohup {command} > {log} 2>&1 < /dev/null & echo $!").strip()


def http_get(host, url: str) -> str:
    """The body at url, fetched on host (python3 is on every lab host; curl is not)."""
    code = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    return host.check_output("python3 -c %s %s", code, url)


def banner(host, port: int) -> str:
    """What a server at 127.0.0.1:port on host says first ("" when the connection yields nothing in 5 s)."""
    code = (
        "import socket, sys\n"
        "try:\n"
        "    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5); s.settimeout(5); print(s.recv(100))\n"
        "except OSError:\n"
        "    pass"
    )
    return host.run("python3 -c %s %s", code, str(port)).stdout


def publish(hub, port: int, public: str) -> None:
    code = f"from clusterhub import tunnel_keys; tunnel_keys.publish({HUB_KEYS!r}, {port}, {public!r})"
    hub.check_output(f"{HUB_PYTHON} {shlex.quote(code)}")


def withdraw(hub, port: int) -> None:
    code = f"from clusterhub import tunnel_keys; tunnel_keys.withdraw({HUB_KEYS!r}, {port})"
    hub.check_output(f"{HUB_PYTHON} {shlex.quote(code)}")


@pytest.fixture(scope="module", autouse=True)
def job_keys(hub, login):
    """Keys as the hub makes them for two servers (NOTEBOOK_PORT, OTHER_PORT), and one it never published;
    yields the public halves by name."""
    login.check_output(f"rm -rf {KEYS} && install -d -o jupyterhpc -m 0700 {KEYS}")
    public = {}
    for name, port in (("job", NOTEBOOK_PORT), ("other", OTHER_PORT), ("unpublished", None)):
        login.check_output(f"runuser -u jupyterhpc -- ssh-keygen -q -t ed25519 -N '' -C {name} -f {KEYS}/{name}")
        public[name] = " ".join(login.check_output(f"cat {KEYS}/{name}.pub").split()[:2])
        if port:
            publish(hub, port, public[name])
    yield public
    for port in (NOTEBOOK_PORT, OTHER_PORT):
        withdraw(hub, port)
    login.run(f"rm -rf {KEYS}")


def assert_forwards_refused(client, ssh: str, targets: list[str], local_port: int) -> None:
    """ssh (with {} where the options go) may not open channels to targets: -W is refused outright, and a
    -L to the first target listens on the client but the server refuses every connection through it."""
    for target in targets:
        result = client.run(f"echo | {ssh.format('-W ' + target)}")
        assert result.rc == 255
        assert "administratively prohibited" in result.stderr
    forward = ssh.format(f"-N -L 127.0.0.1:{local_port}:{targets[0]}")
    pid = background(client, forward, f"forbidden-L-{local_port}")
    try:
        wait_for(lambda: listening(client, local_port), timeout=30, what=f"the forbidden -L on {local_port}")
        assert "SSH-2.0" not in banner(client, local_port)
        log = f"/tmp/chtun-test-forbidden-L-{local_port}.log"
        wait_for(
            lambda: "administratively prohibited" in client.file(log).content_string,
            timeout=10,
            what="the server refusing the forward",
        )
    finally:
        stop(client, pid)


def stop(host, pid: str) -> None:
    host.run(f"kill {pid}")


def listening(host, port: int) -> bool:
    return f"127.0.0.1:{port} " in host.check_output("ss -Hltn")


def gate(command: str, hub, stdin: str = ""):
    redirect = f"printf %s {shlex.quote(stdin)} | " if stdin else ""
    return hub.run(f"{redirect}{HUB_SSH} clusterhub-gate@login {shlex.quote(command) if command else ''}")


@pytest.fixture
def web_servers(login):
    """An HTTP server on login's notebook port (the hub API is the real one, on the hub's port 8081)."""
    login.check_output("mkdir -p /tmp/chtun-www && echo notebook > /tmp/chtun-www/who")
    pid = background(
        login, f"python3 -m http.server {NOTEBOOK_PORT} --bind 127.0.0.1 --directory /tmp/chtun-www", "web"
    )
    wait_for(lambda: listening(login, NOTEBOOK_PORT), timeout=20, what=f"http.server on {NOTEBOOK_PORT}")
    yield
    stop(login, pid)


def test_a_jobs_tunnels_reach_the_notebook_from_the_hub_and_the_api_from_the_job(hub, login, web_servers):
    pid = background(
        login,
        f"{TUNNEL_SSH} -N -R 127.0.0.1:{NOTEBOOK_PORT}:127.0.0.1:{NOTEBOOK_PORT}"
        f" -L 127.0.0.1:{API_PORT}:127.0.0.1:{API_PORT} tunnelbot@hub",
        "tunnel",
    )
    try:
        wait_for(lambda: listening(hub, NOTEBOOK_PORT), timeout=30, what="-R listening on the hub")
        assert http_get(hub, f"http://127.0.0.1:{NOTEBOOK_PORT}/who") == "notebook"
        assert '"version"' in http_get(login, f"http://127.0.0.1:{API_PORT}/hub/api")
    finally:
        stop(login, pid)


def test_tunnelbot_gets_no_shell_and_runs_no_command(login):
    for command in ("", "id", "bash -i", "cat /etc/shadow"):
        result = login.run(f"{TUNNEL_SSH} tunnelbot@hub {command}")
        assert result.rc != 0
        assert "uid=" not in result.stdout
        assert "This account is currently not available." in result.stdout + result.stderr


def test_tunnelbot_may_not_open_other_ports_on_the_hub(hub, login, web_servers):
    # the allowed destination works through -W (the same direct-tcpip channel as -L) ...
    ok = login.run(f"echo | {TUNNEL_SSH} -W 127.0.0.1:{API_PORT} tunnelbot@hub")
    assert ok.rc == 0, ok.stderr
    # ... nothing else does, and a -L to another port gets its connections refused on the hub's side
    assert_forwards_refused(
        login, f"{TUNNEL_SSH} {{}} tunnelbot@hub", ["127.0.0.1:22", f"localhost:{API_PORT}", f"hub:{API_PORT}"], 18022
    )


@pytest.mark.parametrize("listen", ["0.0.0.0:47889", "hub:47889", "127.0.0.2:47889", "localhost:47889"])
def test_tunnelbot_may_listen_only_on_the_hubs_loopback(login, listen):
    result = login.run(f"timeout 30 {TUNNEL_SSH} -N -R {listen}:127.0.0.1:{NOTEBOOK_PORT} tunnelbot@hub")
    assert result.rc == 255
    assert "remote port forwarding failed" in result.stderr


@pytest.mark.security
@pytest.mark.parametrize(
    "port",
    [
        8081,  # the hub API (jupyterhub_hub_bind_url): a job listening there while the hub restarts gets its tokens
        8001,  # the proxy's API
        8443,  # the hub's HTTPS port
        18888,  # free, but outside tunnel_user_listen_ports
        46999,
        48000,
    ],
)
def test_tunnelbot_may_listen_only_on_its_port_range(hub, login, port):
    result = login.run(f"timeout 30 {TUNNEL_SSH} -N -R 127.0.0.1:{port}:127.0.0.1:{NOTEBOOK_PORT} tunnelbot@hub")
    assert result.rc == 255
    assert "remote port forwarding failed" in result.stderr
    # the hub's own services still answer where they are
    assert '"version"' in http_get(hub, f"http://127.0.0.1:{API_PORT}/hub/api")


@pytest.mark.security
def test_a_jobs_key_may_not_listen_on_another_servers_port_even_while_it_is_free(hub, login, web_servers):
    # the other server's tunnel is down (reconnecting): its hub port is free, yet this job's key cannot take it
    assert not listening(hub, OTHER_PORT)
    result = login.run(f"timeout 30 {TUNNEL_SSH} -N -R 127.0.0.1:{OTHER_PORT}:127.0.0.1:{NOTEBOOK_PORT} tunnelbot@hub")
    assert result.rc == 255
    assert "remote port forwarding failed" in result.stderr
    # nor can the other server's key take this job's port; each key opens its own port alone
    result = login.run(
        f"timeout 30 {OTHER_JOB_SSH} -N -R 127.0.0.1:{NOTEBOOK_PORT}:127.0.0.1:{NOTEBOOK_PORT} tunnelbot@hub"
    )
    assert result.rc == 255
    assert "remote port forwarding failed" in result.stderr
    pid = background(
        login, f"{OTHER_JOB_SSH} -N -R 127.0.0.1:{OTHER_PORT}:127.0.0.1:{NOTEBOOK_PORT} tunnelbot@hub", "other-own"
    )
    try:
        wait_for(lambda: listening(hub, OTHER_PORT), timeout=30, what="the other key's -R on its own port")
    finally:
        stop(login, pid)


@pytest.mark.security
def test_a_key_the_hub_did_not_publish_or_withdrew_is_refused(hub, login, job_keys):
    result = login.run(f"timeout 30 {UNPUBLISHED_SSH} -N tunnelbot@hub")
    assert result.rc == 255
    assert "Permission denied (publickey)" in result.stderr
    # a stopped server's key (withdrawn by the hub): its job cannot open a tunnel again
    withdraw(hub, OTHER_PORT)
    try:
        result = login.run(f"timeout 30 {OTHER_JOB_SSH} -N tunnelbot@hub")
        assert result.rc == 255
        assert "Permission denied (publickey)" in result.stderr
    finally:
        publish(hub, OTHER_PORT, job_keys["other"])


def test_the_tunnels_check_the_hubs_host_key(hub, login):
    # the hub's container name: it reaches the hub, but is not one of the names the jobs use
    result = login.run(f"{TUNNEL_SSH} -N tunnelbot@{PREFIX}-hub")
    assert result.rc == 255
    assert "Host key verification failed" in result.stderr


def test_no_shared_tunnel_key_is_left_and_only_the_hub_publishes_keys(hub, login):
    # the one key every job shared in earlier versions is gone from the HPC side, and so is its authorization
    assert not login.exists(f"{HPC_HOME}/.ssh/tunnel_key") and not login.exists(f"{HPC_HOME}/.ssh/tunnel_key.pub")
    assert not hub.exists("/etc/ssh/clusterhub_authorized_keys/tunnelbot")
    # the lab's users have HPC accounts of their own too (hpc_account_users_group): their jobs read the hub's
    # host keys through jupyterhpc's home and ~/.ssh, which they can pass but not list
    for directory in (HPC_HOME, f"{HPC_HOME}/.ssh"):
        assert login.file(directory).mode == 0o710 and login.file(directory).group == "hpcusers"
    assert login.run("runuser -u bob -- ls /home/jupyterhpc").rc != 0
    assert login.run("runuser -u bob -- ls /home/jupyterhpc/.clusterhub").rc != 0
    # only the hub's user writes the published keys; sshd's keys command runs as an account of its own
    keys = hub.file(HUB_KEYS)
    assert (keys.user, keys.mode) == ("jupyterhub", 0o755)
    for account in ("tunnelbot", "clusterhub-keys"):
        assert hub.run(f"runuser -u {account} -- touch {HUB_KEYS}/47000.pub").rc != 0
    assert not hub.exists(f"{HUB_KEYS}/47000.pub")


@pytest.mark.parametrize(
    ("command", "tool"), [(SQUEUE, "squeue"), ("scancel 4242", "scancel"), ("sbatch --parsable", "sbatch")]
)
def test_the_hub_reaches_hpc_gate(hub, login, command, tool):
    result = gate(command, hub, stdin="#!/bin/bash\ntrue\n")
    if login.exists(tool):
        assert result.rc in (0, 1), result.stderr  # Slurm answered
    else:
        assert result.rc == 127, result.stderr
        assert result.stderr == f"hpc-gate: {tool} not found (Slurm's client commands are not installed here)\n"


@pytest.mark.parametrize(
    "command",
    ["", "bash", "id", "sh -c id", "sbatch --wrap id", "sbatch --parsable --wrap id", "squeue -u root", "scancel 1 2"],
)
def test_the_hub_can_run_nothing_else(hub, command):
    result = gate(command, hub)
    assert result.rc == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("hpc-gate: refused: ")
    assert "uid=" not in result.stdout


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("as labadmin scancel 1", "labadmin is not a member of hpcusers"),
        ("as root scancel 1", "root is a system account"),
        ("as jupyterhub scancel 1", "jupyterhub is not a member of hpcusers"),
        ("as bob squeue", "squeue runs as the gate's account"),
        ("as bob bash", "'bash' is not allowed"),
        ("as bob as alice scancel 1", "'as' is not allowed"),
    ],
)
def test_the_hub_runs_commands_only_as_members_of_the_users_group(hub, command, message):
    result = gate(command, hub)
    assert result.rc == 2 and message in result.stderr, result.stderr


def test_as_a_member_the_gate_runs_slurm_as_that_user(hub):
    # a job id that does not exist: scancel answers as bob (through sudo and hpc-gate --run), not the gate
    result = gate("as bob scancel 999999", hub)
    assert result.rc != 2, result.stderr
    assert "hpc-gate" not in result.stderr and "sudo" not in result.stderr, result.stderr
    assert "Invalid job id specified" in result.stderr, result.stderr


def test_the_hub_may_not_forward_through_the_login_node(hub):
    assert_forwards_refused(hub, f"{HUB_SSH} {{}} clusterhub-gate@login", ["127.0.0.1:22"], 18023)
    remote = hub.run(
        f"timeout 30 {HUB_SSH} -N -o ExitOnForwardFailure=yes -R 127.0.0.1:18024:127.0.0.1:22 clusterhub-gate@login"
    )
    assert remote.rc == 255
    assert "remote port forwarding failed" in remote.stderr
