"""Unit tests import the project's package (`clusterhub`, installed editable in the development venv) and the
Ansible plugins and module_utils as plain Python (pyproject's pytest `pythonpath`).

The fixtures here serve the in-process spawner tests (spawner_harness.py)."""

from __future__ import annotations

import getpass
import pwd

import pytest
from fake_slurm import FakeSlurm
from jupyterhub import orm


@pytest.fixture
def alice_is_the_test_runner(monkeypatch):
    """pwd.getpwnam("alice") is the current account (batchspawner's suite does the same)."""
    mine = pwd.getpwnam(getpass.getuser())
    monkeypatch.setattr(pwd, "getpwnam", lambda name: mine)


@pytest.fixture
def db():
    """JupyterHub's database in memory, with alice (as JupyterHub's and batchspawner's suites set it up)."""
    session = orm.new_session_factory("sqlite:///:memory:")()
    session.add(orm.User(name="alice"))
    session.commit()
    yield session
    session.close()


@pytest.fixture
def slurm(tmp_path):
    return FakeSlurm(tmp_path / "slurm")
