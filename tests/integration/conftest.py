"""Fixtures for integration tests that build real images on the local Docker engine.

The module is run the way Ansible runs it: ``ansible-playbook`` from the project root (so ansible.cfg's library and
module_utils paths apply) with the JSON stdout callback, against ``localhost`` over the local connection.  Every
image the tests create is named ``clusterhub-test/...`` and removed at the end of the session.  The tests skip, with
the reason, when ``docker info`` fails or the lab base image is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
# the lab's suite (inventories/lab: CLUSTERHUB_LAB_SUITE, default trixie); `make integration` builds its image
SUITE = os.environ.get("CLUSTERHUB_LAB_SUITE") or "trixie"
LAB_BASE = os.environ.get("CLUSTERHUB_TEST_BASE", f"clusterhub-lab/debian:{SUITE}")
TEST_PREFIX = "clusterhub-test/"


def _docker(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def _docker_problem() -> str | None:
    if not shutil.which("docker"):
        return "the docker CLI is not installed"
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if info.returncode != 0:
        return f"`docker info` failed: {(info.stderr or info.stdout).strip()[:300]}"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: builds real images with the local Docker engine (slow)")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    if not ours:
        return
    problem = _docker_problem()
    for item in ours:
        item.add_marker(pytest.mark.integration)
        if problem:
            item.add_marker(pytest.mark.skip(reason=f"Docker engine unavailable: {problem}"))


def image_id(ref: str) -> str | None:
    result = _docker("image", "inspect", "--format", "{{.Id}}", ref)
    return result.stdout.strip() if result.returncode == 0 else None


def list_test_images() -> set[str]:
    """Every clusterhub-test/ repository:tag the engine holds."""
    out = _docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    return {ref for ref in out if ref.startswith(TEST_PREFIX)}


class ModuleRun:
    """One notebook_image task run by ansible-playbook: the task result, the exit status, the wall time."""

    def __init__(self, result: dict, rc: int, seconds: float, output: str):
        self.result = result
        self.rc = rc
        self.seconds = seconds
        self.output = output

    def __getitem__(self, key):
        return self.result[key]

    def get(self, key, default=None):
        return self.result.get(key, default)


def run_tasks(
    tmp_dir: Path, tasks: list[dict], check: bool = False, diff: bool = False
) -> tuple[list[dict], int, float, str]:
    """Run ad-hoc tasks on localhost with ansible-playbook; return each task's result (JSON callback)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    inventory = tmp_dir / "hosts.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    playbook = tmp_dir / f"play-{secrets.token_hex(3)}.yml"
    play = [{"name": "notebook_image test", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    playbook.write_text(json.dumps(play, indent=2))
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    started = time.monotonic()
    proc = subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(
            f"ansible-playbook printed no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        ) from None
    results = [task["hosts"]["localhost"] for task in data["plays"][0]["tasks"]]
    return results, proc.returncode, seconds, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-image")


@pytest.fixture(scope="session")
def image_id_of():
    """image_id_of(ref) -> the image id behind ref, or None."""
    return image_id


@pytest.fixture(scope="session")
def clusterhub_test_images():
    """clusterhub_test_images() -> the set of clusterhub-test/ references the engine holds now."""
    return list_test_images


@pytest.fixture(scope="session")
def run_playbook():
    """run_playbook(tmp_dir, tasks, check=False, diff=False) -> (results, rc, seconds, output)."""
    return run_tasks


@pytest.fixture(scope="session")
def run_module(session_dir):
    """run_module(args, check=False, diff=False) -> ModuleRun for one notebook_image task."""

    def run(args: dict, check: bool = False, diff: bool = False) -> ModuleRun:
        results, rc, seconds, output = run_tasks(session_dir / "plays", [{"notebook_image": args}], check, diff)
        return ModuleRun(results[0], rc, seconds, output)

    return run


@pytest.fixture(scope="session")
def base_image():
    """The lab base, pinned under a clusterhub-test/ name for the session so a concurrent rebuild of the lab
    image (which moves its tag) cannot change the hash between the tests' runs."""
    if image_id(LAB_BASE) is None:
        pytest.skip(f"base image {LAB_BASE} is missing: build it with `bash lab/images/build.sh {SUITE}`")
    pinned = f"{TEST_PREFIX}base:{SUITE}-{os.getpid()}"
    _docker("tag", LAB_BASE, pinned, check=True)
    yield pinned
    _docker("image", "rm", pinned)


@pytest.fixture(scope="session")
def image_name():
    """The name the tests build; it and any temporary tags of it are removed at the end of the session."""
    name = f"{TEST_PREFIX}notebook:it-{os.getpid()}-{secrets.token_hex(2)}"
    yield name
    repo = name.rsplit(":", 1)[0]
    for ref in sorted(list_test_images()):
        if ref == name or ref.startswith(f"{repo}:clusterhub-tmp-"):
            _docker("image", "rm", "--force", ref)
