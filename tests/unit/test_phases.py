"""make test's phase runner (tools/phases.sh) against a Makefile of its own: the phases beside the others run at the
same time, every phase is timed in the table, and the first failure on either side stops the other side."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "phases.sh"
MAKEFILE = """\
quick:
\t@echo quick-output
slow:
\t@sleep 2; echo slow-output
broken:
\t@echo broken-output; exit 3
endless:
\t@sleep 30; echo endless-output
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "Makefile").write_text(MAKEFILE)
    return tmp_path


def phases(project: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    argv = ["bash", str(SCRIPT), *args]
    proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=60, check=False)
    return proc, time.monotonic() - t0


def table(proc: subprocess.CompletedProcess) -> dict[str, str]:
    rows = proc.stdout.split("time per phase", 1)[1].splitlines()[1:]
    return {row.split()[0]: row.split(None, 1)[1] for row in rows if row.strip()}


def test_the_phases_beside_run_at_the_same_time_and_every_phase_is_in_the_table(project):
    proc, took = phases(project, "--beside", "slow quick", "slow", "quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < 3.5, "two 2-second phases side by side take about 2 seconds, not 4"
    assert list(table(proc)) == ["slow", "quick", "total"]  # the side's rows first, then the main ones'
    assert "(slow quick beside the others)" in proc.stdout
    # the side's output is shown, in one piece, once it is done
    side = proc.stdout.split("=== slow quick (beside the other phases) ===", 1)[1]
    assert side.index("slow-output") < side.index("quick-output")


def test_without_beside_the_phases_run_one_after_another(project):
    proc, took = phases(project, "slow", "quick")
    assert proc.returncode == 0
    assert took >= 2
    assert proc.stdout.index("slow-output") < proc.stdout.index("quick-output")
    assert "beside" not in proc.stdout


def test_a_failure_beside_stops_the_main_phases_at_once(project):
    proc, took = phases(project, "--beside", "quick broken", "endless")
    assert proc.returncode == 1
    assert took < 15, "the endless main phase was stopped, not waited for"
    rows = table(proc)
    assert rows["broken"].endswith("(failed)") and "endless" not in rows
    assert "endless-output" not in proc.stdout


def test_a_main_failure_stops_the_phases_beside_and_later_main_phases_do_not_run(project):
    proc, took = phases(project, "--beside", "endless", "broken", "quick")
    assert proc.returncode == 1
    assert took < 15
    rows = table(proc)
    assert rows["broken"].endswith("(failed)")
    assert "quick" not in rows and "quick-output" not in proc.stdout
