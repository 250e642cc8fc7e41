"""Filters that turn the inventory into Slurm's node list and check it.

Plain functions, tested by tests/unit/test_slurm_inventory.py without Ansible.
"""

from __future__ import annotations

import re

TIME_RE = re.compile(r"^(UNLIMITED|INFINITE|(\d+-)?\d+(:\d{2}){0,2})$")
OVERSUBSCRIBE_RE = re.compile(r"^(NO|EXCLUSIVE|YES(:\d+)?|FORCE(:\d+)?)$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(value):
    """Return value as int if it is a whole number (also given as a digit string), else None."""
    if _is_whole(value):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def slurm_inventory_errors(computes, controllers, partitions, node_settings) -> list[str]:
    """Return one sentence per problem in the Slurm inventory; empty when it is usable.

    computes/controllers: inventory host names; partitions: slurm_partitions;
    node_settings: {host: slurm_node dict}.
    """
    errors: list[str] = []
    if not controllers:
        errors.append("the slurm_controller group is empty: one host must run slurmctld")
    if not computes:
        errors.append("the slurm_compute group is empty: at least one compute node is needed")
    for host in computes:
        node = node_settings.get(host) or {}
        if not isinstance(node, dict):
            errors.append(f"slurm_node on {host} must be a mapping, got {node!r}")
            continue
        for key, unit in (("cpus", "CPUs"), ("memory_mb", "MiB")):
            if key in node and node[key] is not None:
                number = _as_int(node[key])
                if number is None or number < 1:
                    errors.append(
                        f"slurm_node.{key} on {host} is {node[key]!r}: it must be a whole number of {unit}, 1 or more"
                    )
        if "name" in node and not NAME_RE.match(str(node["name"])):
            errors.append(f"slurm_node.name on {host} is {node['name']!r}: letters, digits, '_', '.', '-' only")
        for i, gpu in enumerate(node.get("gpus") or []):
            count = _as_int(gpu.get("count"))
            if count is None or count < 1:
                errors.append(
                    f"slurm_node.gpus[{i}].count on {host} is {gpu.get('count')!r}: "
                    "it must be a whole number, 1 or more"
                )
            if not NAME_RE.match(str(gpu.get("type", ""))):
                errors.append(
                    f"slurm_node.gpus[{i}].type on {host} is {gpu.get('type')!r}: a GPU type such as a100 is required"
                )
    names = [p.get("name") for p in partitions]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"slurm_partitions: the name {name!r} is used more than once")
    defaults = [p.get("name") for p in partitions if p.get("default")]
    if len(defaults) > 1:
        errors.append(f"slurm_partitions: only one partition may be the default, found {', '.join(defaults)}")
    for i, part in enumerate(partitions):
        label = f"slurm_partitions[{i}] ({part.get('name')})"
        if not NAME_RE.match(str(part.get("name", ""))):
            errors.append(f"{label}: the name must be letters, digits, '_', '.', '-'")
        nodes = part.get("nodes", "ALL")
        if nodes != "ALL":
            if not isinstance(nodes, list) or not nodes:
                errors.append(f"{label}: nodes must be ALL or a non-empty list of compute hosts")
            else:
                unknown = [n for n in nodes if n not in computes]
                if unknown:
                    errors.append(
                        f"{label}: nodes {', '.join(map(str, unknown))} not in the slurm_compute group "
                        f"(known: {', '.join(computes) or 'none'})"
                    )
        for key in ("max_time", "default_time"):
            if key in part and part[key] is not None and not TIME_RE.match(str(part[key])):
                errors.append(
                    f"{label}: {key} {part[key]!r} is not a Slurm time (D-HH:MM:SS, HH:MM:SS, MM or UNLIMITED)"
                )
        if "oversubscribe" in part and not OVERSUBSCRIBE_RE.match(str(part["oversubscribe"])):
            errors.append(
                f"{label}: oversubscribe {part['oversubscribe']!r} must be NO, EXCLUSIVE, YES[:n] or FORCE[:n]"
            )
    return errors


def slurm_node_list(computes, hostvars, reserved_mb=1024) -> list[dict]:
    """Build the node list for slurm.conf/gres.conf from host variables and facts."""
    result = []
    for host in computes:
        hv = hostvars[host]
        node = dict(hv.get("slurm_node") or {})
        cpus = node.get("cpus") or hv.get("ansible_processor_vcpus")
        memory = node.get("memory_mb") or (
            int(hv["ansible_memtotal_mb"]) - int(reserved_mb) if "ansible_memtotal_mb" in hv else None
        )
        if cpus is None or memory is None:
            raise ValueError(
                f"{host}: set slurm_node.cpus and slurm_node.memory_mb or gather its facts (it is not in this play)"
            )
        gpus = [dict(g, gres=f"gpu:{g['type']}:{int(g['count'])}") for g in (node.get("gpus") or [])]
        result.append(
            {
                "host": host,
                "name": node.get("name") or host.split(".")[0],
                "cpus": int(cpus),
                "memory_mb": max(int(memory), 1),
                "gpus": gpus,
                "features": list(node.get("features") or []),
                "weight": node.get("weight"),
            }
        )
    return result


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "slurm_inventory_errors": slurm_inventory_errors,
            "slurm_node_list": slurm_node_list,
        }
