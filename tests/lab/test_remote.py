"""Remote HPC mode end to end: the hub cannot reach rnode1 (it sits on the HPC network only), submits
through hpc-gate (logged in as clusterhub-gate@login; the jobs run as jupyterhpc), and reaches alice's
server only through the job's SSH tunnel.

Real Slurm, real Apptainer, real SSH tunnels through the lab's NAT gateway (login), real WebDAV."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time

import pytest
from conftest import PLAYBOOK, PREFIX, reconfigure_hub, wait_for
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
        "print(os.path.exists('/home/bob'), 'CLUSTERHUB_TUNNEL_IDENTITY' in os.environ,"
        " os.path.exists('/home/jupyterhpc/.clusterhub/bob.img'))"
    )
    # the default view only: the account's home is not mounted (the README says what the shared account
    # cannot hide from code running as it)
    # (the job's tunnel key stays with the wrapper: not in the server's environment)
    assert out.split() == ["False", "False", "False"], "nothing of the HPC account or of bob inside her container"
    alice_remote.stop()
    size = rnode.file(OVERLAY).size
    alice_remote.start(options=REMOTE, timeout=240)
    assert alice_remote.run_code("print(open('/home/alice/keep.txt').read())").strip() == "kept remotely"
    assert rnode.file(OVERLAY).size == size


@pytest.fixture
def alice_own(hub_as, login):
    yield from stopped_before_and_after(hub_as("alice"), lambda: not own_jobs(login, "alice"))


def test_a_file_in_webdav_share_lands_in_alices_space_and_the_password_stays_hidden(alice_own, rnode, storage):
    """Remote WebDAV runs as the user's own HPC account (hpcown): the shared account gets none (test_webdav)."""
    alice_own.start(options=OWN, timeout=240)
    out = alice_own.run_code(
        "open('/notebooks/WebDAV-Share/from-remote.txt', 'w').write('written on rnode1\\n'); print('ok')"
    )
    assert out.strip() == "ok"
    mount = "/home/alice/WebDAV-Share"
    assert rnode.run(f"findmnt -n {mount}").rc == 0
    password = "alice-webdav-in-the-lab"
    # nobody else sees it: not in process lists, not in the job's logs
    assert password not in rnode.check_output("ps -eo args")
    logs = rnode.check_output("cat /home/alice/.clusterhub/logs/alice/*")
    assert password not in logs
    secrets = rnode.file("/home/alice/.davfs2/secrets")
    assert (secrets.user, secrets.mode) == ("alice", 0o600)
    alice_own.stop()
    # the job's end unmounted the space after its uploads
    wait_for(lambda: rnode.run(f"findmnt -n {mount}").rc != 0, timeout=60, what="WebDAV unmounted at job end")
    saved = storage.file("/srv/webdav/alice/from-remote.txt")
    assert saved.content_string == "written on rnode1\n" and saved.user == "www-data"


@pytest.fixture
def bob_remote(hub_as, login):
    yield from stopped_before_and_after(hub_as("bob"), lambda: not remote_jobs(login, "bob"))


# Run in bob's kernel on the shared account's partition. It looks for alice's WebDAV password (given
# base64-encoded) and tries to enter her mounted space: in its container's view, and through /proc/PID/root of
# every process it sees (the job's wrapper outside the container is one, running as the same account).
ATTACK = """
import base64, json, os
secret = base64.b64decode(SECRET).decode()
report = {"roots": {}, "secrets": [], "found": [], "her_space": [], "shared_point": []}
views = [""]
for p in (p for p in os.listdir("/proc") if p.isdigit()):
    try:
        os.listdir(f"/proc/{p}/root")
    except OSError as e:
        report["roots"][type(e).__name__] = report["roots"].get(type(e).__name__, 0) + 1
        continue
    if os.path.exists(f"/proc/{p}/root/etc/clusterhub/jobs.conf"):
        views.append(f"/proc/{p}/root")
report["roots"]["node"] = len(views) - 1
for v in views[:2]:
    try:
        open(v + "/home/jupyterhpc/.davfs2/secrets").read()
        report["secrets"].append("read")
    except OSError as e:
        report["secrets"].append(type(e).__name__)
    for top in ("/home", "/tmp", "/var/tmp", "/dev/shm", "/etc/davfs2", "/var/cache/davfs2"):
        for d, _, files in os.walk(v + top):
            for f in files:
                try:
                    path = os.path.join(d, f)
                    if os.path.getsize(path) < 2**20 and secret in open(path, errors="replace").read():
                        report["found"].append(path)
                except OSError:
                    pass
    for key, path in (("her_space", "/home/alice/WebDAV-Share"),
                      ("shared_point", "/home/jupyterhpc/WebDAV-Share/alice")):
        try:
            report[key].append(os.listdir(v + path) and "listed")
        except OSError as e:
            report[key].append(type(e).__name__)
print(json.dumps(report))
"""


@pytest.mark.security
@pytest.mark.webdav
def test_from_bobs_job_on_the_shared_account_alices_webdav_password_and_space_are_out_of_reach(
    alice_own, bob_remote, rnode, storage
):
    """alice's server runs as her own HPC account with her WebDAV space mounted; bob's runs on the shared
    account's partition, on the same node. Neither from bob's kernel (its container's view and every
    /proc/PID/root it can see) nor from a shell of the shared account on the node itself can alice's WebDAV
    password or her space be reached: the shared account holds no WebDAV password and mounts no space
    (webdav_client refuses them), and her own are hers alone."""
    password = "alice-webdav-in-the-lab"
    alice_own.start(options=OWN, timeout=240)
    out = alice_own.run_code("open('/notebooks/WebDAV-Share/from-hpcown.txt', 'w').write('hers\\n'); print('ok')")
    assert out.strip() == "ok", "her own WebDAV space works"
    bob_remote.start(options=REMOTE, timeout=240)
    code = f"SECRET = {base64.b64encode(password.encode()).decode()!r}\n" + ATTACK
    report = json.loads(bob_remote.run_code(code, timeout=120))
    # the kernel keeps the container's processes out of the node's view of the same account (/proc/PID/root
    # of the wrapper: permission denied); whatever view there is holds nothing of hers
    assert report["roots"].get("PermissionError", 0) > 0, report["roots"]
    assert report["found"] == [], "her password is in no file bob's job can read"
    assert set(report["secrets"]) <= {"FileNotFoundError", "PermissionError"}, report["secrets"]
    assert set(report["her_space"]) <= {"FileNotFoundError", "PermissionError"}, report["her_space"]
    assert set(report["shared_point"]) <= {"FileNotFoundError", "PermissionError", ""}, report["shared_point"]
    # the same as the shared account on the node itself (what bob's job would be outside its container)
    as_account = "runuser -u jupyterhpc -- "
    tried = rnode.run(as_account + "cat /home/jupyterhpc/.davfs2/secrets")
    assert tried.rc != 0 and "No such file" in tried.stderr, "the shared account holds no WebDAV passwords"
    assert rnode.run(as_account + "ls -A /home/jupyterhpc/WebDAV-Share/alice").stdout.strip() == ""
    tried = rnode.run(as_account + "clusterhub-webdav-mount jupyterhpc /home/jupyterhpc/WebDAV-Share/alice")
    assert tried.rc == 1 and "has no davfs2 entry in /etc/fstab" in tried.stderr, tried.stderr
    tried = rnode.run(as_account + "clusterhub-webdav-mount alice /home/alice/WebDAV-Share")
    assert tried.rc == 1 and "may not mount the WebDAV space of alice" in tried.stderr, tried.stderr
    assert rnode.run(as_account + "ls /home/alice/WebDAV-Share").rc != 0
    piped = f"echo {base64.b64encode(password.encode()).decode()} | base64 -d"
    found = rnode.run(f"{piped} | {as_account} grep -rlsF -f - /home /tmp /var/tmp /etc --exclude-dir=proc")
    assert found.stdout == "", found.stdout
    # and her file went to her space on the server
    wait_for(lambda: storage.file("/srv/webdav/alice/from-hpcown.txt").exists, timeout=30, what="her upload")
    storage.check_output("rm -f /srv/webdav/alice/from-hpcown.txt")


@pytest.mark.security
def test_with_a_name_map_only_the_users_it_names_run_as_their_own_hpc_accounts(hub_as, login, bob_own):
    """jupyterhub_hpc_user_map names alice only: bob, who has an HPC account of the same name (and runs as it
    without a map), is refused on hpcown at once with a sentence and no job of his is submitted; alice still
    runs as hers."""
    mapping = '{"jupyterhub_hpc_user_map": {"alice": "alice"}}'
    mapped = reconfigure_hub("-e", mapping)
    assert mapped.returncode == 0, mapped.stdout[-3000:]
    alice = hub_as("alice")
    try:
        refused = bob_own.post("/users/bob/server", json=OWN)
        assert refused.status_code == 400, refused.text
        assert "partition hpcown runs servers as the users' own HPC accounts and none is known for bob" in refused.text
        assert not own_jobs(login, "bob"), "nothing reached the HPC side"
        alice.stop()
        alice.start(options=OWN, timeout=240)
        assert int(alice.run_code("import os; print(os.getuid())")) == login.user("alice").uid
    finally:
        alice.stop()
        wait_for(lambda: not own_jobs(login, "alice"), what="alice's job gone")
        restored = reconfigure_hub()
        assert restored.returncode == 0, restored.stdout[-3000:]


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
