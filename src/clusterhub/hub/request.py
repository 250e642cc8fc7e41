"""What a user asks for: the server-side check of a spawn request against the site's profiles and limits.

Plain Python (no JupyterHub import). Every value that reaches the batch script passes through
`validate_options`, which accepts only whole numbers and known names: nothing a user types is ever
interpolated. A profile has a kind: `slurm` (the default: a batch job on a partition) or `docker` (a
container on the hub's Docker host, from one of the site's Docker images, with all, some or no GPUs).
Docker limits come from `docker`, a dict {"images": [{name, display_name, image}], "gpus": GPUs on the host}.
The inventory's rules over the same data are in rules.py, the form in form.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INT_RE = re.compile(r"^\d{1,6}$")
NUMBER_RE = re.compile(r"^\d{1,4}(\.\d{1,2})?$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
CUSTOM = "custom"
KINDS = ("slurm", "docker")
ALL_GPUS = "all"


class OptionsError(ValueError):
    """A user's request that cannot be granted; the message is shown to the user as is."""


@dataclass(frozen=True)
class Request:
    """A validated request, ready for the batch script."""

    profile: str
    partition: str
    cpus: int
    memory_gb: int
    hours: float
    gpus: int | str  # a count; "all" only for docker
    image: str = ""
    kind: str = "slurm"

    @property
    def runtime(self) -> str:
        minutes = round(self.hours * 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}:00"

    def as_user_options(self) -> dict:
        if self.kind == "docker":
            # the docker_* names are the ones validate_options reads for docker profiles
            return {
                "profile": self.profile,
                "kind": self.kind,
                "cpus": self.cpus,
                "memory_gb": self.memory_gb,
                "image": self.image,
                "gpus": self.gpus,
                "docker_image": self.image,
                "docker_gpus": self.gpus,
            }
        return {
            "profile": self.profile,
            "partition": self.partition,
            "cpus": self.cpus,
            "memory_gb": self.memory_gb,
            "hours": self.hours,
            "gpus": self.gpus,
            "image": self.image,
            "kind": self.kind,
        }


def _partitions_by_name(partitions: list[dict]) -> dict[str, dict]:
    return {p["name"]: p for p in partitions}


def _docker_image_names(docker: dict | None) -> list[str]:
    return [i["name"] for i in (docker or {}).get("images", [])]


def docker_gpus(raw, host_gpus: int, field: str = "gpus") -> int | str:
    """A Docker GPU request: "all", or a count from 0 to the host's GPUs; OptionsError otherwise."""
    if raw == ALL_GPUS:
        gpus = ALL_GPUS
    else:
        gpus = _number(raw, field)
        if isinstance(gpus, float):
            raise OptionsError(f"{field} must be a whole number or '{ALL_GPUS}'")
    if gpus == 0:
        return 0
    if host_gpus == 0:
        raise OptionsError(
            f"{gpus} GPUs requested; the Docker host has no GPUs configured (jupyterhub_docker_gpus is 0)"
        )
    if gpus != ALL_GPUS and gpus > host_gpus:
        raise OptionsError(f"{gpus} GPUs requested; the Docker host has {host_gpus} GPUs")
    return gpus


def idle_args(minutes: float) -> list[str]:
    """The server's own idle shutdown for a profile's `idle_minutes` (Jupyter Server's options): idle kernels and
    terminals are culled, then the server, with no kernel, terminal or request left, ends its job (it checks
    every 60 s). Busy kernels are never culled: a running computation is not idle."""
    seconds = max(1, round(minutes * 60))
    return [
        f"--MappingKernelManager.cull_idle_timeout={seconds}",
        "--MappingKernelManager.cull_interval=60",
        f"--TerminalManager.cull_inactive_timeout={seconds}",
        "--TerminalManager.cull_interval=60",
        f"--ServerApp.shutdown_no_activity_timeout={seconds}",
    ]


def check_limits(part: dict, *, cpus, memory_gb, hours, gpus) -> None:
    """Raise OptionsError naming the limit that a request exceeds."""
    name = part["name"]
    if not 1 <= cpus <= part["max_cpus"]:
        raise OptionsError(f"{cpus} CPUs requested; partition {name} allows 1 to {part['max_cpus']} CPUs")
    if not 1 <= memory_gb <= part["max_memory_gb"]:
        raise OptionsError(f"{memory_gb} GB memory requested; partition {name} allows 1 to {part['max_memory_gb']} GB")
    if not 0.25 <= hours <= part["max_hours"]:
        raise OptionsError(f"{hours} hours requested; partition {name} allows 0.25 to {part['max_hours']} hours")
    max_gpus = part.get("max_gpus", 0)
    if not 0 <= gpus <= max_gpus:
        if max_gpus == 0:
            raise OptionsError(f"{gpus} GPUs requested; partition {name} has no GPUs")
        raise OptionsError(f"{gpus} GPUs requested; partition {name} allows 0 to {max_gpus} GPUs")


def _number(raw, field: str, pattern: re.Pattern = INT_RE) -> float:
    if isinstance(raw, bool):
        raise OptionsError(f"{field} must be a number")
    if isinstance(raw, (int, float)):
        raw = str(raw)
    if not isinstance(raw, str) or not pattern.match(raw.strip()):
        raise OptionsError(f"{field} must be a number, got {str(raw)[:40]!r}")
    return float(raw) if "." in raw else int(raw)


def _docker_request(raw: dict, prof: dict, docker: dict | None) -> Request:
    """A docker profile's request: its image (or the user's `docker_image` choice) and GPUs (or `docker_gpus`)."""
    names = _docker_image_names(docker)
    image = raw.get("docker_image") or prof.get("image") or (names[0] if names else "")
    if image not in names:
        raise OptionsError(f"unknown Docker image {str(image)[:60]!r}; choose one of {', '.join(names) or 'none'}")
    asked = raw.get("docker_gpus")
    asked = prof.get("gpus", 0) if asked in (None, "") else asked
    gpus = docker_gpus(asked, (docker or {}).get("gpus", 0), "docker_gpus")
    return Request(
        profile=prof["slug"],
        partition="",
        cpus=prof.get("cpus", 1),
        memory_gb=prof.get("memory_gb", 1),
        hours=0,
        gpus=gpus,
        image=image,
        kind="docker",
    )


def validate_options(
    raw: dict,
    profiles: list[dict],
    partitions: list[dict],
    images: list[dict] | None = None,
    allow_custom=True,
    *,
    docker: dict | None = None,
) -> Request:
    """Turn form fields or a REST body into a Request, or raise OptionsError saying why not."""
    if not isinstance(raw, dict):
        raise OptionsError("options must be a mapping")
    raw = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in raw.items()}
    by_slug = {p["slug"]: p for p in profiles}
    slug = raw.get("profile") or (profiles[0]["slug"] if profiles else CUSTOM)
    image_names = [i["name"] for i in images or []]
    if slug == CUSTOM:
        if not allow_custom:
            raise OptionsError("custom resources are not offered here; pick one of the profiles")
        parts = _partitions_by_name(partitions)
        partition = raw.get("partition")
        if partition not in parts:
            raise OptionsError(f"unknown partition {str(partition)[:40]!r}; choose one of {', '.join(parts)}")
        chosen = {
            "cpus": _number(raw.get("cpus", 1), "cpus"),
            "memory_gb": _number(raw.get("memory_gb", 1), "memory_gb"),
            "hours": _number(raw.get("hours", 1), "hours", NUMBER_RE),
            "gpus": _number(raw.get("gpus", 0), "gpus"),
        }
        image = raw.get("image") or (image_names[0] if image_names else "")
    elif slug in by_slug and by_slug[slug].get("kind", "slurm") == "docker":
        return _docker_request(raw, by_slug[slug], docker)
    elif slug in by_slug:
        prof = by_slug[slug]
        partition = prof["partition"]
        chosen = {k: prof.get(k, d) for k, d in (("cpus", 1), ("memory_gb", 1), ("hours", 1), ("gpus", 0))}
        image = raw.get("image") or prof.get("image") or (image_names[0] if image_names else "")
    else:
        raise OptionsError(f"unknown profile {str(slug)[:40]!r}")
    if image and image not in image_names:
        raise OptionsError(f"unknown image {str(image)[:60]!r}; choose one of {', '.join(image_names)}")
    check_limits(_partitions_by_name(partitions)[partition], **chosen)
    return Request(profile=slug, partition=partition, image=image or "", **chosen)
