"""Which spawner runs a server, and what Docker is asked for: plain functions shared by the dispatching
spawner (dispatch.py) and the Docker spawner (docker.py), unit-tested without JupyterHub."""

from __future__ import annotations

from .options import ALL_GPUS


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


def device_requests(gpus) -> list[dict]:
    """docker-py DeviceRequest arguments for a GPU request: "all" is count -1, 0 is none (no request at all)."""
    if not gpus:
        return []
    return [{"count": -1 if gpus == ALL_GPUS else int(gpus), "capabilities": [["gpu"]]}]
