"""Load test of the lab hub (issue 16, item 6; in the spirit of hubtraf): N users log in through the hub's login
page, each starts a small server on an oversubscribed partition, opens a kernel, runs a cell and stops, with a
ramp (user i starts at i * RAMP / N seconds) and a bound on the whole run. Run side by side in one run with stock
batchspawner on the same hub (a jupyterhub_config.d drop-in, as bench/spawn.py does).

Reported per spawner: failures by reason, spawn-to-ready p50/p95/p99, the hub API's p50/p95/p99 while the users
start, logins, the hub process's CPU seconds and peak memory, and slurmctld's job-info RPCs per minute (sdiag).

The hub API's latency: every GET of the users and of a probe that reads one user's model 4 times a second
throughout. A user waits for the server as the spawn page does, on the hub's progress event stream (its headers'
latency counts); until 2026-12-07 each asked for its server's model every 0.2 s, 500 requests a second for 100
users, which measured mostly the bench's own traffic.

The bench adds what it needs and removes it afterwards: N accounts load001.. (uid 5001..) on the hub, login and
compute nodes, in the group the hub may run Slurm commands as, with homes on the shared home volume; a Slurm
partition `load` over the compute nodes (OverSubscribe=FORCE:32, made with scontrol, not slurm.conf) and a
1-CPU, 1 GB, 1 h profile on it. Each node declares 22 GB, so at most 44 servers run at once; later ones pend.
Usage: .venv/bin/python -m bench.load [N [RAMP [BOUND]]]   (defaults 100 users, 60 s ramp, 900 s bound)
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import re
import subprocess
import sys
import threading
import time

from bench.spawn import POLL, PREFIX, STOCK, job_info_rpcs, pct, publish, sh, unit_usage, use_dropin
from tests.lab.hubclient import Hub, StartFailed, lab_certificate

PASSWORD = "load-in-the-lab"
GROUP = "students"  # the lab's jupyterhub_slurm_users_group and one of its allowed_groups
HOSTS = ("hub", "login", "node1", "node2")
FIRST_UID = 5001
PARTITION = "load"
OURS = """
spawn_options["partitions"].append({"name": "load", "max_cpus": 1, "max_gpus": 0, "max_hours": 1, "max_memory_gb": 1})
spawn_options["profiles"].append(
    {"slug": "load", "display_name": "Load test", "partition": "load", "cpus": 1, "memory_gb": 1, "hours": 1}
)
"""
STOCK_LOAD = 'c.SlurmSpawner.req_partition = "load"\nc.SlurmSpawner.req_runtime = "01:00:00"\n'


def names(n: int) -> list[str]:
    return [f"load{i:03d}" for i in range(1, n + 1)]


def add_users(n: int) -> None:
    accounts = "\n".join(f"{name} {FIRST_UID + i}" for i, name in enumerate(names(n)))
    create = (
        f"while read -r name uid; do getent passwd $name >/dev/null || {{ groupadd -g $uid $name && "
        f"useradd -M -N -u $uid -g $uid -G {GROUP} -d /home/$name -s /bin/bash $name; }}; done <<'EOF'\n{accounts}\nEOF"
    )
    for host in HOSTS:
        sh(host, create)
    homes = " ".join(names(n))
    sh(
        "hub",
        f"for u in {homes}; do mkdir -p /home/$u && chown $u:$u /home/$u && chmod 0700 /home/$u; done; "
        f"chpasswd <<'EOF'\n" + "\n".join(f"{u}:{PASSWORD}" for u in names(n)) + "\nEOF",
    )


def remove_users(admin: Hub, n: int) -> None:
    for name in names(n):
        admin.delete(f"/users/{name}")
    gone = " ".join(names(n))
    for host in HOSTS:
        sh(host, f"for u in {gone}; do userdel $u 2>/dev/null; groupdel $u 2>/dev/null; done; true")
    sh("hub", f"for u in {gone}; do rm -rf /home/$u; done")


def use(stock: bool | None) -> None:
    """The bench's drop-in: stock batchspawner or clusterhub's spawner with the load profile; None: removed."""
    use_dropin(None if stock is None else (STOCK.format(poll=POLL) + STOCK_LOAD if stock else OURS))


class Run:
    def __init__(self):
        self.lock = threading.Lock()
        self.api: list[float] = []
        self.logins: list[float] = []
        self.ready: list[float] = []
        self.failures: collections.Counter[str] = collections.Counter()
        self.done = 0

    def timed(self, response, *args, **kwargs):
        """requests' response hook: the hub API's latency (headers received) of each GET (a spawn's POST waits
        for the server up to JupyterHub's slow_spawn_timeout, a stop's DELETE for the job to end)."""
        if "/hub/api/" in response.url and response.request.method == "GET":
            with self.lock:
                self.api.append(response.elapsed.total_seconds())

    def fail(self, reason: str) -> None:
        # one line per kind of failure: numbers (job ids, ports, seconds) do not make kinds of their own
        with self.lock:
            self.failures[re.sub(r"\d+", "N", reason)[:160]] += 1


def user(run: Run, name: str, *, options: dict, at: float, deadline: float, cert: str) -> None:
    time.sleep(max(0.0, at - time.monotonic()))
    try:
        t0 = time.monotonic()
        hub = Hub(name, PASSWORD, verify=cert)
        with run.lock:
            run.logins.append(time.monotonic() - t0)
        hub.api.hooks["response"].append(run.timed)
        ready = hub.start_watching(options=options, timeout=max(10.0, deadline - time.monotonic()))
        with run.lock:
            run.ready.append(ready)
        out = hub.run_code("print(6 * 7)", timeout=max(10.0, deadline - time.monotonic()))
        if out.strip() != "42":
            run.fail(f"the cell printed {out.strip()[:40]!r}")
            return
        hub.stop(timeout=120)
        with run.lock:
            run.done += 1
    except StartFailed as e:
        run.fail(f"start failed: {e}")
    except TimeoutError as e:
        run.fail(f"timed out: {e}")
    except Exception as e:  # every failure is counted by its kind, the run goes on
        run.fail(f"{type(e).__name__}: {e}")


def measure(admin: Hub, n: int, ramp: float, bound: float, options: dict) -> dict:
    cert = lab_certificate(PREFIX)
    run = Run()
    rpcs0, (cpu0, _), t0 = job_info_rpcs(), unit_usage("jupyterhub"), time.monotonic()
    deadline = t0 + bound
    with cf.ThreadPoolExecutor(n) as pool:
        futures = [
            pool.submit(user, run, name, options=options, at=t0 + i * ramp / n, deadline=deadline, cert=cert)
            for i, name in enumerate(names(n))
        ]
        while not all(f.done() for f in futures):
            # a steady probe beside the users' own polls: the admin's GET of one user's model, 4 times a second
            run.timed(admin.get("/users/load001"))
            time.sleep(0.25)
    elapsed = time.monotonic() - t0
    cpu1, peak_kib = unit_usage("jupyterhub")  # the hub was restarted for this run: its peak is this run's
    rpcs = (job_info_rpcs() - rpcs0) * 60 / elapsed
    for name in names(n):  # whatever a failed user left
        admin.delete(f"/users/{name}/server")
    return {
        "users": n,
        "completed": run.done,
        "failures": dict(run.failures),
        "ready": [pct(run.ready, q) if run.ready else float("nan") for q in (0.5, 0.95, 0.99)],
        "api_ms": [1000 * pct(run.api, q) if run.api else float("nan") for q in (0.5, 0.95, 0.99)],
        "api_requests": len(run.api),
        "login": pct(run.logins, 0.5) if run.logins else float("nan"),
        "hub_cpu_s": cpu1 - cpu0,
        "hub_peak_mib": peak_kib / 1024,
        "rpc_per_min": rpcs,
        "seconds": elapsed,
    }


def wait_empty() -> None:
    for _ in range(240):
        if not sh("login", f"squeue -h -p {PARTITION} -o %i").split():
            return
        time.sleep(0.5)
    sh("login", f"scancel -p {PARTITION}")


def main() -> None:
    args = [float(a) for a in sys.argv[1:4]]
    n, ramp, bound = (
        int(args[0]) if args else 100,
        args[1] if len(args) > 1 else 60.0,
        args[2] if len(args) > 2 else 900.0,
    )
    admin = Hub("labadmin", "admin-in-the-lab", verify=lab_certificate(PREFIX))
    add_users(n)
    sh("login", f"scontrol create PartitionName={PARTITION} Nodes=node1,node2 OverSubscribe=FORCE:32 MaxTime=02:00:00")
    results = {}
    try:
        for label, stock in (("stock batchspawner", True), ("clusterhub", False)):
            use(stock)
            results[label] = measure(admin, n, ramp, bound, {} if stock else {"profile": "load", "image": "node"})
            print(label, results[label], flush=True)
            wait_empty()
    finally:
        use(None)
        sh("login", f"scancel -p {PARTITION}; sleep 2; scontrol delete PartitionName={PARTITION}")
        remove_users(admin, n)
    stock, ours = results["stock batchspawner"], results["clusterhub"]
    lines = [
        f"load bench, lab hub, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; {n} users, ramp {ramp:.0f} s, "
        f"each: log in, start, run a cell in a new kernel, stop",
        f"{'':34}{'stock':>12}{'clusterhub':>12}",
        f"{'users completed':34}{stock['completed']:>12}{ours['completed']:>12}",
        f"{'failed':34}{sum(stock['failures'].values()):>12}{sum(ours['failures'].values()):>12}",
    ]
    for i, q in enumerate(("p50", "p95", "p99")):
        lines.append(f"{'spawn to ready ' + q + ' (s)':34}{stock['ready'][i]:12.2f}{ours['ready'][i]:12.2f}")
    for i, q in enumerate(("p50", "p95", "p99")):
        lines.append(f"{'hub API ' + q + ' (ms)':34}{stock['api_ms'][i]:12.1f}{ours['api_ms'][i]:12.1f}")
    for key, label, fmt in (
        ("api_requests", "hub API requests", "12d"),
        ("login", "login p50 (s)", "12.2f"),
        ("hub_cpu_s", "hub CPU (s)", "12.1f"),
        ("hub_peak_mib", "hub peak memory (MiB)", "12.0f"),
        ("rpc_per_min", "job-info RPCs/min (sdiag)", "12.1f"),
        ("seconds", "run took (s)", "12.0f"),
    ):
        lines.append(f"{label:34}{stock[key]:{fmt}}{ours[key]:{fmt}}")
    for label, r in (("stock", stock), ("clusterhub", ours)):
        for reason, count in sorted(r["failures"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {label} failure x{count}: {reason}")
    publish("load", lines)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(f"{e.cmd[-1][:200]}: {e.stderr}")
