"""Spawn-to-ready in remote HPC mode vs direct mode, and the cost of the tunnel hardening, side by side in one
run on a running lab (`make lab`; CLUSTERHUB_LAB_PREFIX selects it).

All run alice's server in the same Apptainer image (python.sif) with the same resources, alternating so
that drift in the lab affects each alike:
  direct   profile small: sbatch by the hub as alice, node1/node2, the hub connects to the node
  remote   profile hpc: sbatch over SSH through hpc-gate (logged in as clusterhub-gate, sudo to jupyterhpc),
           rnode1 on the HPC network, the server reached through the job's SSH tunnels (hub API through a
           Unix-socket forward and clusterhub-relay, the server's port checked before the hub's end opens)
Each spawn is timed from the REST request to "ready" (the hub got an answer from the server). Also timed:
the sudo hop hpc-gate makes for sbatch, scancel and joblog (clusterhub-gate -> jupyterhpc), and what each
server's own tunnel key costs: the hub making and publishing it (clusterhub.tunnel_keys, in the hub's venv)
and a tunnel login that sshd checks through the keys command, against the spawn. (Wrappers older than the
per-job keys cannot log in any more - the shared key is gone - so the wrapper-to-wrapper comparison of
earlier runs, `before`, is no longer made.)
Usage: python -m bench.remote [N]   (N spawns of each, default 5)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from tests.lab.hubclient import Hub, lab_certificate  # run as `python -m bench.remote` from the checkout

PREFIX = os.environ.get("CLUSTERHUB_LAB_PREFIX", "chlab")
MODES = {
    "direct": {"profile": "small", "image": "python"},
    "remote": {"profile": "hpc", "image": "python"},
}
# on the hub, as its service user: median milliseconds of making and publishing one server's tunnel key
KEY_COST = """
import statistics, tempfile, time
from clusterhub import tunnel_keys
times = []
with tempfile.TemporaryDirectory() as keys:
    for _ in range(20):
        t0 = time.monotonic()
        _, public = tunnel_keys.generate("bench")
        tunnel_keys.publish(keys, 47999, public)
        times.append(time.monotonic() - t0)
print(statistics.median(times) * 1000)
"""


def on(host: str, *argv: str) -> str:
    return subprocess.run(
        ["docker", "exec", f"{PREFIX}-{host}", *argv], capture_output=True, text=True, check=True
    ).stdout


def key_cost() -> float:
    """Median ms of one server's tunnel key on the hub (generate + publish), as the hub's user."""
    return float(on("hub", "runuser", "-u", "jupyterhub", "--", "/opt/jupyterhub/bin/python", "-I", "-c", KEY_COST))


def tunnel_login(n: int = 10) -> float:
    """Median seconds of a tunnel login from the login node (a published key, checked by sshd through the keys
    command; the forced nologin ends it at once)."""
    keys = "/tmp/bench-tunnel-key"
    on("login", "sh", "-c", f"rm -f {keys} {keys}.pub && ssh-keygen -q -t ed25519 -N '' -f {keys}")
    public = " ".join(on("login", "cat", f"{keys}.pub").split()[:2])
    publish = (
        f"from clusterhub import tunnel_keys; tunnel_keys.publish('/var/lib/clusterhub-tunnel-keys', 47998, {public!r})"
    )
    withdraw = "from clusterhub import tunnel_keys; tunnel_keys.withdraw('/var/lib/clusterhub-tunnel-keys', 47998)"
    hub_python = ["runuser", "-u", "jupyterhub", "--", "/opt/jupyterhub/bin/python", "-I", "-c"]
    on("hub", *hub_python, publish)
    known = "/home/jupyterhpc/.ssh/tunnel_known_hosts"
    ssh = ["ssh", "-i", keys, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}"]
    times = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            subprocess.run(
                ["docker", "exec", f"{PREFIX}-login", *ssh, "tunnelbot@hub"], capture_output=True, check=False
            )
            times.append(time.monotonic() - t0)
    finally:
        on("hub", *hub_python, withdraw)
        on("login", "rm", "-f", keys, f"{keys}.pub")
    return statistics.median(times)


def sudo_hop(n: int = 20) -> tuple[float, float]:
    """Median seconds of `hpc-gate --run 'joblog 1'` as jupyterhpc directly and through sudo from clusterhub-gate."""
    gate = "/usr/local/libexec/clusterhub/hpc-gate"
    runs = {
        "direct": ["runuser", "-u", "jupyterhpc", "--", gate, "--run", "joblog 1"],
        "sudo": ["runuser", "-u", "clusterhub-gate", "--", "sudo", "-n", "-u", "jupyterhpc", gate, "--run", "joblog 1"],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(n):
        for name, argv in runs.items():
            t0 = time.monotonic()
            subprocess.run(["docker", "exec", f"{PREFIX}-login", *argv], capture_output=True, check=True)
            times[name].append(time.monotonic() - t0)
    return statistics.median(times["direct"]), statistics.median(times["sudo"])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    alice = Hub("alice", "alice-in-the-lab", verify=lab_certificate())
    alice.stop()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i in range(n):
        for mode, options in MODES.items():
            seconds = alice.start(options=options, timeout=300)
            # the server answers through the proxy, as a browser would reach it
            alice.user_get("/api/status").raise_for_status()
            times[mode].append(seconds)
            alice.stop()
            time.sleep(2)  # the node's slot is free again before the next spawn
            print(f"run {i + 1}/{n} {mode}: {seconds:.1f} s", flush=True)
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"\nspawn-to-ready, median of {n} (min-max):")
    for mode, values in times.items():
        print(f"  {mode:7s} {median[mode]:6.1f} s  ({min(values):.1f}-{max(values):.1f})")
    print(f"  remote / direct: {median['remote'] / median['direct']:.2f}")
    key, login = key_cost(), tunnel_login()
    print(
        f"a server's own tunnel key: {key:.0f} ms to make and publish on the hub, a tunnel login {login * 1000:.0f} ms"
    )
    print(f"  (key + two tunnel logins) / remote spawn-to-ready: {(key / 1000 + 2 * login) / median['remote']:.3f}")
    direct, sudo = sudo_hop()
    print(f"hpc-gate --run as jupyterhpc (median of 20): {direct * 1000:.0f} ms direct, {sudo * 1000:.0f} ms via sudo")


if __name__ == "__main__":
    main()
