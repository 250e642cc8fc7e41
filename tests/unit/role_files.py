"""Reading a role's YAML as Ansible does, for the unit tests that evaluate role files through the templar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ansible.template import trust_as_template


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


GATE = Path(__file__).resolve().parents[2] / "roles" / "hpc_account" / "files" / "hpc_gate.py"


def hpc_gate():
    """hpc-gate (a standard-library script, not a package) as a module, loaded once under one name."""
    import importlib.util  # noqa: PLC0415 - only the gate's tests need it
    import sys  # noqa: PLC0415

    if "hpc_gate" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hpc_gate", GATE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["hpc_gate"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["hpc_gate"]
