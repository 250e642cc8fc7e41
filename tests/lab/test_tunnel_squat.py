"""Remote HPC mode: another user of the node cannot squat the ports a server's tunnel relies on (issue 13,
item 2).

bob's server runs on rnode1 as his own HPC account (profile hpcown); alice, an ordinary user of the same
node, tries to take its ports. The hub API reaches the job through an SSH tunnel to a Unix socket in a 0700
directory of bob's, relayed by clusterhub-relay on a TCP port the kernel picked and held for the job's whole
life; the server's own port is checked to be held by the server before the hub's end of its tunnel opens.
The tests give alice each port at the worst moment (root reads it from bob's wrapper log, standing in for a
lucky guess): while the server starts, and while the tunnels reconnect. bob's spawn either works through
its own tunnel or fails with a clear message; alice never receives a byte.
"""

from __future__ import annotations

import shlex
import time

import pytest
from conftest import PLAYBOOK, wait_for
from test_remote import OWN, own_jobs

pytestmark = [
    pytest.mark.remote,
    pytest.mark.security,
    pytest.mark.skipif(PLAYBOOK != "playbooks/site.yml", reason="the scenario did not converge the hub"),
]

LOG = "/home/bob/.clusterhub/logs/bob/startjob.log"
# alice's squatter: bind 127.0.0.1:PORT, keep whatever arrives in OUT; print "bound" or "refused ERRNO"
SQUATTER = """
import socket, sys
port, out, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", port))
    s.listen(16)
except OSError as e:
    print("refused", e.errno, flush=True)
    sys.exit(0)
print("bound", flush=True)
s.settimeout(seconds)
try:
    while True:
        c, _ = s.accept()
        c.settimeout(2)
        try:
            data = c.recv(65536)
        except OSError:
            data = b"(connected)"
        with open(out, "ab") as f:
            f.write(data or b"(connected)")
except OSError:
    pass
"""


def squat(rnode, port: int, tag: str, seconds: float = 60) -> str:
    """Start alice's squatter on port; return the file where what it received (and its verdict) lands."""
    base = f"/tmp/clusterhub-squat-{tag}"
    rnode.run(f"rm -f {base}.got {base}.out")
    rnode.check_output(
        f"setsid nohup runuser -u alice -- python3 -c {shlex.quote(SQUATTER)} {port} {base}.got {seconds}"
        f" > {base}.out 2>&1 < /dev/null &"
    )

    def said() -> str:
        return rnode.run(f"cat {base}.out").stdout.strip()

    wait_for(said, timeout=10, what=f"alice's squatter on {port}")
    return base


def verdict(rnode, base: str) -> str:
    return rnode.check_output(f"cat {base}.out").split("\n")[0]


def received(rnode, base: str) -> str:
    return rnode.run(f"cat {base}.got").stdout


def log_lines(rnode) -> int:
    return int(rnode.run(f"wc -l < {LOG}").stdout.strip() or 0)


def ports_after(rnode, start: int) -> tuple[int, int] | None:
    """(the relay's port, the server's port) from the wrapper's line after line `start` of bob's log."""
    for line in rnode.run(f"tail -n +{start + 1} {LOG}").stdout.splitlines():
        if "tunnel up: hub API at 127.0.0.1:" in line:
            api = int(line.split("hub API at 127.0.0.1:")[1].split()[0])
            return api, int(line.rsplit("server port ", 1)[1])
    return None


@pytest.fixture
def bob(hub_as, login, rnode):
    client = hub_as("bob")
    client.stop()
    yield client
    client.stop()
    rnode.run("pkill -u alice -f clusterhub-squat; rm -f /tmp/clusterhub-squat-*")
    wait_for(lambda: not own_jobs(login, "bob"), what="bob's job gone")


def test_a_port_taken_while_the_server_starts_is_never_handed_to_the_hub(bob, login, rnode):
    start = log_lines(rnode)
    r = bob.post("/users/bob/server", json=OWN)
    assert r.status_code in (201, 202), r.text
    ports = wait_for(lambda: ports_after(rnode, start), timeout=180, what="bob's wrapper choosing its ports")
    api, server = ports
    # the relay's port was bound before anyone could learn it; the server's is free until apptainer starts it
    api_squat = squat(rnode, api, "api")
    server_squat = squat(rnode, server, "server")
    assert verdict(rnode, api_squat) == "refused 98", "the relay holds the hub API's port for the job's life"
    deadline = time.monotonic() + 180
    state = bob.server()
    while state and not state.get("ready") and time.monotonic() < deadline:
        time.sleep(0.5)
        state = bob.server()
    if verdict(rnode, server_squat) == "bound":
        # alice won the race: bob's server could not listen, so no tunnel ever pointed at alice's socket
        assert not (state or {}).get("ready"), "the hub was handed a port alice held"
        message = bob.spawn_failure()
        assert f"port {server} is not available" in message, message
    else:
        assert (state or {}).get("ready"), bob.spawn_failure()
    assert received(rnode, api_squat) == "" and received(rnode, server_squat) == ""
    # the legitimate path right after: bob starts again and his server answers through its own tunnel
    rnode.run("pkill -u alice -f clusterhub-squat")
    bob.stop()
    wait_for(lambda: not own_jobs(login, "bob"), what="bob's first job gone")
    bob.start(options=OWN, timeout=240)
    assert bob.run_code("print(6 * 7)").strip() == "42"
    assert received(rnode, server_squat) == ""


def test_the_ports_stay_held_while_the_tunnels_reconnect(bob, rnode):
    start = log_lines(rnode)
    bob.start(options=OWN, timeout=240)
    api, server = ports_after(rnode, start)
    # the tunnel drops (the network between node and hub, a restarted sshd): alice is ready at once
    rnode.check_output("pkill -u bob -f '^ssh .*tunnelbot@'")
    squats = [squat(rnode, api, "api-reconnect"), squat(rnode, server, "server-reconnect")]
    assert [verdict(rnode, base) for base in squats] == ["refused 98", "refused 98"]
    wait_for(lambda: tunnels(rnode), timeout=60, what="bob's tunnel open again")
    output = wait_for(lambda: _run_code(bob), timeout=90, what="bob's server through its tunnels again")
    assert output.strip() == "42"
    assert all(received(rnode, base) == "" for base in squats)


def _run_code(client) -> str:
    try:
        return client.run_code("print(6 * 7)")
    except Exception:  # the tunnel is still being opened again
        return ""


def tunnels(rnode) -> list[str]:
    return rnode.run("pgrep -u bob -f '^ssh .*tunnelbot@'").stdout.split()
