"""The hub's own rules, for the inventory: spawn-option checks and the protocol's values.

The rules live in the clusterhub package (src/clusterhub/hub/options.py, src/clusterhub/protocol.py), installed on
the hub as a wheel; these filters use those modules, so the inventory, the roles and the running hub can never
disagree. A controller without clusterhub installed loads the checkout's files, under the same module names.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"


def _module(name: str):
    """clusterhub's module `name`, imported, or else loaded from the checkout under the same name."""
    try:
        return importlib.import_module(name)
    except ImportError:
        spec = importlib.util.spec_from_file_location(name, _SRC.joinpath(*name.split(".")).with_suffix(".py"))
        module = sys.modules.setdefault(name, importlib.util.module_from_spec(spec))
        spec.loader.exec_module(module)  # registered first: dataclasses look their module up in sys.modules
        return module


options = _module("clusterhub.hub.options")
protocol = _module("clusterhub.protocol")


def jupyterhub_profile_errors(profiles, partitions, images=None, docker=None) -> list[str]:
    """One sentence per problem; docker is {"images": jupyterhub_docker_images, "gpus": jupyterhub_docker_gpus}."""
    docker = dict(docker or {})
    docker = {"images": list(docker.get("images") or []), "gpus": docker.get("gpus", 0)}
    return options.config_errors(list(profiles), list(partitions), list(images or []), docker)


def clusterhub_protocol(name: str) -> str:
    """One value of clusterhub.protocol: user_name (the user-name rule), squeue_format, default_job_name,
    direct_job_log, remote_job_log_dir."""
    known = protocol.values()
    if name not in known:
        raise ValueError(f"clusterhub_protocol: no value {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {"jupyterhub_profile_errors": jupyterhub_profile_errors, "clusterhub_protocol": clusterhub_protocol}
