#!/usr/bin/env python3
"""Benchmark of first-spawn overlay creation (clusterhub-overlay ensure) for 1, 5 and 20 GiB overlays.

Each size is created --runs times in a fresh file (median and max printed), then `ensure` on the existing overlay
(what every later spawn does: a read-only e2fsck) is timed for comparison, and the disk space each new overlay
really takes (sparse file) is shown. Sizes, runs and the directory are options:

    .venv/bin/python bench/overlay.py                       # 1, 5, 20 GiB in a temporary dir under /var/tmp
    .venv/bin/python bench/overlay.py --sizes-gib 1 5 20 50 --runs 5 --dir /scratch/bench
    docker exec chlab-node1 python3 - < bench/overlay.py    # the same on a lab node (needs the script inside)

Run it where the overlays will live: the numbers depend on the file system (extent allocation, sparse files).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from clusterhub import overlay as ov


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gib", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default="/var/tmp")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    owner = (os.getuid(), os.getgid())
    rows = []
    with tempfile.TemporaryDirectory(prefix="clusterhub-overlay-bench-", dir=args.dir) as work:
        for gib in args.sizes_gib:
            creates, reuses, disk = [], [], 0
            for i in range(args.runs):
                path = os.path.join(work, f"{gib}g-{i}.img")
                creates.append(timed(lambda p=path, g=gib: ov.ensure(p, g * 1024, owner)))
                disk = os.stat(path).st_blocks * 512
                reuses.append(timed(lambda p=path, g=gib: ov.ensure(p, g * 1024, owner)))
                os.unlink(path)
            rows.append(
                {
                    "size_gib": gib,
                    "create_median_s": round(statistics.median(creates), 3),
                    "create_max_s": round(max(creates), 3),
                    "reuse_median_s": round(statistics.median(reuses), 3),
                    "disk_mib": round(disk / 2**20, 1),
                }
            )
    print(f"{'size':>6} {'create median':>14} {'create max':>11} {'later spawns':>13} {'disk used':>10}")
    for r in rows:
        print(
            f"{r['size_gib']:>4} G {r['create_median_s']:>12.3f} s {r['create_max_s']:>9.3f} s "
            f"{r['reuse_median_s']:>11.3f} s {r['disk_mib']:>6.1f} MiB"
        )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
