"""Inventory checks of the hub's spawn options, using the same rules the hub applies to users.

The rules live in roles/jupyterhub/files/clusterhub_hub/options.py (shipped to the hub); this filter
loads that file so the inventory and the running hub can never disagree.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_OPTIONS = Path(__file__).resolve().parents[1] / "roles" / "jupyterhub" / "files" / "clusterhub_hub" / "options.py"
_spec = importlib.util.spec_from_file_location("clusterhub_hub_options", _OPTIONS)
options = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(options)  # registered first: dataclasses look their module up in sys.modules


def jupyterhub_profile_errors(profiles, partitions, images=None, docker=None) -> list[str]:
    """One sentence per problem; docker is {"images": jupyterhub_docker_images, "gpus": jupyterhub_docker_gpus}."""
    docker = dict(docker or {})
    docker = {"images": list(docker.get("images") or []), "gpus": docker.get("gpus", 0)}
    return options.config_errors(list(profiles), list(partitions), list(images or []), docker)


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {"jupyterhub_profile_errors": jupyterhub_profile_errors}
