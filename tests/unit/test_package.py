"""clusterhub as one Python distribution: the wheel the jupyterhub role installs (reproducible, complete, its
spawners registered as JupyterHub entry points) and the nodes' single-file tools taken from the same source."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from clusterhub_build import build_wheel
from jupyterhub.spawner import Spawner

import clusterhub

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "clusterhub"
# the nodes' tools: standard library only, copied as single files by their roles
NODE_TOOLS = {
    "roles/hpc_account/files/hpc_gate.py": "gate.py",
    "roles/job_wrappers/files/clusterhub_overlay.py": "overlay.py",
    "roles/job_wrappers/files/clusterhub_relay.py": "relay.py",
}
SPAWNERS = {"clusterhub", "clusterhub-slurm", "clusterhub-remote", "clusterhub-docker"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    return out / build_wheel(str(out))


def test_the_wheel_is_the_same_bytes_for_the_same_sources(wheel, tmp_path):
    again = tmp_path / build_wheel(str(tmp_path))
    assert again.name == wheel.name == f"clusterhub-{clusterhub.__version__}-py3-none-any.whl"
    assert again.read_bytes() == wheel.read_bytes(), "a re-run of the jupyterhub role would reinstall the hub"


def test_the_wheel_holds_every_module_and_a_record_pip_can_verify(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        modules = {f"clusterhub/{p.relative_to(SRC).as_posix()}" for p in SRC.rglob("*.py")}
        assert modules <= names
        assert "clusterhub/hub/templates/spawn_form.html.j2" in names  # the form's template travels with the code
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        info = f"clusterhub-{clusterhub.__version__}.dist-info"
        rows = list(csv.reader(io.StringIO(archive.read(f"{info}/RECORD").decode())))
        assert {row[0] for row in rows} == names
        for name, digest, size in rows:
            if name.endswith("RECORD"):
                continue
            data = archive.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)
        metadata = archive.read(f"{info}/METADATA").decode()
        assert re.search(r"^Requires-Dist: jupyterhub>=5\.5\.1$", metadata, re.M), metadata


def test_jupyterhub_finds_the_spawners_by_their_entry_point_names():
    found = {ep.name: ep for ep in entry_points(group="jupyterhub.spawners") if ep.name.startswith("clusterhub")}
    assert set(found) == SPAWNERS
    for ep in found.values():
        cls = ep.load()
        assert issubclass(cls, Spawner), ep
        assert cls.__module__.startswith("clusterhub.hub."), ep


def test_the_hub_config_names_spawners_by_entry_point():
    template = (ROOT / "roles/jupyterhub/templates/etc/jupyterhub/jupyterhub_config.py.j2").read_text()
    names = set(re.findall(r'^c\.JupyterHub\.spawner_class = "([^"]+)"', template, re.M))
    assert names and names <= SPAWNERS


@pytest.mark.parametrize("role_file", NODE_TOOLS)
def test_the_nodes_tools_are_the_packages_own_files(role_file):
    path = ROOT / role_file
    assert path.is_symlink() and path.resolve() == SRC / NODE_TOOLS[role_file]
    # standard library only: the nodes have no venv of clusterhub's
    imports = re.findall(r"^(?:from|import) ([\w.]+)", path.read_text(), re.M)
    assert not [m for m in imports if m.split(".")[0] in {"clusterhub", "jupyterhub", "tornado", "traitlets"}]


FILE_LOADERS = {ROOT / "filter_plugins" / "clusterhub_rules.py", ROOT / "filter_plugins" / "clusterhub_slurm.py"}


def test_no_test_bench_or_plugin_edits_sys_path_or_loads_a_module_from_its_file():
    offenders = []
    for folder in ("tests", "bench", "lab", "filter_plugins", "library", "module_utils", "src"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if path.name == Path(__file__).name:
                continue
            if re.search(r"sys\.path\.(insert|append)", text):
                offenders.append(f"{path.relative_to(ROOT)}: sys.path")
            # the only loaders by file, each keeping the module's own name: the inventory filters' fallback for a
            # controller without clusterhub installed (clusterhub.*), and the Slurm filters' use of the rules a
            # module ships to hosts (ansible.module_utils.clusterhub_accounting, as the modules import it)
            if "spec_from_file_location(" in text and path not in FILE_LOADERS:
                offenders.append(f"{path.relative_to(ROOT)}: loads a module from its file")
    assert not offenders


# a controller where clusterhub is not installed: the name `clusterhub` cannot be imported from the environment
WITHOUT_CLUSTERHUB = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "clusterhub":
            raise ImportError("clusterhub is not installed here")
sys.meta_path.insert(0, NotInstalled())
import clusterhub_rules
print(clusterhub_rules.rules.__name__, clusterhub_rules.rules.__file__)
print(clusterhub_rules.jupyterhub_profile_errors([], []))
settings = {"profiles": [], "partitions": [], "images": [], "docker": {}}
print(clusterhub_rules.jupyterhub_form_template_error("{{ nothing_given }}", settings))
"""


def test_the_inventory_filters_use_the_checkouts_package_where_clusterhub_is_not_installed():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "filter_plugins")}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_CLUSTERHUB], capture_output=True, text=True, check=False, env=env, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    loaded, errors, template = done.stdout.splitlines()
    assert loaded == f"clusterhub.hub.rules {SRC / 'hub' / 'rules.py'}"  # its own name, from the checkout
    assert "jupyterhub_partitions is empty" in errors and "'nothing_given' is undefined" in template
