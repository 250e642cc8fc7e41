"""Which spawner runs a server, and what Docker is asked for: plain functions shared by the dispatching
spawner (dispatch.py) and the Docker spawner (docker.py), unit-tested without JupyterHub."""

from __future__ import annotations

from .request import ALL_GPUS


def spawner_kind(kind: str, partition: str, partitions: list[dict]) -> str:
    """The child spawner of a validated request: docker, slurm, or remote (a Slurm partition the hub
    cannot reach, marked `remote: true`: submitted over SSH, reached through the job's tunnel)."""
    if kind != "slurm":
        return kind
    remote = {p["name"] for p in partitions if p.get("remote")}
    return "remote" if partition in remote else "slurm"


def child_kind(state: dict) -> str:
    """The kind of a persisted server: "" when there is none; state without a kind is Slurm's (legacy)."""
    if not state:
        return ""
    return state.get("kind") or ("slurm" if state.get("job_id") else "")


def child_state(state: dict) -> dict:
    """The child spawner's own state inside the persisted state (all of it for legacy Slurm state)."""
    return dict(state.get("child", {})) if "kind" in state else dict(state)


def wrap_state(kind: str, state: dict) -> dict:
    """What the dispatching spawner persists: the kind and the child's state, nothing when the child has none."""
    return {"kind": kind, "child": dict(state)} if kind and state else {}


# a container in these states holds the GPUs Docker gave it (exited ones are gone: the spawner removes them)
GPU_HOLDING_STATES = frozenset({"created", "running", "restarting", "paused"})


class GpusBusy(Exception):
    """Fewer GPUs of the workstation are free than a request asks for; the message is for the user."""


def host_gpu_ids(count: int) -> list[str]:
    """The Docker host's GPUs as Docker device ids: the indices of jupyterhub_docker_gpus, 0 first."""
    return [str(i) for i in range(max(count, 0))]


def held_gpus(containers: list[dict], host_ids: list[str]) -> set[str]:
    """The GPUs of this host that the hub's containers hold, read from their `docker inspect` host config
    (so a restarted hub knows them again): device ids as given, or, for a count (containers made before
    ids were assigned), the first `count` GPUs, all of them for -1."""
    held: set[str] = set()
    for container in containers:
        if (container.get("State") or {}).get("Status") not in GPU_HOLDING_STATES:
            continue
        for req in (container.get("HostConfig") or {}).get("DeviceRequests") or []:
            capabilities = req.get("Capabilities") or []
            if req.get("Driver") != "nvidia" and not any("gpu" in caps for caps in capabilities):
                continue
            count = req.get("Count") or 0
            ids = req.get("DeviceIDs") or (host_ids if count < 0 else host_ids[:count])
            held.update(ids)
    return held & set(host_ids)


def assign_gpus(gpus, host_ids: list[str], held: set[str]) -> list[str]:
    """The device ids for a validated request of `gpus` (a count, or "all": every GPU of the host), the
    lowest free ones first (released GPUs are reused); GpusBusy when too few are free."""
    if not gpus:
        return []
    wanted = len(host_ids) if gpus == ALL_GPUS else int(gpus)
    free = [i for i in host_ids if i not in held]
    if wanted <= len(free):
        return free[:wanted]
    if not free:
        raise GpusBusy("all GPUs of this workstation are in use, try again later or ask for fewer")
    raise GpusBusy(
        f"only {len(free)} of the {len(host_ids)} GPUs of this workstation {'is' if len(free) == 1 else 'are'} free "
        f"and {wanted} were asked for, try again later or ask for fewer"
    )


def device_requests(device_ids: list[str]) -> list[dict]:
    """docker-py DeviceRequest arguments for assigned GPUs: these devices only (a count would let Docker pick
    the same first GPUs for everyone); none for no GPU."""
    if not device_ids:
        return []
    return [{"device_ids": list(device_ids), "capabilities": [["gpu"]]}]
