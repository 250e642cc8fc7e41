"""Filters that turn the inventory into Slurm's node list and check it.

Plain functions, tested by tests/unit/test_slurm_inventory.py without Ansible.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path


def _module_utils(name: str):
    """The project's module_utils/<name>.py, under the name the modules import it by (ansible.module_utils.<name>),
    loaded once: the rules a module applies on a host are the ones the validation play checks."""
    full = f"ansible.module_utils.{name}"
    if full not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "module_utils" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(full, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[full] = module
    return sys.modules[full]


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


def _node_size(host, hostvars, reserved_mb) -> tuple[int | None, int | None, int]:
    """(CPUs, memory MiB Slurm gets, GPUs) of a compute host, from slurm_node or its facts; None where unknown."""
    hv = hostvars[host]
    node = dict(hv.get("slurm_node") or {})
    cpus = node.get("cpus") or hv.get("ansible_processor_vcpus")
    memory = node.get("memory_mb") or (
        int(hv["ansible_memtotal_mb"]) - int(reserved_mb) if "ansible_memtotal_mb" in hv else None
    )
    gpus = sum(int(g.get("count", 0)) for g in (node.get("gpus") or []))
    return (int(cpus) if cpus else None, int(memory) if memory else None, gpus)


def slurm_node_list(computes, hostvars, reserved_mb=1024) -> list[dict]:
    """Build the node list for slurm.conf/gres.conf from host variables and facts."""
    result = []
    for host in computes:
        node = dict(hostvars[host].get("slurm_node") or {})
        cpus, memory, _ = _node_size(host, hostvars, reserved_mb)
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


def slurm_hub_partitions(partitions) -> list[dict]:
    """jupyterhub_partitions derived from slurm_partitions: each entry with a `hub` block of limits, in order."""
    return [{"name": p["name"], **dict(p["hub"])} for p in (partitions or []) if p.get("hub")]


def slurm_time_hours(value) -> float | None:
    """Slurm's MaxTime in hours (MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS); None for UNLIMITED/INFINITE."""
    text = str(value).strip()
    if text.upper() in ("UNLIMITED", "INFINITE", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(x) for x in clock.split(":")]
    if days:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = [*parts, 0, 0][:3]
        return int(days) * 24 + hours + minutes / 60 + seconds / 3600
    if len(parts) == 1:  # minutes
        return parts[0] / 60
    if len(parts) == 2:  # MM:SS
        return parts[0] / 60 + parts[1] / 3600
    return parts[0] + parts[1] / 60 + parts[2] / 3600


def slurm_hub_partition_errors(hub_partitions, slurm_partitions, computes, hostvars, reserved_mb=1024) -> list[str]:
    """What the hub offers that Slurm cannot give, one sentence each: a partition Slurm does not define (remote
    partitions of another cluster's Slurm are not checked), max_cpus or max_memory_gb above the smallest node of
    the partition, max_hours above its MaxTime, GPUs where a node has none. Nodes of unknown size are skipped."""
    errors = []
    by_name = {p["name"]: p for p in (slurm_partitions or [])}
    for hub in hub_partitions or []:
        name = hub["name"]
        slurm = by_name.get(name)
        if slurm is None:
            if not hub.get("remote"):
                errors.append(
                    f"jupyterhub_partitions: partition {name} is not in slurm_partitions "
                    f"({', '.join(by_name) or 'none'}); define it there (with its hub limits) or remove it"
                )
            continue
        nodes = slurm.get("nodes", "ALL")
        hosts = (
            list(computes)
            if nodes in ("ALL", None)
            else [h for h in computes if h in nodes or h.split(".")[0] in nodes]
        )
        sizes = {h: _node_size(h, hostvars, reserved_mb) for h in hosts}
        cpus = [c for c, _, _ in sizes.values() if c]
        memory = [m for _, m, _ in sizes.values() if m]
        if cpus and int(hub.get("max_cpus", 0)) > min(cpus):
            errors.append(
                f"jupyterhub_partitions: {name} allows max_cpus {hub['max_cpus']}, but its smallest node has "
                f"{min(cpus)} CPUs; at most {min(cpus)}"
            )
        if memory and float(hub.get("max_memory_gb", 0)) * 1024 > min(memory):
            errors.append(
                f"jupyterhub_partitions: {name} allows max_memory_gb {hub['max_memory_gb']}, but its smallest node "
                f"gives Slurm {min(memory)} MiB; at most {min(memory) // 1024}"
            )
        limit = slurm_time_hours(slurm.get("max_time", "UNLIMITED"))
        if limit is not None and float(hub.get("max_hours", 0)) > limit:
            errors.append(
                f"jupyterhub_partitions: {name} allows max_hours {hub['max_hours']}, above its Slurm MaxTime "
                f"{slurm['max_time']} ({limit:g} h)"
            )
        if int(hub.get("max_gpus", 0) or 0) > 0:
            without = sorted(h for h, (_, _, g) in sizes.items() if g < int(hub["max_gpus"]))
            if without or not hosts:
                which = f"{', '.join(without)} have fewer GPUs than that" if without else "it has no nodes"
                errors.append(
                    f"jupyterhub_partitions: {name} allows max_gpus {hub['max_gpus']}, but {which} "
                    "(slurm_node.gpus, GRES)"
                )
    return errors


def slurm_account_errors(cluster, accounts) -> list[str]:
    """slurm_cluster_name and slurm_accounts as the slurm_accounting module will check them, one sentence each."""
    rules = _module_utils("clusterhub_accounting")
    return [f"slurm_accounts: {error}" for error in rules.account_errors(str(cluster), list(accounts or []))]


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "slurm_inventory_errors": slurm_inventory_errors,
            "slurm_node_list": slurm_node_list,
            "slurm_hub_partitions": slurm_hub_partitions,
            "slurm_hub_partition_errors": slurm_hub_partition_errors,
            "slurm_account_errors": slurm_account_errors,
        }
