"""Spawn-to-ready in remote HPC mode vs direct mode, and the cost of the tunnel hardening, side by side in one
run on a running lab (`make lab`; CLUSTERHUB_LAB_PREFIX selects it).

All run alice's server in the same Apptainer image (python.sif) with the same resources, alternating so
that drift in the lab affects each alike:
  direct   profile small: sbatch by the hub as alice, node1/node2, the hub connects to the node
  remote   profile hpc: sbatch over SSH through hpc-gate (logged in as clusterhub-gate, sudo to jupyterhpc),
           rnode1 on the HPC network, the server reached through the job's SSH tunnels (hub API through a
           Unix-socket forward and clusterhub-relay, the server's port checked before the hub's end opens)
  before   the same as remote, with the job wrapper of git revision BEFORE (default 60bfec6, the last one
           before the hardening: one tunnel, ports picked free and used unchecked) put on rnode1 for the run
Each spawn is timed from the REST request to "ready" (the hub got an answer from the server). Also timed:
the sudo hop hpc-gate now makes for sbatch, scancel and joblog (clusterhub-gate -> jupyterhpc).
Usage: .venv/bin/python bench/remote.py [N] [BEFORE]   (N spawns of each, default 5)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.lab.hubclient import Hub, lab_certificate  # run as `python -m bench.remote` from the checkout

ROOT = Path(__file__).resolve().parents[1]


PREFIX = os.environ.get("CLUSTERHUB_LAB_PREFIX", "chlab")
WRAPPER = "/usr/local/bin/clusterhub-startjob"
TEMPLATE = "roles/job_wrappers/templates/usr/local/bin/clusterhub-startjob.j2"
MODES = {
    "direct": {"profile": "small", "image": "python"},
    "remote": {"profile": "hpc", "image": "python"},
    "before": {"profile": "hpc", "image": "python"},
}


def node(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["docker", "exec", "-i", f"{PREFIX}-rnode1", *argv], input=stdin, capture_output=True, text=True, check=True
    ).stdout


def use_wrapper(text: str) -> None:
    node("sh", "-c", f"cat > {WRAPPER}.new && chmod 0755 {WRAPPER}.new && mv {WRAPPER}.new {WRAPPER}", stdin=text)


def old_wrapper(revision: str) -> str:
    template = subprocess.run(
        ["git", "show", f"{revision}:{TEMPLATE}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return template.replace("{{ ansible_managed | comment }}", f"# bench/remote.py: the wrapper of {revision}")


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
    before = sys.argv[2] if len(sys.argv) > 2 else "60bfec6"
    alice = Hub("alice", "alice-in-the-lab", verify=lab_certificate())
    alice.stop()
    current = node("cat", WRAPPER)
    previous = old_wrapper(before)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for i in range(n):
            for mode, options in MODES.items():
                if mode in ("remote", "before"):
                    use_wrapper(previous if mode == "before" else current)
                seconds = alice.start(options=options, timeout=300)
                # the server answers through the proxy, as a browser would reach it
                alice.user_get("/api/status").raise_for_status()
                times[mode].append(seconds)
                alice.stop()
                time.sleep(2)  # the node's slot is free again before the next spawn
                print(f"run {i + 1}/{n} {mode}: {seconds:.1f} s", flush=True)
    finally:
        use_wrapper(current)
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"\nspawn-to-ready, median of {n} (min-max):")
    for mode, values in times.items():
        print(f"  {mode:7s} {median[mode]:6.1f} s  ({min(values):.1f}-{max(values):.1f})")
    print(f"  remote / direct: {median['remote'] / median['direct']:.2f}")
    print(f"  remote (hardened) / before ({before}): {median['remote'] / median['before']:.2f}")
    direct, sudo = sudo_hop()
    print(f"hpc-gate --run as jupyterhpc (median of 20): {direct * 1000:.0f} ms direct, {sudo * 1000:.0f} ms via sudo")


if __name__ == "__main__":
    main()
