"""Unit tests import the project's package (`clusterhub`, installed editable in the development venv) and the
Ansible plugins and modules as plain Python (pyproject's pytest `pythonpath`).

The project's module_utils are imported by the one name the modules use and Ansible ships them under,
``ansible.module_utils.<name>``: their folder is added to that package's search path here, as Ansible adds a
configured module_utils folder, so each file is loaded once, under one name.

The fixtures here serve the in-process spawner tests (spawner_harness.py)."""

from __future__ import annotations

import getpass
import pwd
from pathlib import Path

import ansible.module_utils
import pytest
from fake_slurm import FakeSlurm
from jupyterhub import orm

_MODULE_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)


@pytest.fixture
def alice_is_the_test_runner(monkeypatch, tmp_path):
    """pwd.getpwnam("alice") is the current account, with the test's tmp_path as home (batchspawner's suite
    maps every name to the current account the same way)."""
    mine = pwd.getpwnam(getpass.getuser())
    alice = pwd.struct_passwd((*mine[:5], str(tmp_path), mine.pw_shell))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: alice)


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
