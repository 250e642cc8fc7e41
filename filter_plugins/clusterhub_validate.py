"""Shape checks the roles' tasks/validate.yml share: URLs, host names and ports on one host.

Each returns what an `ansible.builtin.assert` can test directly (a bool, or the list of clashes), so a
role's validation names its own variables in its own `fail_msg`. Plain functions, tested by
tests/unit/test_validate_filters.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def clusterhub_host_ok(value) -> bool:
    """True for a DNS name (labels of letters, digits, - and _), an IPv4 address or an IPv6 address."""
    if not isinstance(value, str) or not value or len(value) > 253:
        return False
    try:
        ipaddress.ip_address(value.strip("[]") if value.startswith("[") and value.endswith("]") else value)
    except ValueError:
        pass
    else:
        return True
    if re.fullmatch(r"[0-9.]+", value):  # looks like an IPv4 address but is not one (999.1.1.1)
        return False
    return all(_LABEL.match(label) for label in value.rstrip(".").split("."))


def clusterhub_port_ok(value, allow_zero: bool = False) -> bool:
    """True for a port number 1-65535 (0 too when allow_zero: "off"); numeric strings count, booleans do not."""
    if isinstance(value, bool):
        return False
    try:
        port = int(str(value).strip())
    except ValueError:
        return False
    return (0 if allow_zero else 1) <= port <= 65535


def clusterhub_url_ok(value, schemes: Iterable[str] = ("http", "https"), port: bool = False) -> bool:
    """True for a URL with one of schemes, a well-formed host and a port 1-65535 where one is given.

    port=True requires the port to be written out (a listen URL). Spaces, quotes and control characters
    are refused anywhere: the URL ends up in configuration files and command lines.
    """
    if not isinstance(value, str) or re.search(r"[\s\"'`\\\x00-\x1f\x7f]", value):
        return False
    parts = urlsplit(value)
    if parts.scheme not in list(schemes) or not parts.hostname or parts.username or parts.password:
        return False
    try:
        given = parts.port
    except ValueError:  # not a number, or out of range
        return False
    if port and given is None:
        return False
    return (given is None or given >= 1) and clusterhub_host_ok(parts.hostname)


def clusterhub_url_port(value) -> int:
    """The port of a URL, written out or the scheme's (http 80, https 443); 0 when there is none."""
    try:
        parts = urlsplit(str(value))
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        return 0


def clusterhub_port_clashes(ports: Mapping[str, object]) -> list[str]:
    """Ports given twice among {name: port} on one host, as "name1 and name2 (port)"; 0 (off) never clashes."""
    seen: dict[int, list[str]] = {}
    for name, value in ports.items():
        try:
            port = int(str(value))
        except ValueError:
            continue
        if port:
            seen.setdefault(port, []).append(str(name))
    return [f"{' and '.join(names)} ({port})" for port, names in sorted(seen.items()) if len(names) > 1]


_SPAN = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?$")


def clusterhub_port_spans(items, low: int = 1024) -> list[list[int]] | None:
    """Port numbers and "LO-HI" ranges as sorted, merged [lo, hi] spans (inclusive); None where an item is
    anything else (a wildcard, HI below LO, a port below `low` or above 65535)."""
    if isinstance(items, (str, int)) or not isinstance(items, Iterable):
        return None
    spans = []
    for item in items:
        match = _SPAN.match(str(item).strip()) if not isinstance(item, bool) else None
        if not match:
            return None
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if not low <= lo <= hi <= 65535:
            return None
        spans.append([lo, hi])
    merged: list[list[int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return merged


def clusterhub_port_ranges(items, low: int = 1024) -> list[int]:
    """Every port of clusterhub_port_spans(items), in order; [] where the items are not valid."""
    return [port for lo, hi in clusterhub_port_spans(items, low) or [] for port in range(lo, hi + 1)]


def clusterhub_not_found(results: Iterable[Mapping], kind: str = "file") -> list[str]:
    """From the results of a looped ansible.builtin.stat whose items are {var, path}: "var (path)" for each
    path that is not a regular file (kind="file") or a directory (kind="directory") there."""
    key = {"file": "isreg", "directory": "isdir"}[kind]
    return [
        f"{result['item']['var']} ({result['item']['path']})"
        for result in results
        if not result.get("skipped") and not (result.get("stat") or {}).get(key, False)
    ]


def clusterhub_sudo_runas(group: str, min_uid) -> str:
    """A sudoers Runas list: the members of `group`, never root, nobody (65534) or any uid below `min_uid` (sudo
    has no uid ranges: each is excluded by number, whether an account has it yet or not). The hub's rule and the
    runs service's rule use the same one."""
    excluded = [*range(int(min_uid)), 65534]
    return ", ".join([f"%{group}", "!root", *(f"!#{uid}" for uid in excluded)])


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "clusterhub_host_ok": clusterhub_host_ok,
            "clusterhub_port_ok": clusterhub_port_ok,
            "clusterhub_url_ok": clusterhub_url_ok,
            "clusterhub_url_port": clusterhub_url_port,
            "clusterhub_port_clashes": clusterhub_port_clashes,
            "clusterhub_not_found": clusterhub_not_found,
            "clusterhub_port_spans": clusterhub_port_spans,
            "clusterhub_port_ranges": clusterhub_port_ranges,
            "clusterhub_sudo_runas": clusterhub_sudo_runas,
        }
