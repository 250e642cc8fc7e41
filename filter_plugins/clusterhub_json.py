"""Merge wanted keys into an existing JSON document (e.g. /etc/docker/daemon.json) without losing the others.

Several roles own keys of one file: nvidia_container_toolkit writes the `nvidia` runtime, docker_engine
its own settings. Each reads the file with slurp, merges its keys with `clusterhub_json_merge`, and
writes the result rendered by `clusterhub_json_dump`, so every writer produces the same bytes and no
role undoes another's formatting (idempotence across roles).

Plain functions, tested by tests/unit/test_json_merge.py.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def _deep_merge(base: dict, wanted: Mapping) -> dict:
    """Return base with wanted merged in: nested dicts merge, anything else (lists too) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in wanted.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return merged


def clusterhub_json_merge(existing_text, wanted_dict, path: str = "the existing JSON file") -> dict:
    """Deep-merge wanted_dict into the JSON object in existing_text; wanted wins on conflicts.

    An empty or missing text (None, "", whitespace) counts as an empty object. Text that is not JSON,
    or JSON whose top level is not an object, raises AnsibleFilterError naming `path` and the problem:
    a file someone else wrote is never silently replaced.
    """
    if not isinstance(wanted_dict, Mapping):
        raise AnsibleFilterError(
            f"clusterhub_json_merge: the keys to merge into {path} must be a dict, got {type(wanted_dict).__name__}"
        )
    if isinstance(existing_text, bytes):
        existing_text = existing_text.decode("utf-8")
    if existing_text is None or not str(existing_text).strip():
        existing = {}
    else:
        try:
            existing = json.loads(existing_text)
        except ValueError as exc:
            raise AnsibleFilterError(
                f"{path} is not valid JSON ({exc}); fix or remove it by hand, it was left unchanged"
            ) from None
        if not isinstance(existing, dict):
            raise AnsibleFilterError(
                f"{path} holds a JSON {type(existing).__name__}, not an object; fix it by hand, it was left unchanged"
            )
    return _deep_merge(existing, wanted_dict)


def clusterhub_json_dump(data) -> str:
    """The one rendering every writer of a shared JSON file uses: sorted keys, 2-space indent, final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {"clusterhub_json_merge": clusterhub_json_merge, "clusterhub_json_dump": clusterhub_json_dump}
