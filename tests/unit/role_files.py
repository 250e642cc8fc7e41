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


# the facts every host of a render has (none are gathered: the renders do not depend on this machine or a cache)
FACTS = {"ansible_processor_vcpus": 2, "ansible_memtotal_mb": 8192}


def host_variables(role: str, host: str, inventory: str = "lab", extra: dict | None = None) -> dict[str, Any]:
    """A host's variables as a play of `role` sees them: role defaults < inventory < role vars (main.yml, then
    Debian.yml, the OS variables a role loads on the lab's hosts) < extra; every host's facts are FACTS."""
    from ansible.inventory.manager import InventoryManager  # noqa: PLC0415 - only the renders need Ansible's loader
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.vars.hostvars import HostVars  # noqa: PLC0415
    from ansible.vars.manager import VariableManager  # noqa: PLC0415

    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(ROOT / "inventories" / inventory / "hosts.yml")])
    variable_manager = VariableManager(loader=loader, inventory=manager)
    variable_manager._fact_cache = {h.name: dict(FACTS) for h in manager.get_hosts()}
    # other hosts' inventory variables (no facts: what slurm_node and the inventory say), as a play sees them
    variable_manager._hostvars = HostVars(inventory=manager, variable_manager=variable_manager, loader=loader)
    variables = variable_manager.get_vars(host=manager.get_host(host), include_hostvars=True)
    vars_files = [ROOT / "roles" / role / "vars" / name for name in ("main.yml", "Debian.yml")]
    return {
        **load(ROOT / "roles" / role / "defaults" / "main.yml"),
        **variables,
        "role_path": str(ROOT / "roles" / role),
        "ansible_managed": "Ansible managed",
        **{key: value for path in vars_files if path.is_file() for key, value in load(path).items()},
        **(extra or {}),
    }


def render(role: str, template: str, host: str, inventory: str = "lab", extra: dict | None = None) -> str:
    """roles/ROLE/templates/TEMPLATE rendered through Ansible's templar for `host` of `inventory`."""
    return render_text(role, (ROOT / "roles" / role / "templates" / template).read_text(), host, inventory, extra)


def render_text(role: str, text: str, host: str, inventory: str = "lab", extra: dict | None = None) -> str:
    """text (a task's `content:`, say) rendered through Ansible's templar as a play of `role` on `host` would."""
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.plugins.loader import init_plugin_loader  # noqa: PLC0415
    from ansible.template import Templar  # noqa: PLC0415

    init_plugin_loader()
    engine = Templar(loader=DataLoader(), variables=host_variables(role, host, inventory, extra))
    return engine.template(trust_as_template(text))


GOLDEN = Path(__file__).resolve().parent / "golden"


def matches_golden(text: str, golden: Path) -> None:
    """text is what golden/... holds; `make golden` (CLUSTERHUB_UPDATE_GOLDEN=1) writes it instead."""
    import os  # noqa: PLC0415

    if os.environ.get("CLUSTERHUB_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"no golden file {golden}: write it with `make golden`"
    assert text == golden.read_text(), f"the render differs from {golden}: review the change, then `make golden`"
