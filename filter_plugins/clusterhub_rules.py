"""The hub's own rules, for the inventory: spawn-option checks and the protocol's values.

The rules live in the clusterhub package (src/clusterhub/hub/rules.py, src/clusterhub/protocol.py), installed on
the hub as a wheel; these filters use those modules, so the inventory, the roles and the running hub can never
disagree. A controller without clusterhub installed imports the checkout's package, under its own name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"


def _module(name: str):
    """clusterhub's module `name`, imported; where clusterhub is not installed, the checkout's package is
    registered as `clusterhub` first (its modules then import each other as on the hub)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        package = _SRC / "clusterhub"
        spec = importlib.util.spec_from_file_location(
            "clusterhub", package / "__init__.py", submodule_search_locations=[str(package)]
        )
        module = sys.modules.setdefault("clusterhub", importlib.util.module_from_spec(spec))
        spec.loader.exec_module(module)
        return importlib.import_module(name)


rules = _module("clusterhub.hub.rules")
form = _module("clusterhub.hub.form")
protocol = _module("clusterhub.protocol")
data = _module("clusterhub.runs.data")


def jupyterhub_profile_errors(profiles, partitions, images=None, docker=None) -> list[str]:
    """One sentence per problem; docker is {"images": jupyterhub_docker_images, "gpus": jupyterhub_docker_gpus}."""
    return rules.config_errors(list(profiles), list(partitions), list(images or []), _docker(docker))


def _docker(docker) -> dict:
    docker = dict(docker or {})
    return {"images": list(docker.get("images") or []), "gpus": docker.get("gpus", 0)}


def jupyterhub_form_template_error(template, settings) -> str:
    """Why a site's spawn form template (its text) cannot render the form of `settings` (profiles, partitions,
    images, allow_custom, docker); "" when it can."""
    form_settings = [list(settings[key] or []) for key in ("profiles", "partitions", "images")]
    allow_custom = bool(settings.get("allow_custom", True))
    return form.template_error(str(template), *form_settings, allow_custom, "", docker=_docker(settings.get("docker")))


def clusterhub_gate_ssh(destination: str, key: str, known_hosts: str) -> list[str]:
    """The ssh command (up to the command line) with which a user of the hub logs in to hpc-gate:
    `'clusterhub-gate@login' | clusterhub_gate_ssh(key, known_hosts)`."""
    return protocol.gate_ssh(key, known_hosts, destination)


def clusterhub_protocol(name: str) -> str:
    """One value of clusterhub.protocol: user_name (the user-name rule), squeue_format, default_job_name,
    direct_job_log, remote_job_log_dir."""
    known = protocol.values()
    if name not in known:
        raise ValueError(f"clusterhub_protocol: no value {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def _data_place(host_vars) -> dict:
    name = host_vars["inventory_hostname"]
    port = host_vars.get("ssh_data_port", 22)
    port = int(port) if str(port).isdigit() else port
    return {"name": name, "address": host_vars.get("ssh_data_address") or name, "port": port}


def clusterhub_data_host(host_vars) -> dict:
    """A data host of the notebook runs, from its inventory variables (hostvars[host]): {name (the inventory name,
    which users write), address (ssh_data_address, default the name), port (ssh_data_port, default 22),
    known_name (how ssh_known_hosts names it)}, checked by the runs service's own rules."""
    (place,) = data.check_hosts([_data_place(host_vars)])
    known = place["address"] if place["port"] == 22 else f"[{place['address']}]:{place['port']}"
    return place | {"known_name": known}


def clusterhub_data_host_errors(host_vars) -> list[str]:
    """The data host's problem in one sentence (naming ssh_data_address or ssh_data_port), or none."""
    place = _data_place(host_vars)
    try:
        data.check_hosts([place])
    except ValueError as exc:
        return [f"{exc} (ssh_data_address, ssh_data_port of {place['name']})"]
    return []


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "clusterhub_data_host": clusterhub_data_host,
            "clusterhub_data_host_errors": clusterhub_data_host_errors,
            "jupyterhub_profile_errors": jupyterhub_profile_errors,
            "jupyterhub_form_template_error": jupyterhub_form_template_error,
            "clusterhub_protocol": clusterhub_protocol,
            "clusterhub_gate_ssh": clusterhub_gate_ssh,
        }
