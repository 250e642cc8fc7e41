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
