"""Spawn latency and Slurm polling load of the lab hub, clusterhub's spawner vs stock batchspawner,
measured side by side in one run on a running lab (`make lab`; CLUSTERHUB_LAB_PREFIX selects it).

For each spawner (stock: a jupyterhub_config.d drop-in that switches to batchspawner.SlurmSpawner with
the same partition and resources, as its documentation configures it):
  sequential   N spawns one after another: request -> ready, median and p95
  concurrent   C named servers requested at once (for each count in C): request -> each ready, median and p95
  polling      with M servers running, slurmctld's job-info RPCs (sdiag) and hub API latency over 60 s
  local        the same server started N times as a plain process on the node of the first sequential spawn
               (its command and environment, without Slurm or the hub): start -> its API answers, median; the
               ratio of the sequential median to it is what the Slurm path costs
  breakdown    where the sequential spawns' seconds go (median of each phase), from the hub's log, the job's
               output (the batch script's banner time, Jupyter Server's log) on one clock: the hub until sbatch
               returned, Slurm until the script ran, Python until the server's first log line, the server until
               it listened, the hub until it saw it ready
Usage: .venv/bin/python bench/spawn.py [N C M]   (C: one or more counts, as 4,8)
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from tests.lab.hubclient import Hub, lab_certificate  # run as `python -m bench.spawn` from the checkout

ROOT = Path(__file__).resolve().parents[1]


PREFIX = os.environ.get("CLUSTERHUB_LAB_PREFIX", "chlab")
DROPIN = "/etc/jupyterhub/jupyterhub_config.d/90-bench.py"
# the lab hub's poll interval (inventories/lab), which the stock spawner gets too
POLL = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/hub.yml").read_text())["jupyterhub_poll_interval"]
STOCK = """
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.SlurmSpawner.req_partition = "jupyter"
c.SlurmSpawner.req_nprocs = "1"
c.SlurmSpawner.req_memory = "1G"
c.SlurmSpawner.req_runtime = "02:00:00"
c.SlurmSpawner.req_keepvars_extra = "PATH"
# the hub's sudo rule passes variables by name (env_keep), never a caller's whole environment: no -E
c.SlurmSpawner.exec_prefix = "sudo -n -u {{username}}"
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


# the bench's named servers, beyond the lab's own limit of named servers per user
NAMED = "c.JupyterHub.named_server_limit_per_user = 25\n"


def use_dropin(text: str | None) -> None:
    """The benches' jupyterhub_config.d drop-in with `text` (None: none, the lab's own configuration), then the
    hub restarted to read it."""
    if text is None:
        sh("hub", f"rm -f {DROPIN}")
    else:
        sh("hub", f"cat > {DROPIN} <<'EOF'\n{text}\nEOF\nchgrp jupyterhub {DROPIN}; chmod 0640 {DROPIN}")
    restart_hub()


def use_stock(on: bool | None) -> None:
    """True: stock batchspawner; False: clusterhub's spawner; both with the bench's named servers. None: the
    lab's own configuration again."""
    use_dropin(None if on is None else NAMED + (STOCK.format(poll=POLL) if on else ""))


def unit_usage(unit: str) -> tuple[float, int]:
    """(CPU seconds, peak resident KiB: the kernel's high-water mark) of a systemd unit's main process on the hub."""
    out = sh(
        "hub",
        f"pid=$(systemctl show -p MainPID --value {unit}); cat /proc/$pid/stat; getconf CLK_TCK; "
        "grep VmHWM /proc/$pid/status",
    ).split()
    # stat's fields 14 and 15 (utime, stime; the command field has no space), the clock ticks, VmHWM: N kB
    return (int(out[13]) + int(out[14])) / int(out[-4]), int(out[-2])


def job_info_rpcs() -> int:
    """Job-query RPCs slurmctld has served (squeue -j is JOB_INFO_SINGLE, squeue --name is JOB_INFO)."""
    out = sh("login", "sdiag")
    return sum(
        int(n) for n in re.findall(r"REQUEST_JOB_(?:INFO|INFO_SINGLE|USER_INFO)\s+\(\s*\d+\)\s+count:(\d+)", out)
    )


# clusterhub's servers: the small profile in the nodes' own environment, named, as JupyterHub otherwise starts
# a server with the options of the user's last start (another image, another profile)
OPTIONS = {"profile": "small", "image": "node"}


def server_ready(admin: Hub, user: str, name: str, options: dict, timeout: float = 300) -> float:
    t0 = time.monotonic()
    path = f"/users/{user}/servers/{name}" if name else f"/users/{user}/server"
    r = admin.post(path, json=options)
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


# the lab's clocks are the host's (containers share its kernel), its logs in UTC
STAMP = r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\.\d+)"
PHASES = (
    "hub until sbatch returned",
    "Slurm until the script ran",
    "Python until first log line",
    "server until listening",
    "hub until it saw it ready",
)


def _when(pattern: str, text: str, after: float) -> float | None:
    """The time of the first line matching `pattern` (its group 1) at or after `after`; None when none."""
    for match in re.finditer(pattern, text, re.MULTILINE):
        when = datetime.fromisoformat(match.group(1).replace(" ", "T")).replace(tzinfo=UTC).timestamp()
        if when >= after:
            return when
    return None


def phases(user: str, job: str, requested: float) -> list[float | None]:
    """Seconds of each of PHASES for one spawn (None where a mark is missing: its time goes to the next phase)."""
    hub = sh("hub", f"journalctl -u jupyterhub --since @{int(requested) - 1} --no-pager -o cat")
    # clusterhub's output file is a dot file, stock batchspawner's is not
    log = sh("hub", f"cat /home/{user}/{{.,}}jupyterhub_slurmspawner_{job}.log 2>/dev/null || true")
    patterns = [
        rf"^\[I {STAMP} JupyterHub batchspawner:\d+\] Job submitted\. output: {job}$",
        rf"^clusterhub: job {job} on .* at {STAMP}$",
        rf"^\[[IWD] {STAMP} \w+\]",
        rf"^\[I {STAMP} \w+\] Jupyter Server \S+ is running at",
        rf"^\[I {STAMP} JupyterHub base:\d+\] User {user} took [\d.]+ seconds to start",
    ]
    out: list[float | None] = []
    last = requested
    for pattern in patterns:
        mark = _when(pattern, hub if "JupyterHub" in pattern else log, requested)
        out.append(None if mark is None else mark - last)
        last = mark if mark is not None else last
    return out


# Run on the node as root with the running server's pid: starts that server's own command (the part after
# batchspawner's wrapper, which would report a port to the hub) with its environment as its user, on a free
# port, and times it until its API answers HTTP, as the spawner's own check does. Prints one time per line.
LOCAL = r"""
import os, signal, socket, subprocess, sys, time, urllib.error, urllib.request
pid, n = sys.argv[1], int(sys.argv[2])
env = dict(v.split("=", 1) for v in open(f"/proc/{pid}/environ").read().split("\0") if "=" in v)
argv = open(f"/proc/{pid}/cmdline").read().split("\0")[:-1]
argv = argv[next(i for i, a in enumerate(argv) if a.endswith("/jupyterhub-singleuser")):]
for _ in range(n):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.run(["runuser", "-u", env["USER"], "--", "mktemp", "-d"], capture_output=True, text=True)
    env["JUPYTER_RUNTIME_DIR"] = run.stdout.strip()
    url = f"http://127.0.0.1:{port}{env['JUPYTERHUB_SERVICE_PREFIX']}api"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["runuser", "-u", env["USER"], "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv,
         f"--port={port}", "--ip=127.0.0.1"],
        cwd=env["HOME"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2)
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.02)
            continue
        break
    took = time.monotonic() - t0
    if proc.poll() is not None:
        sys.exit(f"the local server exited with {proc.returncode}")
    print(took, flush=True)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()
    subprocess.run(["rm", "-rf", env["JUPYTER_RUNTIME_DIR"]])
"""


def local_starts(user: str, job: str, n: int) -> list[float]:
    """Seconds of n plain starts of the server of `job` on its node (LOCAL)."""
    node = sh("login", f"squeue -h -j {job} -o %N").strip()
    pid = sh(node, f"pgrep -n -u {user} -f /jupyterhub-singleuser").strip()
    argv = ["docker", "exec", "-i", f"{PREFIX}-{node}", "python3", "-", pid, str(n)]
    out = subprocess.run(argv, input=LOCAL, check=True, capture_output=True, text=True).stdout
    return [float(line) for line in out.split()]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def measure(admin: Hub, n: int, cs: list[int], m: int, options: dict) -> dict:
    stop_all(admin, "alice")
    seq, parts, local = [], [], []
    for i in range(n):
        requested = time.time()
        seq.append(server_ready(admin, "alice", "", options))
        (job,) = sh("login", "squeue -h -u alice -o %i").split()
        parts.append(phases("alice", job, requested))
        if i == 0:
            local = local_starts("alice", job, n)
        stop_all(admin, "alice")
    conc = {}
    for c in cs:
        with cf.ThreadPoolExecutor(c) as pool:
            conc[c] = list(pool.map(lambda i: server_ready(admin, "alice", f"c{i}", options), range(c)))
        stop_all(admin, "alice")
    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: server_ready(admin, "alice", f"p{i}", options), range(m)))
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
        "local_median": statistics.median(local),
        "slurm_over_local": statistics.median(seq) / statistics.median(local),
        **{f"conc{c}_median": statistics.median(times) for c, times in conc.items()},
        **{f"conc{c}_p95": pct(times, 0.95) for c, times in conc.items()},
        "rpc_per_min": rpcs,
        "api_median_ms": 1000 * statistics.median(api),
        "phases": [
            statistics.median(p[i] for p in parts) if all(p[i] is not None for p in parts) else None
            for i in range(len(PHASES))
        ],
    }


def main() -> None:
    # the lab's jupyter partition holds 16 one-CPU servers (2 nodes x 2 CPUs x OverSubscribe FORCE:4)
    n, c, m = sys.argv[1:4] if len(sys.argv) > 3 else ("20", "4,8", "12")
    n, cs, m = int(n), [int(x) for x in c.split(",")], int(m)
    admin = Hub("labadmin", "admin-in-the-lab", verify=lab_certificate(PREFIX))
    results = {}
    try:
        for label, stock in (("stock batchspawner", True), ("clusterhub", False)):
            use_stock(stock)
            results[label] = measure(admin, n, cs, m, {} if stock else OPTIONS)
            print(label, results[label], flush=True)
    finally:
        use_stock(None)
    ours, stock = results["clusterhub"], results["stock batchspawner"]
    lines = [
        f"spawn bench, lab hub, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; N={n} sequential, "
        f"C={c} concurrent, M={m} running for the polling window",
        f"{'':32}{'stock':>10}{'clusterhub':>12}{'ratio':>8}",
    ]
    for key, label in (
        ("seq_median", "sequential spawn median (s)"),
        ("seq_p95", "sequential spawn p95 (s)"),
        ("local_median", "local process start median (s)"),
        ("slurm_over_local", "sequential / local process"),
        *((f"conc{c}_{q}", f"{c} concurrent spawns, {q} (s)") for c in cs for q in ("median", "p95")),
        ("rpc_per_min", f"job-info RPCs/min, {m} servers"),
        ("api_median_ms", f"GET /users median (ms), {m} srv"),
    ):
        lines.append(f"{label:32}{stock[key]:10.2f}{ours[key]:12.2f}{ours[key] / stock[key]:8.2f}")
    lines.append(f"{'sequential spawn, median (s)':32}{'stock':>10}{'clusterhub':>12}")
    for i, phase in enumerate(PHASES):
        cells = ["n/a" if r["phases"][i] is None else f"{r['phases'][i]:.2f}" for r in (stock, ours)]
        lines.append(f"  {phase:30}{cells[0]:>10}{cells[1]:>12}")
    publish("spawn", lines)


if __name__ == "__main__":
    main()
