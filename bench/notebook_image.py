#!/usr/bin/env python3
"""Benchmark of the notebook_image module: the first (cold) build against the no-change second run, side by side.

Both runs go through ansible-playbook from the project root, as a site runs the module; the times are wall-clock
times of the whole ansible-playbook command.  An ansible-playbook run of a single ``ping`` task is timed too, to
show how much of the no-change run is Ansible's own start-up.  The issue asks for the second run to be at least
50x faster than the first build.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


def playbook(tmp: Path, tasks: list[dict]) -> tuple[list[dict], float]:
    """Run tasks on localhost with ansible-playbook (JSON callback); return (task results, wall seconds)."""
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
    results = [t["hosts"]["localhost"] for t in data["plays"][0]["tasks"]]
    for result in results:
        if result.get("failed"):
            sys.exit(f"task failed: {result.get('msg')}\n{result.get('stdout', '')}")
    return results, seconds


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
            _, ping = playbook(tmp_path, [{"ansible.builtin.ping": {}}])
            print(f"notebook_image bench: {name} FROM {args.base} ({'layer cache' if args.cache else '--no-cache'})")
            (first,), first_s = playbook(tmp_path, [{"notebook_image": spec}])
            assert first["built"], first
            print(
                f"  first build     {first_s:8.1f} s   (module build+validation {first['build_seconds']:.1f} s, "
                f"{first['size'] / 1e6:.0f} MB)"
            )
            seconds = []
            for _ in range(max(1, args.repeat)):
                (again,), again_s = playbook(tmp_path, [{"notebook_image": spec}])
                assert not again["changed"] and not again["built"], again
                seconds.append(again_s)
            second_s = statistics.median(seconds)
            ratio = first_s / second_s
            print(
                f"  no-change run   {second_s:8.2f} s   (median of {len(seconds)}: "
                f"{', '.join(f'{s:.2f}' for s in seconds)}; changed=false, nothing built)"
            )
            print(f"  ansible ping    {ping:8.2f} s   (ansible-playbook start-up alone)")
            verdict = "ok" if ratio >= args.min_ratio else "BELOW TARGET"
            print(f"  ratio           {ratio:8.1f} x   (target >= {args.min_ratio:g}x: {verdict})")
            if args.json:
                print(
                    json.dumps(
                        {
                            "first_build_s": round(first_s, 2),
                            "module_build_s": first["build_seconds"],
                            "no_change_s": round(second_s, 3),
                            "no_change_runs_s": [round(s, 3) for s in seconds],
                            "ansible_ping_s": round(ping, 3),
                            "ratio": round(ratio, 1),
                            "layer_cache": args.cache,
                            "image_size": first["size"],
                        }
                    )
                )
            return 0 if ratio >= args.min_ratio else 1
    finally:
        if not args.keep:
            docker("image", "rm", "--force", name)


if __name__ == "__main__":
    sys.exit(main())
