"""Reading a role's YAML as Ansible does, for the unit tests that evaluate role files through the templar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ansible.template import trust_as_template

ROOT = Path(__file__).resolve().parents[2]


def trusted(value: Any) -> Any:
    """YAML from the role's own files is trusted like Ansible trusts it (templates in it are rendered)."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trusted(item) for item in value]
    if isinstance(value, dict):
        return {key: trusted(item) for key, item in value.items()}
    return value


def load(path: Path) -> Any:
    """A role file's YAML, trusted (an empty file is an empty dict)."""
    return trusted(yaml.safe_load(path.read_text()) or {})


def host_variables(role: str, host: str, inventory: str = "lab", extra: dict | None = None) -> dict[str, Any]:
    """A host's variables as a play of `role` sees them: role defaults < inventory < role vars < extra."""
    from ansible.inventory.manager import InventoryManager  # noqa: PLC0415 - only the renders need Ansible's loader
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.vars.manager import VariableManager  # noqa: PLC0415

    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(ROOT / "inventories" / inventory / "hosts.yml")])
    variables = VariableManager(loader=loader, inventory=manager).get_vars(
        host=manager.get_host(host), include_hostvars=False
    )
    vars_file = ROOT / "roles" / role / "vars" / "main.yml"
    return {
        **load(ROOT / "roles" / role / "defaults" / "main.yml"),
        **variables,
        "role_path": str(ROOT / "roles" / role),
        "ansible_managed": "Ansible managed",
        **(load(vars_file) if vars_file.is_file() else {}),
        **(extra or {}),
    }


def render(role: str, template: str, host: str, inventory: str = "lab", extra: dict | None = None) -> str:
    """roles/ROLE/templates/TEMPLATE rendered through Ansible's templar for `host` of `inventory`."""
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.plugins.loader import init_plugin_loader  # noqa: PLC0415
    from ansible.template import Templar  # noqa: PLC0415

    init_plugin_loader()
    engine = Templar(loader=DataLoader(), variables=host_variables(role, host, inventory, extra))
    return engine.template(trust_as_template((ROOT / "roles" / role / "templates" / template).read_text()))
