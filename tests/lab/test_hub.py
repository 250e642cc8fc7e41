"""The hub as users and sysadmins meet it: real logins, real Slurm jobs, real kernels."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import requests
from conftest import PREFIX, recap_changed, reconfigure_hub, run_playbook, squeue_jobs, start_node_again, wait_for

NODES = {"node1", "node2"}
HEALTH = "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/hub/health')\""


@pytest.fixture
def alice(hub_as, login):
    client = hub_as("alice")
    client.stop()
    yield client
    client.stop()
    wait_for(lambda: not squeue_jobs(login, "alice"), what="alice's jobs gone")


@pytest.fixture
def bob(hub_as):
    client = hub_as("bob")
    client.stop()
    yield client
    client.stop()


def test_alice_server_runs_as_alice_on_a_compute_node(alice, login):
    alice.start(options={"profile": "small"})
    host, uid = alice.run_code("import socket, os; print(socket.gethostname(), os.getuid())").split()
    assert host in NODES
    assert int(uid) == login.user("alice").uid
    job = squeue_jobs(login, "alice")
    assert len(job) == 1
    partition, cpus, state = login.check_output(f"squeue -h -j {job[0]} -o '%P %C %T'").split()
    assert (partition, cpus, state) == ("jupyter", "1", "RUNNING")
    alice.stop()
    wait_for(lambda: not squeue_jobs(login, "alice"), timeout=30, what="the job to go when the server stops")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"profile": "custom", "partition": "jupyter", "cpus": "64"},
            "64 CPUs requested; partition jupyter allows 1 to 2 CPUs",
        ),
        ({"profile": "custom", "partition": "batch", "gpus": "1"}, "1 GPUs requested; partition batch has no GPUs"),
        (
            {"profile": "custom", "partition": "jupyter", "hours": "48"},
            "48 hours requested; partition jupyter allows 0.25 to 12 hours",
        ),
        ({"profile": "custom", "partition": "jupyter; touch /tmp/pwned"}, "unknown partition"),
        ({"profile": "custom", "partition": "jupyter", "cpus": "1\n#SBATCH --uid=0"}, "cpus must be a number"),
    ],
    ids=["cpus", "gpus", "time", "shell-in-partition", "newline-in-cpus"],
)
def test_requests_beyond_the_limits_are_refused_before_any_job(alice, login, options, message):
    r = alice.post("/users/alice/server", json=options)
    assert r.status_code == 400
    assert message in r.json()["message"]
    assert squeue_jobs(login, "alice") == []
    assert alice.server() is None


def test_bob_cannot_reach_alice_server(alice, bob):
    alice.start(options={"profile": "small"})
    r = bob.api.get(f"{bob.url}/user/alice/api/status", allow_redirects=False)
    assert r.status_code in (403, 404), r.status_code
    r = bob.post("/users/alice/server", json={})
    assert r.status_code in (403, 404)  # JupyterHub does not even confirm that alice exists


# alice's job code, with her server's API token (the kernel's environment, or the server's), tries what
# batchspawner's port-report handler allowed: set the hub's commands (run through a shell at stop), then move her
# running server's route
PORT_REPORT_ATTACK = r"""
import json, os, urllib.error, urllib.request
env = dict(os.environ)
if "JUPYTERHUB_API_TOKEN" not in env:
    raw = open(f"/proc/{os.getppid()}/environ", "rb").read().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
mark = "/var/lib/jupyterhub/pwned-by-alice"
for body in ({"exec_prefix": f"touch {mark};", "batch_cancel_cmd": f"touch {mark}"}, {"port": 1}):
    request = urllib.request.Request(
        env["JUPYTERHUB_API_URL"] + "/batchspawner", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "token " + env["JUPYTERHUB_API_TOKEN"], "Content-Type": "application/json"})
    try:
        print(urllib.request.urlopen(request).status)
    except urllib.error.HTTPError as e:
        print(e.code)
"""


@pytest.mark.security
def test_a_job_can_report_its_port_once_and_set_nothing_else_on_the_hub(alice, hub):
    alice.start(options={"profile": "small"})  # the legitimate report: the server's port, while it starts
    assert alice.run_code(PORT_REPORT_ATTACK).split() == ["400", "409"]
    assert alice.user_get("/api/status").status_code == 200  # its route did not move
    alice.stop()  # the stop runs the hub's own scancel, not the job's command
    assert hub.run("test -e /var/lib/jupyterhub/pwned-by-alice").rc != 0
    log = hub.check_output("journalctl -u jupyterhub --since '-2 min' --no-pager -o cat")
    assert "Port report for alice refused" in log


def test_server_survives_a_hub_restart_and_a_proxy_kill(alice, hub, login):
    alice.start(options={"profile": "small"})
    job = squeue_jobs(login, "alice")
    notebook = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    assert alice.api.put(f"{alice.url}/user/alice/api/contents/kept.ipynb", json=notebook).status_code in (200, 201)
    hub.check_output("systemctl restart jupyterhub")
    wait_for(lambda: hub.run(HEALTH).rc == 0, what="the hub back")
    server = wait_for(alice.server, what="alice's server listed after the restart")
    assert server["ready"]
    assert squeue_jobs(login, "alice") == job
    saved = alice.user_get("/api/contents/kept.ipynb")
    assert saved.status_code == 200 and saved.json()["content"]["nbformat"] == 4
    assert "node" in alice.run_code("import socket; print(socket.gethostname())")

    # the proxy killed outright: systemd starts it again with an empty table, the hub's route check (every 3 s)
    # puts alice's route back within 10 s (JupyterHub alone: at its next last-activity update, up to 60 s)
    proxy = "systemctl show -p MainPID --value jupyterhub-proxy"
    pid = hub.check_output(proxy).strip()
    hub.check_output(f"kill -9 {pid}")
    killed = time.monotonic()
    wait_for(lambda: alice_status(alice) == 200, timeout=10, interval=0.2, what="alice's route back after kill -9")
    back = time.monotonic() - killed
    assert hub.check_output(proxy).strip() not in ("0", pid)
    log = hub.check_output("journalctl -u jupyterhub --since '-60 s' --no-pager -o cat")
    # alice's route and the runs service's, both gone with the proxy's table, both put back by the hub's check
    assert re.search(r"The proxy lacks \d+ route\(s\) .*/user/alice/", log), log[-2000:]
    print(f"alice's server reachable again {back:.1f} s after the proxy's kill -9")


def alice_status(alice) -> int:
    """HTTP status of alice's server through the proxy (0 while the proxy refuses connections)."""
    try:
        return alice.user_get("/api/status", allow_redirects=False, timeout=5).status_code
    except requests.ConnectionError:
        return 0


def test_pending_spawn_shows_queue_state_and_can_be_cancelled(alice, login):
    # fill both nodes, so the server waits in the queue
    blockers = [
        login.check_output("sudo -u bob sbatch --parsable -p batch -c 2 --mem=1G -o /dev/null --wrap 'sleep 300'")
        for _ in NODES
    ]
    try:
        wait_for(
            lambda: all(login.check_output(f"squeue -h -j {b} -o %T") == "RUNNING" for b in blockers),
            what="blocking jobs running",
        )
        r = alice.post("/users/alice/server", json={"profile": "large"})
        assert r.status_code == 202
        progress = alice.api.get(f"{alice.url}/hub/api/users/alice/server/progress", stream=True, timeout=30)
        event = {}
        for line in progress.iter_lines():
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                if "queue" in event:
                    break
        progress.close()
        # the place in the queue, the reason in words (test_queue_position.py has the rest)
        assert event.get("queue", {}).get("reason") == "Resources", event
        assert "is in the queue of partition" in event["message"] and "to free up on partition" in event["message"]
        job = squeue_jobs(login, "alice")
        assert len(job) == 1
        alice.stop()
        wait_for(lambda: not squeue_jobs(login, "alice"), what="the pending job removed on cancel")
    finally:
        login.run(f"scancel {' '.join(blockers)}")


def test_lost_compute_node_stops_the_server_and_another_node_serves(alice, login):
    alice.start(options={"profile": "small"})
    node = alice.run_code("import socket; print(socket.gethostname())").strip()
    other = (NODES - {node}).pop()
    subprocess.run(["docker", "stop", "-t", "1", f"{PREFIX}-{node}"], check=True, capture_output=True)
    try:
        wait_for(lambda: alice.server() is None, timeout=45, what="the hub to notice the lost node")
        wait_for(lambda: "down" in login.check_output(f"sinfo -h -n {node} -o %T"), timeout=90, what=f"{node} down")
        alice.start(options={"profile": "small"})
        assert alice.run_code("import socket; print(socket.gethostname())").strip() == other
    finally:
        start_node_again(login, node)


def test_maintenance_refuses_new_spawns_and_keeps_running_servers(alice, bob):
    alice.start(options={"profile": "small"})
    on = reconfigure_hub("-e", '{"jupyterhub_maintenance": true}', tag="maintenance")
    assert on.returncode == 0, on.stdout[-2000:]
    try:
        r = bob.post("/users/bob/server", json={"profile": "small"})
        if r.status_code == 202:  # the refusal may arrive after the spawn request was accepted
            wait_for(lambda: bob.server() is None, what="bob's spawn refused")
        else:
            assert r.status_code == 503
            assert "maintenance" in r.json()["message"]
        assert alice.server()["ready"]
        assert alice.user_get("/api/status").status_code == 200
    finally:
        off = reconfigure_hub(tag="maintenance")
        assert off.returncode == 0, off.stdout[-2000:]


def test_secrets_are_private_and_sudo_is_narrow(hub):
    for path, owner in (
        ("/var/lib/jupyterhub/jupyterhub_cookie_secret", "jupyterhub"),
        ("/etc/jupyterhub/proxy.env", "root"),
    ):
        f = hub.file(path)
        assert f.user == owner and f.mode == 0o600, path
        assert hub.run(f"sudo -u alice cat {path}").rc != 0
    assert hub.file("/etc/jupyterhub/tls/hub.key").mode == 0o640
    assert hub.run("sudo -u alice cat /etc/jupyterhub/tls/hub.key").rc != 0
    allowed = hub.check_output("sudo -l -U jupyterhub")
    assert "/usr/bin/sbatch, /usr/bin/squeue, /usr/bin/scancel" in allowed
    assert hub.run("sudo -u jupyterhub sudo -n -u alice /usr/bin/id").rc != 0
    assert hub.run("sudo -u jupyterhub sudo -n -u root /usr/bin/squeue").rc != 0
    assert hub.run("sudo -u jupyterhub sudo -n -u alice /usr/bin/squeue -h").rc == 0


def test_http_redirects_to_https(hub):
    out = hub.check_output(
        "python3 -c \"import http.client as h; c = h.HTTPConnection('127.0.0.1', 80); c.request('GET', '/hub/login');"
        " r = c.getresponse(); print(r.status, r.getheader('Location'))\""
    )
    code, target = out.split()
    assert code in ("301", "302") and target.startswith("https://")


@pytest.mark.parametrize("mode", [[], ["--check"]], ids=["run", "check-mode"])
@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        (
            '{"jupyterhub_tls_self_signed": false, "jupyterhub_tls_cert": "/etc/ssl/certs/site-hub.pem",'
            ' "jupyterhub_tls_key": "/etc/ssl/private/site-hub.key"}',
            r"jupyterhub_tls_cert \(/etc/ssl/certs/site-hub\.pem\) and jupyterhub_tls_key \(/etc/ssl/private/"
            r"site-hub\.key\) must each be a file on hub",
        ),
    ],
    ids=["missing-site-certificate"],
)
def test_bad_hub_values_stop_the_validation_play_in_both_modes(hub, mode, extra_vars, message):
    config = hub.file("/etc/jupyterhub/jupyterhub_config.py").sha256sum
    result = run_playbook("playbooks/site.yml", "--limit", "hub", "-e", extra_vars, *mode)
    assert result.returncode != 0
    assert re.search(message, result.stdout), result.stdout[-3000:]
    # it stopped in the first play: no later play ran, nothing changed
    assert "PLAY [Validate the inventory before anything changes]" in result.stdout
    assert result.stdout.count("PLAY [") == 1, "a later play ran"
    changed = recap_changed(result.stdout)
    assert changed == {"hub": 0}, changed
    assert hub.file("/etc/jupyterhub/jupyterhub_config.py").sha256sum == config


@pytest.mark.security
@pytest.mark.parametrize("prepared", ["open-directory", "link"])
def test_a_kernel_runtime_directory_another_user_prepared_is_never_used(bob, login, nodes, prepared):
    """alice prepares, on every node, the directory names the next jobs of bob's would have used (the old
    /tmp/jupyter-runtime-UID-JOBID): open to all (0777), or a link to a directory of hers. bob's server and
    kernel use a private directory of their own, and nothing of bob's lands where alice can read it."""
    uid = login.user("bob").uid
    # the next job ids: a throwaway job tells where Slurm's counter is
    last = int(login.check_output("sbatch --parsable -o /dev/null --wrap true").split(";")[0])
    names = [f"/tmp/jupyter-runtime-{uid}-{job}" for job in range(last + 1, last + 4)]
    for node in nodes:
        node.check_output("runuser -u alice -- install -d -m 0777 /tmp/alice-trap")
        for name in names:
            if prepared == "link":
                node.check_output(f"runuser -u alice -- ln -sfn /tmp/alice-trap {name}")
            else:
                node.check_output(f"runuser -u alice -- install -d -m 0777 {name}")
    try:
        bob.start(options={"profile": "small", "image": "node"})
        code = "import os, socket; d = os.environ['JUPYTER_RUNTIME_DIR']; s = os.lstat(d); print(socket.gethostname(),"
        code += " d, os.path.realpath(d), s.st_uid, oct(s.st_mode & 0o777), len(os.listdir(d)))"
        host, path, real, owner, mode, entries = bob.run_code(code).split()
        assert path == real and path not in names, "a directory of bob's own, not a prepared name or a link"
        assert (int(owner), mode) == (uid, "0o700") and int(entries) > 0, "private, and the server uses it"
        node = nodes[0] if host == "node1" else nodes[1]
        assert node.run(f"runuser -u alice -- ls {path}").rc != 0, "alice cannot list it"
        for name in [*names, "/tmp/alice-trap"]:
            left = node.run(f"find {name}/ -mindepth 1 -maxdepth 1").stdout
            assert not left, f"nothing of bob's in {name}: {left}"
    finally:
        for node in nodes:
            node.check_output(f"rm -rf /tmp/alice-trap {' '.join(names)}")
