"""The hub's configuration for the lab inventory, rendered through Ansible's templar and compared with the
golden files in golden/jupyterhub/ (NAME.golden), so that a change in what the hub runs with shows in review.

Two renders: the lab as it is (one origin for the hub and every server) and the lab with one origin per
user server (jupyterhub_subdomain_host, as tests/lab/test_subdomains.py turns it on). After a deliberate
change, write the golden files again and review their diff:

    CLUSTERHUB_UPDATE_GOLDEN=1 pytest -q tests/unit/test_hub_config.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from role_files import host_variables, load, matches_golden

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
    """The hub's variables for the lab, with what tasks/configure.yml reads by include_vars (remote HPC mode's
    tunnel ports)."""
    tunnel = {"__jupyterhub_tunnel_user_defaults": load(ROOT / "roles" / "tunnel_user" / "defaults" / "main.yml")}
    return host_variables("jupyterhub", "hub", "lab", {**tunnel, **extra_vars})


def render(template: str, extra_vars: dict[str, Any]) -> str:
    engine = Templar(loader=DataLoader(), variables=hub_variables(extra_vars))
    return engine.template(trust_as_template((ROLE / "templates" / template).read_text()))


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("case", RENDERS)
def test_rendered_for_the_lab_as_the_golden_file(case, name):
    text = render(TEMPLATES[name], RENDERS[case])
    golden = GOLDEN / case / f"{name}.golden"
    matches_golden(text, golden)
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
    """The self-signed certificate's names (passed to tls_certificate): the host and its wildcard when on."""
    engine = Templar(loader=DataLoader(), variables=hub_variables(extra_vars))
    assert engine.template(trust_as_template("{{ __jupyterhub_tls_dns_names }}")) == names


def test_the_lab_hub_offers_the_partitions_slurm_defines_with_their_hub_limits():
    """Partitions are defined once (slurm_partitions with hub blocks); the hub's list is derived, in order."""
    engine = Templar(loader=DataLoader(), variables=hub_variables({}))
    partitions = engine.template(trust_as_template("{{ jupyterhub_partitions }}"))
    assert [p["name"] for p in partitions] == ["jupyter", "batch", "hpc", "hpcown"]
    assert partitions[0] == {"name": "jupyter", "max_cpus": 2, "max_memory_gb": 4, "max_hours": 12, "max_gpus": 0}
    assert partitions[3]["run_as"] == "user" and partitions[3]["remote"] is True
    # without hub blocks (a Slurm cluster the inventory does not define): the role's own two partitions
    standalone = Templar(loader=DataLoader(), variables=hub_variables({"slurm_partitions": []}))
    assert [p["name"] for p in standalone.template(trust_as_template("{{ jupyterhub_partitions }}"))] == [
        "jupyter",
        "batch",
    ]
