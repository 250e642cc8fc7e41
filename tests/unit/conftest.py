"""Unit tests import the project's package (`clusterhub`, installed editable in the development venv) and the
Ansible plugins and module_utils as plain Python (pyproject's pytest `pythonpath`).

The notebook_image module_utils import each other as Ansible ships them (``ansible.module_utils.<name>``); those
names are pointed at the plain modules here, dependencies first, so each file is loaded once and its classes
(SpecError, BuildError) are the same objects whichever name a test or the module uses.

The fixtures here serve the in-process spawner tests (spawner_harness.py)."""

from __future__ import annotations

import getpass
import importlib
import pwd
import sys

import pytest
from fake_slurm import FakeSlurm
from jupyterhub import orm

for _name in ("clusterhub_image_spec", "clusterhub_image_recipe", "clusterhub_image_engine", "clusterhub_image_build"):
    sys.modules.setdefault(f"ansible.module_utils.{_name}", importlib.import_module(_name))


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
