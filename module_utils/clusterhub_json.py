"""Merging owned keys into a shared JSON file, the decisions of the docker_daemon_json module
(library/docker_daemon_json.py).

Several roles own keys of /etc/docker/daemon.json: docker_engine its settings, nvidia_container_toolkit
the nvidia runtime, a site its own. Each merges only its keys; keys it does not name are kept, and
every writer renders with dump(), so no role undoes another's formatting (idempotence across roles).

Plain functions without Ansible, tested by tests/unit/test_docker_daemon_json.py. They run on the
managed node, so they stay compatible with Python 3.8.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping


class JsonFileError(ValueError):
    """The existing file cannot be merged into; the message names the file and says why."""


_BY_HAND = "fix or remove it by hand, it was left unchanged"


def deep_merge(base: dict, wanted: Mapping) -> dict:
    """base with wanted merged in: nested objects merge, anything else (lists too) is replaced; no input changes."""
    merged = copy.deepcopy(base)
    for key, value in wanted.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return merged


def parse_object(text, path: str) -> dict:
    """The JSON object in text; None, "" or white space is an empty object. Anything else raises JsonFileError
    naming `path`: a file someone else wrote is never silently replaced."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonFileError(f"{path} is not UTF-8 text ({exc}); {_BY_HAND}") from None
    if text is None or not text.strip():
        return {}
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise JsonFileError(f"{path} is not valid JSON ({exc}); {_BY_HAND}") from None
    if not isinstance(document, dict):
        raise JsonFileError(f"{path} holds a JSON {type(document).__name__}, not an object; {_BY_HAND}")
    return document


def dump(document) -> str:
    """The one rendering every writer of a shared JSON file uses: sorted keys, 2-space indent, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def plan_merge(text, wanted: Mapping, path: str):
    """(document, new_text): the file's document with `wanted` merged in, and the text to write, or None when
    the file already holds that document (however it is formatted). A missing or empty file is written."""
    if not isinstance(wanted, Mapping):
        raise JsonFileError(f"the keys to merge into {path} must be a dict, got {type(wanted).__name__}")
    existing = parse_object(text, path)
    document = deep_merge(existing, wanted)
    # compared as rendered JSON, not as Python values: true and 1, 1 and 1.0 are different JSON
    if text is not None and text.strip() and dump(document) == dump(existing):
        return document, None
    return document, dump(document)
