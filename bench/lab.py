"""Wall time of the lab's provisioning, side by side in one run.

On a separate prefix (chbench) so a running `make lab` is untouched:
  create      containers from the (already built) base image
  converge    playbooks/site.yml on fresh containers (host caches warm: apt archives, pip, npm)
  re-run      the same playbook again (idempotent: 0 changed expected)
Cold figures (image build, first downloads) come from a `make test` run on a fresh machine.
Usage: .venv/bin/python bench/lab.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(
    os.environ,
    PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
    CLUSTERHUB_LAB_PREFIX=os.environ.get("CLUSTERHUB_LAB_PREFIX", "chbench"),
    CLUSTERHUB_LAB_HUB_PORT=os.environ.get("CLUSTERHUB_LAB_HUB_PORT", "9445"),
)


def play(playbook: str) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(["ansible-playbook", playbook], cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(f"{playbook} failed:\n{r.stdout[-3000:]}")
    return time.monotonic() - t0, r.stdout


def main() -> None:
    play("playbooks/lab/destroy.yml")
    try:
        create, _ = play("playbooks/lab/create.yml")
        converge, _ = play("playbooks/site.yml")
        rerun, out = play("playbooks/site.yml")
    finally:
        play("playbooks/lab/destroy.yml")
    changed = sum(int(n) for n in re.findall(r"changed=(\d+)", out))
    lines = [
        f"lab provisioning, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}",
        f"create containers        {create:7.1f} s",
        f"converge (fresh hosts)   {converge:7.1f} s",
        f"idempotent re-run        {rerun:7.1f} s   ({changed} changed)",
        f"re-run / converge        {rerun / converge:7.2f}",
    ]
    print("\n".join(lines))
    out_file = ROOT / "artifacts" / "bench-lab.txt"
    out_file.parent.mkdir(exist_ok=True)
    out_file.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
