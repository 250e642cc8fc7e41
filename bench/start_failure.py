"""How long a user waits to learn that a start failed, clusterhub's spawner vs stock batchspawner, side by
side in one run on a running lab (`make lab`; CLUSTERHUB_LAB_PREFIX selects it).

bob's server fails at start for the same real reason under both: his ~/.jupyter config sets a trait to a
bad value, so JupyterLab exits right after batchspawner-singleuser reported its port. Stock batchspawner
is switched on by the same jupyterhub_config.d drop-in as bench/spawn.py (the nodes' environment, no
image). Each try is timed from the spawn request to the moment the hub no longer lists the server as
pending, and records whether the failure named its cause.
Usage: .venv/bin/python bench/start_failure.py [N]   (N tries of each, default 3)
"""

from __future__ import annotations

import shlex
import statistics
import sys
import time

from bench.spawn import publish, sh, use_stock  # run as `python -m bench.start_failure` from the checkout
from tests.lab.hubclient import Hub, StartFailed, lab_certificate

CONFIG = "/home/bob/.jupyter/jupyter_server_config.py"
CAUSE = "port_retries"
OPTIONS = {"profile": "small", "image": "node"}


def one_try(bob: Hub) -> tuple[float, bool, int]:
    """(seconds from the request to the failure, whether the message named the cause, the request's status)."""
    t0 = time.monotonic()
    try:
        bob.start(options=OPTIONS, timeout=400)
    except StartFailed as e:
        return time.monotonic() - t0, CAUSE in e.message, e.status
    bob.stop()
    raise RuntimeError("the server started although its config is broken")


def main() -> None:
    tries = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    broken = shlex.quote('c.ServerApp.port_retries = "many"')
    sh("login", f'install -d -o bob -g "$(id -gn bob)" /home/bob/.jupyter && echo {broken} > {CONFIG}')
    results: dict[str, list[tuple[float, bool, int]]] = {"stock": [], "clusterhub": []}
    try:
        for _ in range(tries):
            for name in ("stock", "clusterhub"):
                use_stock(name == "stock")
                bob = Hub("bob", "bob-in-the-lab", verify=lab_certificate())
                bob.stop()
                results[name].append(one_try(bob))
                bob.stop()
    finally:
        sh("login", f"rm -f {CONFIG}")
        use_stock(False)
    stock, ours = (statistics.median(r[0] for r in results[n]) for n in ("stock", "clusterhub"))
    lines = [
        f"start-failure bench, lab hub, 2 cores, {time.strftime('%Y-%m-%d')}; {tries} tries each, alternating",
        f"{'':40} {'stock':>8} {'clusterhub':>11} {'ratio':>7}",
        f"{'request -> failure reported, median (s)':40} {stock:8.1f} {ours:11.1f} {ours / stock:7.2f}",
        f"{'failures that named the cause':40} {sum(r[1] for r in results['stock']):8d}"
        f" {sum(r[1] for r in results['clusterhub']):11d}",
        f"{'spawn requests answered HTTP 500':40} {sum(r[2] == 500 for r in results['stock']):8d}"
        f" {sum(r[2] == 500 for r in results['clusterhub']):11d}",
    ]
    publish("start-failure", lines)


if __name__ == "__main__":
    main()
