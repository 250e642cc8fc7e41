"""The notebook runs service on a running lab (`make lab`; CLUSTERHUB_LAB_PREFIX selects it), through the hub's
proxy with a real hub token:

1. submit-to-start of one run on the idle cluster: the POST's answer, then until the API says IN_PROGRESS, with
   Slurm's own share (sacct Submit -> Start) beside it;
2. N small runs submitted at once (default 50): until all are final, how many completed, none lost, and the
   service's CPU seconds and peak memory meanwhile;
3. the list API with 10,000 records of one user (written into the service's database first, as the service
   writes them): p50/p95 of `GET scheduler/jobs?limit=100` over 100 requests.

Usage: .venv/bin/python -m bench.runs [N]
"""

from __future__ import annotations

import statistics
import sys
import time

from bench.spawn import publish, sh, unit_usage
from tests.lab.hubclient import Hub, lab_certificate, parameterised_notebook

RUNS = "/services/runs/scheduler"
SMALL = {"profile": "small", "runtime_environment_name": "node", "parameters": {"n": 2}}
SEED = """
import sys, time, uuid
from clusterhub.runs.store import Run, Store
store = Store("sqlite:////var/lib/clusterhub-runs/runs.sqlite")
with store.engine.begin() as db:
    from clusterhub.runs.store import runs, _to_row
    now = time.time() - 86400
    db.execute(runs.insert(), [_to_row(Run(run_id=str(uuid.uuid4()), owner="alice", status="COMPLETED",
        create_time=now + i, update_time=now + i, name=f"seed {i}", job_id=str(10**6 + i)).__dict__)
        for i in range(int(sys.argv[1]))])
"""


def post(alice: Hub, source: str) -> dict:
    r = alice.api.post(f"{alice.url}{RUNS}/jobs", json={**SMALL, "notebook": parameterised_notebook(source)})
    r.raise_for_status()
    return r.json()


def status(alice: Hub, run_id: str) -> str:
    return alice.api.get(f"{alice.url}{RUNS}/jobs/{run_id}").json()["status"]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    alice = Hub("alice", "alice-in-the-lab", verify=lab_certificate())
    lines = [f"runs bench, lab hub, 2 cores, {time.strftime('%Y-%m-%d')}"]

    t0 = time.monotonic()
    created = post(alice, "print(n)")
    answered = time.monotonic() - t0
    while status(alice, created["job_id"]) == "QUEUED":
        time.sleep(0.1)
    started = time.monotonic() - t0
    while status(alice, created["job_id"]) == "IN_PROGRESS":
        time.sleep(0.5)
    slurm = sh("login", f"sacct -n -X -P -j {created['slurm_job_id']} -o Submit,Start").strip().split("|")
    slurm_s = time.mktime(time.strptime(slurm[1], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.strptime(slurm[0], "%Y-%m-%dT%H:%M:%S")
    )
    lines += [
        f"one run: POST answered {answered:.2f} s, IN_PROGRESS seen after {started:.2f} s "
        f"(Slurm's submit -> start {slurm_s:.0f} s; the service polls every 5 s)",
    ]

    cpu0, _ = unit_usage("clusterhub-runs")
    t0 = time.monotonic()
    ids = [post(alice, "print(n)")["job_id"] for _ in range(count)]
    submitted = time.monotonic() - t0
    final: dict[str, str] = {}
    while len(final) < count and time.monotonic() - t0 < 1800:
        for run_id in ids:
            if run_id not in final and (s := status(alice, run_id)) not in ("QUEUED", "IN_PROGRESS"):
                final[run_id] = s
        time.sleep(2)
    elapsed = time.monotonic() - t0
    cpu1, peak = unit_usage("clusterhub-runs")
    done = sum(s == "COMPLETED" for s in final.values())
    lines += [
        f"{count} runs at once: submitted in {submitted:.1f} s, all final after {elapsed:.0f} s "
        f"({count / elapsed * 60:.1f} runs/min); {done} completed, {count - len(final)} not final, "
        f"{len(final) - done} failed; service {cpu1 - cpu0:.1f} CPU s, peak RSS {peak / 1024:.0f} MiB",
    ]

    sh("hub", f"cd /tmp && sudo -u clusterhub-runs /opt/jupyterhub/bin/python -c '{SEED}' 10000")
    times = []
    for _ in range(100):
        t = time.monotonic()
        r = alice.api.get(f"{alice.url}{RUNS}/jobs", params={"limit": 100})
        r.raise_for_status()
        times.append((time.monotonic() - t) * 1000)
    total = r.json()["total_count"]
    times.sort()
    lines += [
        f"list API, {total} records of alice's: GET jobs?limit=100 p50 {statistics.median(times):.0f} ms, "
        f"p95 {times[94]:.0f} ms (100 requests through the hub's proxy)",
    ]
    publish("runs", lines)


if __name__ == "__main__":
    main()
