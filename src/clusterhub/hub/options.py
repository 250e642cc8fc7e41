"""Resource profiles and limits: the spawn form and the server-side check of what a user asks for.

Plain Python (no JupyterHub import), so the rules are unit-tested and shared with the role's
inventory validation. Every value that reaches the batch script passes through `validate_options`,
which accepts only whole numbers and known names: nothing a user types is ever interpolated.

A profile has a kind: `slurm` (the default: a batch job on a partition) or `docker` (a container on the
hub's Docker host, from one of the site's Docker images, with all, some or no GPUs). Docker limits
come from `docker`, a dict {"images": [{name, display_name, image}], "gpus": GPUs on the host}.
"""

from __future__ import annotations

import html
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


MAINTENANCE_DEFAULT = "The cluster is in maintenance: new servers cannot be started right now."


def maintenance_notice(path: str) -> str:
    """The maintenance switch: while the file exists new spawns are refused with its text ("" when off)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return ""
    return text or MAINTENANCE_DEFAULT


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
        if prof.get("image") and prof["image"] not in image_names:
            errors.append(f"{label}: image {prof['image']!r} is not in jupyterhub_images")
    return errors


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


def _gpu_text(gpus) -> str:
    if gpus == ALL_GPUS:
        return ", all GPUs"
    return f", {gpus} GPU" if gpus else ""


def _summary(p: dict, docker: dict | None) -> str:
    if p.get("kind", "slurm") == "docker":
        by_name = {i["name"]: i for i in (docker or {}).get("images", [])}
        names = list(by_name)
        image = by_name.get(p.get("image") or (names[0] if names else ""), {})
        shown = image.get("display_name", image.get("name", ""))
        return f"{p.get('cpus', 1)} CPU, {p.get('memory_gb', 1)} GB{_gpu_text(p.get('gpus', 0))}, Docker: {shown}"
    gpus = f", {p.get('gpus', 0)} GPU" if p.get("gpus") else ""
    return f"{p.get('cpus', 1)} CPU, {p.get('memory_gb', 1)} GB, {p.get('hours', 1)} h{gpus} on {p['partition']}"


def render_form(
    profiles: list[dict],
    partitions: list[dict],
    images=None,
    allow_custom=True,
    notice="",
    *,
    docker: dict | None = None,
) -> str:
    """The spawn form: profile cards (Slurm and Docker), a custom Slurm section bounded by the partition limits."""
    esc = html.escape
    out = []
    if notice:
        out.append(f'<div class="alert alert-warning" role="alert">{esc(notice)}</div>')
    out.append('<fieldset class="clusterhub-profiles"><legend>Resources</legend>')
    for i, p in enumerate(profiles):
        checked = " checked" if i == 0 else ""
        summary = _summary(p, docker)
        kind = esc(p.get("kind", "slurm"))
        out.append(
            f'<div class="form-check" data-kind="{kind}"><input class="form-check-input" type="radio" name="profile" '
            f'id="profile-{esc(p["slug"])}" value="{esc(p["slug"])}"{checked}>'
            f'<label class="form-check-label" for="profile-{esc(p["slug"])}"><strong>'
            f"{esc(p.get('display_name', p['slug']))}</strong> <small>{esc(summary)}</small>"
            f"{' — ' + esc(p['description']) if p.get('description') else ''}</label></div>"
        )
    if allow_custom and partitions:
        out.append(
            '<div class="form-check"><input class="form-check-input" type="radio" name="profile" '
            f'id="profile-custom" value="{CUSTOM}"{"" if profiles else " checked"}>'
            '<label class="form-check-label" for="profile-custom"><strong>Custom</strong></label></div>'
        )
        opts = "".join(
            f'<option value="{esc(p["name"])}">{esc(p["name"])} (up to {p["max_cpus"]} CPU, '
            f"{p['max_memory_gb']} GB, {p['max_hours']} h, {p.get('max_gpus', 0)} GPU)</option>"
            for p in partitions
        )
        top = {k: max(p.get(k, 0) for p in partitions) for k in ("max_cpus", "max_memory_gb", "max_hours", "max_gpus")}
        out.append(
            '<div class="clusterhub-custom">'
            f'<label>Partition <select name="partition" class="form-select">{opts}</select></label> '
            f'<label>CPUs <input type="number" name="cpus" min="1" max="{top["max_cpus"]}" value="1"></label> '
            f'<label>Memory (GB) <input type="number" name="memory_gb" min="1" max="{top["max_memory_gb"]}" '
            'value="2"></label> '
            f'<label>Hours <input type="number" name="hours" min="0.25" step="0.25" max="{top["max_hours"]}" '
            'value="1"></label> '
            + (
                f'<label>GPUs <input type="number" name="gpus" min="0" max="{top["max_gpus"]}" value="0"></label>'
                if top["max_gpus"]
                else ""
            )
            + "</div>"
        )
    out.append("</fieldset>")
    if images:
        opts = "".join(
            f'<option value="{esc(i["name"])}">{esc(i.get("display_name", i["name"]))}</option>' for i in images
        )
        out.append(f'<label>Image <select name="image" class="form-select">{opts}</select></label>')
    docker_images = (docker or {}).get("images", [])
    if any(p.get("kind", "slurm") == "docker" for p in profiles):
        if len(docker_images) > 1:
            opts = "".join(
                f'<option value="{esc(i["name"])}">{esc(i.get("display_name", i["name"]))}</option>'
                for i in docker_images
            )
            out.append(
                '<label>Docker image <select name="docker_image" class="form-select">'
                f'<option value="">the profile\'s</option>{opts}</select></label>'
            )
        host_gpus = (docker or {}).get("gpus", 0)
        if host_gpus:
            opts = "".join(f'<option value="{n}">{n}</option>' for n in range(host_gpus + 1))
            out.append(
                '<label>GPUs (Docker) <select name="docker_gpus" class="form-select">'
                f'<option value="">the profile\'s</option>{opts}<option value="{ALL_GPUS}">all</option>'
                "</select></label>"
            )
    return "\n".join(out)
