#!/usr/bin/env python3
"""Benchmark of the notebook_image module: the first (cold) build against the no-change second run, side by side.

Both runs go through ansible-playbook from the project root, as a site runs the module.  Three pairs of times are
printed side by side, each with its ratio:
  - the whole ansible-playbook command (wall clock; includes Ansible's start-up, about 1.5 s on a small machine),
  - the notebook_image task alone (the JSON callback's task duration: module transfer, Python start, the module),
  - the module's own logic with no Ansible around it (validate, render, hash, two `docker image inspect`s) against
    the module's reported build_seconds.
An ansible-playbook run of one ``ping`` task is timed too, to show how much of the no-change run is Ansible itself.
The issue asks for the second run to be at least 50x faster than the first build; the exit status is 1 when the
task-level ratio is below --min-ratio.

    .venv/bin/python bench/notebook_image.py                # cold build (--no-cache), then 3 no-change runs
    .venv/bin/python bench/notebook_image.py --cache        # let the build use Docker's layer cache
    .venv/bin/python bench/notebook_image.py --json         # machine-readable result on the last line

The image is built from the lab base (clusterhub-lab/debian:bookworm; `bash lab/images/build.sh bookworm`) with
jupyterlab + papermill + ipykernel in a venv and one registered kernel, named clusterhub-test/bench:PID, and removed
afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


def _duration(task: dict) -> float:
    """A task's own duration from the JSON callback (without ansible-playbook's start-up)."""
    d = task["task"]["duration"]
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(d["end"]) - parse(d["start"])).total_seconds()


def playbook(tmp: Path, tasks: list[dict]) -> tuple[list[dict], float, list[float]]:
    """Run tasks on localhost with ansible-playbook (JSON callback); return (results, wall seconds, task seconds)."""
    inventory = tmp / "hosts.ini"
    python = VENV_BIN / "python"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={python}\n")
    play = tmp / "play.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    started = time.monotonic()
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(play)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        sys.exit(
            f"ansible-playbook printed no JSON (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    tasks_out = data["plays"][0]["tasks"]
    results = [t["hosts"]["localhost"] for t in tasks_out]
    for result in results:
        if result.get("failed"):
            sys.exit(f"task failed: {result.get('msg')}\n{result.get('stdout', '')}")
    return results, seconds, [_duration(t) for t in tasks_out]


def module_logic_seconds(spec: dict, repeat: int) -> float:
    """The module's own no-change work (validate, render, hash, inspect base and image), without Ansible."""
    # The module_utils files import each other as ansible.module_utils.<name>: look there as ansible.cfg's
    # module_utils setting makes Ansible do.
    import ansible.module_utils  # noqa: PLC0415 - only this measurement needs Ansible's package

    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))
    from ansible.module_utils.clusterhub_image_build import plan  # noqa: PLC0415
    from ansible.module_utils.clusterhub_image_engine import DockerEngine  # noqa: PLC0415
    from ansible.module_utils.clusterhub_image_spec import validate_spec  # noqa: PLC0415

    def run(argv, cwd=None):
        proc = subprocess.run(
            argv, check=False, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, LC_ALL="C")
        )
        return proc.returncode, proc.stdout, proc.stderr

    times = []
    for _ in range(max(1, repeat)):
        started = time.monotonic()
        checked = validate_spec(spec)
        decision = plan(checked, DockerEngine("docker", run))
        times.append(time.monotonic() - started)
        assert not decision["build"], "the module logic would build"
    return statistics.median(times)


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=False, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="clusterhub-lab/debian:bookworm", help="local base image")
    parser.add_argument("--cache", action="store_true", help="let the first build use Docker's layer cache")
    parser.add_argument("--repeat", type=int, default=3, help="no-change runs to time (the median is reported)")
    parser.add_argument("--min-ratio", type=float, default=50.0, help="exit 1 when the speed-up is below this")
    parser.add_argument("--keep", action="store_true", help="keep the image afterwards")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args()

    if docker("info").returncode != 0:
        sys.exit("bench/notebook_image.py: `docker info` fails; a Docker engine is needed")
    if docker("image", "inspect", args.base).returncode != 0:
        sys.exit(f"bench/notebook_image.py: base image {args.base} is missing (bash lab/images/build.sh bookworm)")

    name = f"clusterhub-test/bench:{os.getpid()}"
    spec = {
        "name": name,
        "base": args.base,
        "trust_host_ca": True,
        "kernels": [{"name": "bench", "display_name": "Python (bench)"}],
        "env": {"CLUSTERHUB_BENCH": "1"},
        "build_cache": args.cache,
    }
    try:
        with tempfile.TemporaryDirectory(prefix="clusterhub-bench-") as tmp:
            tmp_path = Path(tmp)
            _, ping, _ = playbook(tmp_path, [{"ansible.builtin.ping": {}}])
            print(f"notebook_image bench: {name} FROM {args.base} ({'layer cache' if args.cache else '--no-cache'})")
            (first,), first_s, (first_task,) = playbook(tmp_path, [{"notebook_image": spec}])
            assert first["built"], first
            walls, tasks = [], []
            for _ in range(max(1, args.repeat)):
                (again,), wall, (task,) = playbook(tmp_path, [{"notebook_image": spec}])
                assert not again["changed"] and not again["built"], again
                walls.append(wall)
                tasks.append(task)
            logic = module_logic_seconds(spec, args.repeat)
            second_s, second_task = statistics.median(walls), statistics.median(tasks)
            ratio, task_ratio = first_s / second_s, first_task / second_task
            logic_ratio = first["build_seconds"] / logic
            rows = [
                ("ansible-playbook, whole command", first_s, second_s, ratio),
                ("the notebook_image task alone", first_task, second_task, task_ratio),
                ("module logic, no Ansible", first["build_seconds"], logic, first["build_seconds"] / logic),
            ]
            print(f"  {'':34} {'first build':>12} {'no-change':>10} {'ratio':>9}")
            for label, a, b, r in rows:
                print(f"  {label:34} {a:10.1f} s {b:8.2f} s {r:8.1f}x")
            print(
                f"  (no-change runs: median of {len(walls)}: {', '.join(f'{w:.2f}' for w in walls)} s; changed=false,"
            )
            print(f"   nothing built; an ansible-playbook run of one ping task takes {ping:.2f} s here;")
            print(f"   image {first['size'] / 1e6:.0f} MB, module build+validation {first['build_seconds']:.1f} s)")
            for label, _a, _b, r in rows[:2]:
                verdict = "ok" if r >= args.min_ratio else "BELOW TARGET"
                print(f"  {label}: {r:.1f}x (target >= {args.min_ratio:g}x: {verdict})")
            if args.json:
                print(
                    json.dumps(
                        {
                            "first_build_s": round(first_s, 2),
                            "first_build_task_s": round(first_task, 2),
                            "module_build_s": first["build_seconds"],
                            "no_change_s": round(second_s, 3),
                            "no_change_task_s": round(second_task, 3),
                            "no_change_logic_s": round(logic, 4),
                            "no_change_runs_s": [round(w, 3) for w in walls],
                            "ansible_ping_s": round(ping, 3),
                            "ratio": round(ratio, 1),
                            "task_ratio": round(task_ratio, 1),
                            "logic_ratio": round(logic_ratio, 1),
                            "layer_cache": args.cache,
                            "image_size": first["size"],
                        }
                    )
                )
            return 0 if task_ratio >= args.min_ratio else 1
    finally:
        if not args.keep:
            docker("image", "rm", "--force", name)


if __name__ == "__main__":
    sys.exit(main())
