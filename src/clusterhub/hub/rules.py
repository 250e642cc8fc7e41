"""The site's profiles, partitions, images and Docker host checked against each other: the rules the
jupyterhub role's validation applies to the inventory (filter_plugins/clusterhub_rules.py) and the hub
applies to its spawn options at start. Plain Python; a profile passes exactly when request.py would grant it.
"""

from __future__ import annotations

from .request import (
    CUSTOM,
    KINDS,
    NAME_RE,
    SLUG_RE,
    OptionsError,
    _docker_image_names,
    _partitions_by_name,
    check_limits,
    docker_gpus,
)


def _docker_profile_errors(label: str, prof: dict, docker: dict | None) -> list[str]:
    errors = []
    names = _docker_image_names(docker)
    if not names:
        errors.append(f"{label}: a docker profile needs jupyterhub_docker_images, which is empty")
    elif prof.get("image", names[0]) not in names:
        errors.append(f"{label}: image {prof.get('image')!r} is not in jupyterhub_docker_images ({', '.join(names)})")
    for key in ("cpus", "memory_gb"):
        value = prof.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(f"{label}: {key} must be a whole number of at least 1")
    try:
        docker_gpus(prof.get("gpus", 0), (docker or {}).get("gpus", 0))
    except OptionsError as e:
        errors.append(f"{label}: {e}")
    return errors


def config_errors(
    profiles: list[dict], partitions: list[dict], images: list[dict] | None = None, docker: dict | None = None
) -> list[str]:
    """Check the site's profiles against its partition limits and Docker host; one sentence per problem."""
    errors = []
    parts = _partitions_by_name(partitions)
    image_names = {i["name"] for i in images or []}
    slurm_profiles = [p for p in profiles if p.get("kind", "slurm") == "slurm"]
    if not partitions and (slurm_profiles or not profiles):
        errors.append("jupyterhub_partitions is empty: at least one partition must be offered")
    host_gpus = (docker or {}).get("gpus", 0)
    if isinstance(host_gpus, bool) or not isinstance(host_gpus, int) or host_gpus < 0:
        errors.append("jupyterhub_docker_gpus must be a whole number, 0 or more")
    for p in partitions:
        if not NAME_RE.match(str(p.get("name", ""))):
            errors.append(f"jupyterhub_partitions: {p.get('name')!r} is not a partition name")
        for key in ("max_cpus", "max_memory_gb", "max_hours"):
            if not isinstance(p.get(key), (int, float)) or p.get(key) <= 0:
                errors.append(f"jupyterhub_partitions ({p.get('name')}): {key} must be a positive number")
        if not isinstance(p.get("max_gpus", 0), int) or p.get("max_gpus", 0) < 0:
            errors.append(f"jupyterhub_partitions ({p.get('name')}): max_gpus must be 0 or more")
    slugs = [p.get("slug") for p in profiles]
    for slug in sorted({s for s in slugs if slugs.count(s) > 1}):
        errors.append(f"jupyterhub_profiles: the slug {slug!r} is used more than once")
    for prof in profiles:
        label = f"jupyterhub_profiles ({prof.get('slug')})"
        if not SLUG_RE.match(str(prof.get("slug", ""))) or prof.get("slug") == CUSTOM:
            errors.append(f"{label}: slug must be lower-case letters, digits, '-', '_' and not '{CUSTOM}'")
            continue
        kind = prof.get("kind", "slurm")
        if kind not in KINDS:
            errors.append(f"{label}: kind {kind!r} is not one of {', '.join(KINDS)}")
            continue
        if kind == "docker":
            errors.extend(_docker_profile_errors(label, prof, docker))
            if "idle_minutes" in prof:
                errors.append(f"{label}: idle_minutes is for Slurm profiles (Docker servers: the hub's idle culler)")
            continue
        part = parts.get(prof.get("partition"))
        if part is None:
            errors.append(f"{label}: partition {prof.get('partition')!r} is not in jupyterhub_partitions")
            continue
        try:
            check_limits(
                part,
                cpus=prof.get("cpus", 1),
                memory_gb=prof.get("memory_gb", 1),
                hours=prof.get("hours", 1),
                gpus=prof.get("gpus", 0),
            )
        except OptionsError as e:
            errors.append(f"{label}: {e}")
        idle = prof.get("idle_minutes")
        if idle is not None and (not isinstance(idle, (int, float)) or isinstance(idle, bool) or idle <= 0):
            errors.append(f"{label}: idle_minutes must be a positive number of minutes")
        elif idle is not None and idle >= prof.get("hours", 1) * 60:
            errors.append(f"{label}: idle_minutes ({idle}) must be less than the profile's {prof.get('hours', 1)} h")
        if prof.get("image") and prof["image"] not in image_names:
            errors.append(f"{label}: image {prof['image']!r} is not in jupyterhub_images")
    return errors
