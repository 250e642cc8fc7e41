"""Spawn-to-ready in remote HPC mode vs direct mode, side by side in one run on a running lab
(`make lab`; CLUSTERHUB_LAB_PREFIX selects it).

Both run alice's server in the same Apptainer image (python.sif) with the same resources, alternating
so that drift in the lab affects both alike:
  direct   profile small: sbatch by the hub as alice, node1/node2, the hub connects to the node
  remote   profile hpc: sbatch over SSH through hpc-gate as jupyterhpc, rnode1 on the HPC network,
           the server reached through the job's SSH tunnel
Each spawn is timed from the REST request to "ready" (the hub got an answer from the server).
Usage: .venv/bin/python bench/remote.py [N]   (N spawns of each, default 5)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from hubclient import Hub, lab_certificate  # noqa: E402

MODES = {
    "direct": {"profile": "small", "image": "python"},
    "remote": {"profile": "hpc", "image": "python"},
}


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


if __name__ == "__main__":
    main()
