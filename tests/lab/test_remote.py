"""Remote HPC mode end to end: the hub cannot reach rnode1 (it sits on the HPC network only), submits
through hpc-gate as jupyterhpc@login, and reaches alice's server only through the job's SSH tunnel.

Real Slurm, real Apptainer, real SSH tunnels through the lab's NAT gateway (login), real WebDAV."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from conftest import PLAYBOOK, PREFIX, recap_changed, run_playbook, wait_for
from hubclient import StartFailed

pytestmark = [
    pytest.mark.remote,
    pytest.mark.skipif(PLAYBOOK != "playbooks/site.yml", reason="the scenario did not converge the hub"),
]

REMOTE = {"profile": "hpc", "image": "python"}
OVERLAY = "/home/jupyterhpc/.clusterhub/alice.img"
# partition hpcown: the same node, jobs run as the hub user's own HPC account (run_as: user)
OWN = {"profile": "hpcown", "image": "python"}


def address(container: str, network: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", f"{PREFIX}-{container}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)[network]["IPAddress"]


def remote_jobs(login, user: str = "alice") -> list[str]:
    """The hub's remote jobs of one hub user: jupyterhpc's jobs named jupyterhub-<user>."""
    return login.check_output(f"squeue -h -u jupyterhpc --name jupyterhub-{user} -o %i").split()


def reachable(host, ip: str, port: int) -> bool:
    return host.run(f"timeout 5 bash -c '</dev/tcp/{ip}/{port}'").rc == 0


def stopped_before_and_after(client, gone):
    """The user's hub client with no server; afterwards the server stopped and its job gone (scancel)."""
    client.stop()
    yield client
    client.stop()
    wait_for(gone, what=f"the job of {client.user}'s server gone")


@pytest.fixture
def alice_remote(hub_as, login):
    yield from stopped_before_and_after(hub_as("alice"), lambda: not remote_jobs(login))


def own_jobs(login, user: str) -> list[str]:
    return login.check_output(f"squeue -h -u {user} --name jupyterhub-{user} -o %i").split()


@pytest.fixture
def bob_own(hub_as, login):
    yield from stopped_before_and_after(hub_as("bob"), lambda: not own_jobs(login, "bob"))


def test_the_hub_cannot_reach_the_remote_node_but_the_login_node_can(hub, login):
    node = address("rnode1", f"{PREFIX}-hpc")
    # slurmd's port: the controller on login talks to it, the hub cannot open a connection at all
    assert reachable(login, node, 6818)
    assert not reachable(hub, node, 6818)
    assert hub.run("getent hosts rnode1").rc != 0, "the hub does not even know the name"


def test_a_remote_server_runs_in_apptainer_on_rnode1_behind_the_tunnel(alice_remote, hub, login, rnode):
    alice_remote.start(options=REMOTE, timeout=240)
    code = "import os, socket; print(socket.gethostname(), os.environ.get('APPTAINER_NAME'), os.getuid(),"
    code += " os.path.expanduser('~'), os.environ['JUPYTERHUB_API_URL'])"
    host, image, uid, home, api = alice_remote.run_code(code).split()
    assert (host, image, home) == ("rnode1", "python.sif", "/home/alice")
    assert int(uid) == login.user("jupyterhpc").uid, "remote jobs run as the hub's HPC account"
    assert api.startswith("http://127.0.0.1:"), "the server reaches the hub API through the tunnel"
    # the job is jupyterhpc's, named for alice, submitted through hpc-gate
    (job,) = remote_jobs(login)
    assert login.check_output(f"squeue -h -j {job} -o '%j %u %P %N'") == "jupyterhub-alice jupyterhpc hpc rnode1"
    # the hub reaches the server at its loopback: the port is the tunnel's, served by sshd for tunnelbot
    log = hub.check_output(
        "journalctl -u jupyterhub --no-pager -o cat | grep 'Server of alice: job %s at' | tail -1", job
    )
    port = int(log.rsplit(":", 1)[1])
    listeners = hub.check_output("ss -Hltnp")
    assert any(f"127.0.0.1:{port} " in line and "sshd" in line for line in listeners.splitlines()), listeners
    # overlay and log on the HPC side, per hub user, in the HPC account's home
    overlay = rnode.file(OVERLAY)
    assert (overlay.user, overlay.mode) == ("jupyterhpc", 0o600)
    assert "tunnel up" in rnode.file("/home/jupyterhpc/.clusterhub/logs/alice/startjob.log").content_string


def test_a_dropped_tunnel_is_opened_again_while_the_server_runs(alice_remote, rnode):
    alice_remote.start(options=REMOTE, timeout=240)
    # kill the job's ssh (as a network blip would); the wrapper opens a new one
    rnode.check_output("pkill -u jupyterhpc -f '^ssh .*tunnelbot@'")
    wait_for(lambda: rnode.run("pgrep -u jupyterhpc -f '^ssh .*tunnelbot@'").rc == 0, timeout=30, what="new tunnel")

    def answers():
        try:
            return alice_remote.run_code("print(6 * 7)", timeout=20).strip() == "42"
        except Exception:
            return False

    wait_for(answers, timeout=60, interval=2, what="the server through the new tunnel")


def test_keep_txt_survives_a_restart_and_nothing_else_is_in_her_container(alice_remote, rnode):
    """The overlay is made and checked by the same wrapper in both modes; the playbook re-run with a larger
    overlay size is tested in direct mode (test_apptainer), here the remote restart."""
    alice_remote.start(options=REMOTE, timeout=240)
    out = alice_remote.run_code(
        "import os; open(os.path.expanduser('~/keep.txt'), 'w').write('kept remotely'); "
        "print(os.path.exists('/home/bob'), os.path.exists('/home/jupyterhpc/.ssh/tunnel_key'),"
        " os.path.exists('/home/jupyterhpc/.clusterhub/bob.img'))"
    )
    # the default view only: the account's home is not mounted (the README says what the shared account
    # cannot hide from code running as it)
    assert out.split() == ["False", "False", "False"], "nothing of the HPC account or of bob inside her container"
    alice_remote.stop()
    size = rnode.file(OVERLAY).size
    alice_remote.start(options=REMOTE, timeout=240)
    assert alice_remote.run_code("print(open('/home/alice/keep.txt').read())").strip() == "kept remotely"
    assert rnode.file(OVERLAY).size == size


def test_a_file_in_webdav_share_lands_in_alices_space_and_the_password_stays_hidden(alice_remote, rnode, storage):
    alice_remote.start(options=REMOTE, timeout=240)
    out = alice_remote.run_code(
        "open('/notebooks/WebDAV-Share/from-remote.txt', 'w').write('written on rnode1\\n'); print('ok')"
    )
    assert out.strip() == "ok"
    mount = "/home/jupyterhpc/WebDAV-Share/alice"
    assert rnode.run(f"findmnt -n {mount}").rc == 0
    password = "alice-webdav-in-the-lab"
    # nobody else sees it: not in process lists, not in the job's logs
    assert password not in rnode.check_output("ps -eo args")
    logs = rnode.check_output("cat /home/jupyterhpc/.clusterhub/logs/alice/* /home/jupyterhpc/.clusterhub/logs/*.log")
    assert password not in logs
    secrets = rnode.file("/home/jupyterhpc/.davfs2/secrets")
    assert (secrets.user, secrets.mode) == ("jupyterhpc", 0o600)
    alice_remote.stop()
    # the job's end unmounted the space after its uploads
    wait_for(lambda: rnode.run(f"findmnt -n {mount}").rc != 0, timeout=60, what="WebDAV unmounted at job end")
    saved = storage.file("/srv/webdav/alice/from-remote.txt")
    assert saved.content_string == "written on rnode1\n" and saved.user == "www-data"


def test_the_no_container_choice_is_refused_on_a_remote_partition(hub_as):
    alice = hub_as("alice")
    alice.stop()
    r = alice.post("/users/alice/server", json={"profile": "hpc", "image": "node"})
    assert r.status_code == 400 and "container image only" in r.text


def test_maintenance_on_the_hpc_side_fails_a_remote_start_at_once_with_its_message(alice_remote, rnode):
    rnode.check_output("echo 'HPC maintenance until 18:00.' > /etc/clusterhub/maintenance")
    try:
        t0 = time.monotonic()
        with pytest.raises(StartFailed) as failure:
            alice_remote.start(options=REMOTE, timeout=120)
        assert time.monotonic() - t0 < 30, "the start fails at once, not at a timeout"
        assert failure.value.status != 500
        # the hub read the job's reason through hpc-gate (joblog): alice reads it where her start failed
        assert re.search(
            r"Slurm job \d+ ended before .*: the notebook service is in maintenance: HPC maintenance",
            failure.value.message,
        ), failure.value.message
    finally:
        rnode.check_output("rm -f /etc/clusterhub/maintenance")


def test_on_a_run_as_user_partition_the_job_is_bobs_own_and_unix_permissions_separate_users(bob_own, login, rnode):
    bob_own.start(options=OWN, timeout=240)
    code = "import os, socket; print(socket.gethostname(), os.getuid(), os.path.expanduser('~'),"
    code += " os.environ['JUPYTERHUB_API_URL'], os.path.exists('/home/jupyterhpc/.ssh'))"
    host, uid, home, api, hpc_home = bob_own.run_code(code).split()
    bob = login.user("bob")
    assert (host, int(uid), home) == ("rnode1", bob.uid, "/home/bob"), "the server runs as bob's own account"
    assert api.startswith("http://127.0.0.1:") and hpc_home == "False"
    # submitted through hpc-gate as bob (sudo on the login node): Slurm knows the job as bob's
    (job,) = own_jobs(login, "bob")
    assert login.check_output(f"squeue -h -j {job} -o '%j %u %P %N'") == "jupyterhub-bob bob hpcown rnode1"
    # the job's output, its log and overlay are in bob's own home, his alone
    output = rnode.file(f"/home/bob/.clusterhub/logs/jupyterhub-bob-{job}.log")
    assert (output.user, output.contains("clusterhub: job")) == ("bob", True)
    overlay = rnode.file("/home/bob/.clusterhub/bob.img")
    assert (overlay.user, overlay.mode) == ("bob", 0o600)
    # Unix permissions: neither alice nor the hub's HPC account can read them on the node
    for other in ("alice", "jupyterhpc"):
        assert rnode.run(f"runuser -u {other} -- head -c 1 /home/bob/.clusterhub/bob.img").rc != 0
        assert rnode.run(f"runuser -u {other} -- cat {output.path}").rc != 0
    # ... and bob's job cannot read the shared account's overlays and logs (only the tunnel key, by design)
    assert rnode.run("runuser -u bob -- head -c 1 " + OVERLAY).rc != 0
    assert rnode.run("runuser -u bob -- ls /home/jupyterhpc/.clusterhub/logs").rc != 0


@pytest.mark.parametrize(
    ("limit", "extra_vars", "message"),
    [
        (
            "hub",
            '{"jupyterhub_partitions": [{"name": "jupyter", "max_cpus": 2, "max_memory_gb": 4, "max_hours": 12,'
            ' "run_as": "user"}], "jupyterhub_profiles": []}',
            r"jupyterhub_partitions jupyter: run_as user needs remote true",
        ),
        ("login", '{"hpc_account_users_group": "HPC users"}', r"hpc_account_users_group \(HPC users\) must be empty"),
        ("login", '{"hpc_account_users_min_uid": 0}', r"hpc_account_users_min_uid \(0\) at least 1000"),
    ],
    ids=["run-as-user-not-remote", "bad-group-name", "root-allowed"],
)
def test_bad_own_account_settings_fail_before_any_host_changes(login, limit, extra_vars, message):
    sudoers = login.file("/etc/sudoers.d/clusterhub-hpc-gate").sha256sum
    result = run_playbook("playbooks/site.yml", "--limit", limit, "-e", extra_vars)
    assert result.returncode != 0
    assert re.search(message, result.stdout), result.stdout[-3000:]
    changed = recap_changed(result.stdout)
    assert changed and all(n == 0 for n in changed.values()), changed
    assert login.file("/etc/sudoers.d/clusterhub-hpc-gate").sha256sum == sudoers
