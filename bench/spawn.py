"""Spawn latency and Slurm polling load of the lab hub, clusterhub's spawner vs stock batchspawner,
measured side by side in one run on a running lab (`make lab`; CLUSTERHUB_LAB_PREFIX selects it).

For each spawner (stock: a jupyterhub_config.d drop-in that switches to batchspawner.SlurmSpawner with
the same partition and resources, as its documentation configures it):
  sequential   N spawns one after another: request -> ready, median and p95
  concurrent   C named servers requested at once: request -> each ready, median and p95
  polling      with M servers running, slurmctld's job-info RPCs (sdiag) and hub API latency over 60 s
Usage: .venv/bin/python bench/spawn.py [N C M]
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.lab.hubclient import Hub, lab_certificate  # run as `python -m bench.spawn` from the checkout

ROOT = Path(__file__).resolve().parents[1]


PREFIX = os.environ.get("CLUSTERHUB_LAB_PREFIX", "chlab")
DROPIN = "/etc/jupyterhub/jupyterhub_config.d/90-bench-stock.py"
# the lab hub's poll interval (inventories/lab), which the stock spawner gets too
POLL = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/hub.yml").read_text())["jupyterhub_poll_interval"]
STOCK = """
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.SlurmSpawner.req_partition = "jupyter"
c.SlurmSpawner.req_nprocs = "1"
c.SlurmSpawner.req_memory = "1G"
c.SlurmSpawner.req_runtime = "02:00:00"
c.SlurmSpawner.req_keepvars_extra = "PATH"
c.SlurmSpawner.cmd = ["/opt/jupyter/bin/jupyterhub-singleuser"]
c.SlurmSpawner.batchspawner_singleuser_cmd = "/opt/jupyter/bin/batchspawner-singleuser"
c.SlurmSpawner.start_timeout = 300
c.SlurmSpawner.poll_interval = {poll}  # the lab hub's interval, so polling load compares like with like
"""


def publish(name: str, lines: list[str]) -> None:
    """A bench's table: printed, and written to artifacts/bench-<name>.txt."""
    report = "\n".join(lines)
    print(report)
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / f"bench-{name}.txt").write_text(report + "\n")


def sh(host: str, cmd: str) -> str:
    return subprocess.run(
        ["docker", "exec", f"{PREFIX}-{host}", "bash", "-c", cmd], check=True, capture_output=True, text=True
    ).stdout


def restart_hub() -> None:
    sh("hub", "systemctl restart jupyterhub")
    for _ in range(120):
        if (
            subprocess.run(
                [
                    "docker",
                    "exec",
                    f"{PREFIX}-hub",
                    "python3",
                    "-c",
                    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/hub/health')",
                ],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        ):
            return
        time.sleep(0.5)
    raise RuntimeError("hub did not come back")


def use_stock(on: bool) -> None:
    if on:
        stock = STOCK.format(poll=POLL)
        sh("hub", f"cat > {DROPIN} <<'EOF'\n{stock}\nEOF\nchgrp jupyterhub {DROPIN}; chmod 0640 {DROPIN}")
    else:
        sh("hub", f"rm -f {DROPIN}")
    restart_hub()


def job_info_rpcs() -> int:
    """Job-query RPCs slurmctld has served (squeue -j is JOB_INFO_SINGLE, squeue --name is JOB_INFO)."""
    out = sh("login", "sdiag")
    return sum(
        int(n) for n in re.findall(r"REQUEST_JOB_(?:INFO|INFO_SINGLE|USER_INFO)\s+\(\s*\d+\)\s+count:(\d+)", out)
    )


def server_ready(admin: Hub, user: str, name: str, timeout: float = 300) -> float:
    t0 = time.monotonic()
    path = f"/users/{user}/servers/{name}" if name else f"/users/{user}/server"
    r = admin.post(path, json={})
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn refused: {r.status_code} {r.text[:300]}")
    while time.monotonic() - t0 < timeout:
        s = admin.get(f"/users/{user}").json()["servers"].get(name)
        if s and s.get("ready"):
            return time.monotonic() - t0
        if not s:
            raise RuntimeError(f"{user}/{name} failed to start")
        time.sleep(0.1)
    raise TimeoutError(f"{user}/{name} not ready")


def stop_all(admin: Hub, user: str) -> None:
    """Stop every server of the user and delete the named ones (stopped ones too)."""
    servers = admin.get(f"/users/{user}?include_stopped_servers=1").json()["servers"]
    for name in servers:
        if name:
            admin.delete(f"/users/{user}/servers/{name}", json={"remove": True})
        else:
            admin.delete(f"/users/{user}/server")
    for _ in range(300):
        left = admin.get(f"/users/{user}?include_stopped_servers=1").json()["servers"]
        if all(name == "" and not (s.get("ready") or s.get("pending")) for name, s in left.items()):
            break
        time.sleep(0.2)
    for _ in range(120):
        if not sh("login", f"squeue -h -u {user} -o %i").split():  # both spawners' jobs
            return
        time.sleep(0.5)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def measure(admin: Hub, n: int, c: int, m: int) -> dict:
    stop_all(admin, "alice")
    seq = []
    for _ in range(n):
        seq.append(server_ready(admin, "alice", ""))
        stop_all(admin, "alice")
    with cf.ThreadPoolExecutor(c) as pool:
        conc = list(pool.map(lambda i: server_ready(admin, "alice", f"c{i}"), range(c)))
    stop_all(admin, "alice")
    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: server_ready(admin, "alice", f"p{i}"), range(m)))
    before, t0 = job_info_rpcs(), time.monotonic()
    api = []
    while time.monotonic() - t0 < 60:
        s = time.monotonic()
        admin.get("/users")
        api.append(time.monotonic() - s)
        time.sleep(1)
    rpcs = (job_info_rpcs() - before) * 60 / (time.monotonic() - t0)
    stop_all(admin, "alice")
    return {
        "seq_median": statistics.median(seq),
        "seq_p95": pct(seq, 0.95),
        "conc_median": statistics.median(conc),
        "conc_p95": pct(conc, 0.95),
        "rpc_per_min": rpcs,
        "api_median_ms": 1000 * statistics.median(api),
    }


def main() -> None:
    # the lab's jupyter partition holds 16 one-CPU servers (2 nodes x 2 CPUs x OverSubscribe FORCE:4)
    n, c, m = (int(a) for a in sys.argv[1:4]) if len(sys.argv) > 3 else (20, 10, 12)
    admin = Hub("labadmin", "admin-in-the-lab", verify=lab_certificate(PREFIX))
    results = {}
    try:
        for label, stock in (("stock batchspawner", True), ("clusterhub", False)):
            use_stock(stock)
            results[label] = measure(admin, n, c, m)
            print(label, results[label], flush=True)
    finally:
        use_stock(False)
    ours, stock = results["clusterhub"], results["stock batchspawner"]
    lines = [
        f"spawn bench, lab hub, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; N={n} sequential, "
        f"C={c} concurrent, M={m} running for the polling window",
        f"{'':32}{'stock':>10}{'clusterhub':>12}{'ratio':>8}",
    ]
    for key, label in (
        ("seq_median", "sequential spawn median (s)"),
        ("seq_p95", "sequential spawn p95 (s)"),
        ("conc_median", "concurrent spawn median (s)"),
        ("conc_p95", "concurrent spawn p95 (s)"),
        ("rpc_per_min", f"job-info RPCs/min, {m} servers"),
        ("api_median_ms", f"GET /users median (ms), {m} srv"),
    ):
        lines.append(f"{label:32}{stock[key]:10.2f}{ours[key]:12.2f}{ours[key] / stock[key]:8.2f}")
    publish("spawn", lines)


if __name__ == "__main__":
    main()
