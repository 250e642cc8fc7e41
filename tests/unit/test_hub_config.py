"""The hub's configuration for the lab inventory, rendered through Ansible's templar and compared with the
golden files in golden/jupyterhub/ (NAME.golden), so that a change in what the hub runs with shows in review.

Two renders: the lab as it is (one origin for the hub and every server) and the lab with one origin per
user server (jupyterhub_subdomain_host, as tests/lab/test_subdomains.py turns it on). After a deliberate
change, write the golden files again and review their diff:

    CLUSTERHUB_UPDATE_GOLDEN=1 pytest -q tests/unit/test_hub_config.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from ansible.vars.manager import VariableManager
from role_files import load

init_plugin_loader()

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "jupyterhub"
GOLDEN = Path(__file__).parent / "golden" / "jupyterhub"
SUBDOMAIN_HOST = "https://lab.localhost:8443"
RENDERS = {"lab": {}, "lab-subdomains": {"jupyterhub_subdomain_host": SUBDOMAIN_HOST}}
TEMPLATES = {
    "jupyterhub_config.py": "etc/jupyterhub/jupyterhub_config.py.j2",
    "jupyterhub-proxy.service": "etc/systemd/system/jupyterhub-proxy.service.j2",
}


def hub_variables(extra_vars: dict[str, Any]) -> dict[str, Any]:
    """The hub host's variables as a play of the role sees them: role defaults < lab inventory < role vars <
    extra vars (-e)."""
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(ROOT / "inventories" / "lab" / "hosts.yml")])
    manager = VariableManager(loader=loader, inventory=inventory)
    inventory_vars = manager.get_vars(host=inventory.get_host("hub"), include_hostvars=False)
    return {
        **load(ROLE / "defaults" / "main.yml"),
        **inventory_vars,
        "role_path": str(ROLE),
        # what tasks/configure.yml reads with include_vars (remote HPC mode's tunnel ports)
        "__jupyterhub_tunnel_user_defaults": load(ROOT / "roles" / "tunnel_user" / "defaults" / "main.yml"),
        "ansible_managed": "Ansible managed",
        **load(ROLE / "vars" / "main.yml"),
        **extra_vars,
    }


def render(template: str, extra_vars: dict[str, Any]) -> str:
    engine = Templar(loader=DataLoader(), variables=hub_variables(extra_vars))
    return engine.template(trust_as_template((ROLE / "templates" / template).read_text()))


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("case", RENDERS)
def test_rendered_for_the_lab_as_the_golden_file(case, name):
    text = render(TEMPLATES[name], RENDERS[case])
    golden = GOLDEN / case / f"{name}.golden"
    if os.environ.get("CLUSTERHUB_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"no golden file {golden}: write it with `make golden`"
    assert text == golden.read_text(), f"{name} ({case}) differs from {golden}: review, then `make golden`"
    if name.endswith(".py"):
        compile(text, str(golden), "exec")


def test_one_origin_per_server_only_when_asked():
    """Off (the default): no subdomain or __Host- setting, path routing. On: both, host routing in the proxy.
    disable_user_config is on in both."""
    off = {name: render(template, {}) for name, template in TEMPLATES.items()}
    on = {name: render(template, RENDERS["lab-subdomains"]) for name, template in TEMPLATES.items()}
    for config in (off["jupyterhub_config.py"], on["jupyterhub_config.py"]):
        assert "c.Spawner.disable_user_config = True\n" in config
    assert "subdomain_host" not in off["jupyterhub_config.py"]
    assert "cookie_host_prefix_enabled" not in off["jupyterhub_config.py"]
    assert "--host-routing" not in off["jupyterhub-proxy.service"]
    assert f'c.JupyterHub.subdomain_host = "{SUBDOMAIN_HOST}"\n' in on["jupyterhub_config.py"]
    assert "c.JupyterHub.cookie_host_prefix_enabled = True\n" in on["jupyterhub_config.py"]
    assert "  --host-routing \\\n" in on["jupyterhub-proxy.service"]
    user_config = render(TEMPLATES["jupyterhub_config.py"], {"jupyterhub_disable_user_config": False})
    assert "c.Spawner.disable_user_config = False\n" in user_config


@pytest.mark.parametrize(
    ("extra_vars", "names"),
    [
        ({}, ["hub", "localhost", "127.0.0.1.nip.invalid"]),
        (RENDERS["lab-subdomains"], ["hub", "localhost", "127.0.0.1.nip.invalid", "lab.localhost", "*.lab.localhost"]),
        (
            {"jupyterhub_subdomain_host": "https://hub.example.org", "jupyterhub_tls_names": ["hub.example.org"]},
            ["hub.example.org", "*.hub.example.org"],
        ),
    ],
    ids=["off", "on", "on-host-already-named"],
)
def test_self_signed_certificate_names(extra_vars, names):
    """The names tasks/tls.yml puts in the self-signed certificate: the host and its wildcard when on."""
    engine = Templar(loader=DataLoader(), variables=hub_variables(extra_vars))
    assert engine.template(trust_as_template("{{ __jupyterhub_tls_dns_names }}")) == names
