"""The spawn form: a Jinja template (templates/spawn_form.html.j2), which a site may replace with its own
(jupyterhub_options_form_template; kubespawner's profile_form_template is the model), rendered with every
value autoescaped; and the maintenance switch, whose text the form shows.

The form only offers choices: request.py checks whatever comes back. A site template that fails to render
is logged and the packaged form is shown instead, so users never meet a broken spawn page.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources

import jinja2

from .request import ALL_GPUS, CUSTOM

DEFAULT_TEMPLATE = "spawn_form.html.j2"
MAINTENANCE_DEFAULT = "The cluster is in maintenance: new servers cannot be started right now."
LIMITS = ("max_cpus", "max_memory_gb", "max_hours", "max_gpus")

log = logging.getLogger(__name__)


def maintenance_notice(path: str) -> str:
    """The maintenance switch: while the file exists new spawns are refused with its text ("" when off)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return ""
    return text or MAINTENANCE_DEFAULT


@functools.cache
def default_template() -> str:
    """The packaged form's template text (read once: it ships with the code)."""
    return resources.files(__package__).joinpath("templates", DEFAULT_TEMPLATE).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> jinja2.Template:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
    return environment.from_string(source)


def _gpu_text(gpus) -> str:
    if gpus == ALL_GPUS:
        return ", all GPUs"
    return f", {gpus} GPU" if gpus else ""


def _idle_text(minutes: float) -> str:
    return f"{minutes:g} min" if minutes >= 1 else f"{round(minutes * 60)} s"


def summary(p: dict, docker: dict | None) -> str:
    """A profile's resources in a few words (the card's small print)."""
    if p.get("kind", "slurm") == "docker":
        by_name = {i["name"]: i for i in (docker or {}).get("images", [])}
        names = list(by_name)
        image = by_name.get(p.get("image") or (names[0] if names else ""), {})
        shown = image.get("display_name", image.get("name", ""))
        return f"{p.get('cpus', 1)} CPU, {p.get('memory_gb', 1)} GB{_gpu_text(p.get('gpus', 0))}, Docker: {shown}"
    gpus = f", {p.get('gpus', 0)} GPU" if p.get("gpus") else ""
    idle = f", stops when idle {_idle_text(p['idle_minutes'])}" if p.get("idle_minutes") else ""
    return f"{p.get('cpus', 1)} CPU, {p.get('memory_gb', 1)} GB, {p.get('hours', 1)} h{gpus} on {p['partition']}{idle}"


def form_context(
    profiles: list[dict],
    partitions: list[dict],
    images=None,
    allow_custom=True,
    notice="",
    *,
    docker: dict | None = None,
    starts: dict[str, str] | None = None,
) -> dict:
    """What a form template gets (the template's header comment lists it); `starts`: {slug: Slurm's answer
    to "when would it start" in words} (start_estimate.py)."""
    return {
        "notice": notice,
        "profiles": [
            {
                **p,
                "kind": p.get("kind", "slurm"),
                "display_name": p.get("display_name", p["slug"]),
                "description": p.get("description", ""),
                "summary": summary(p, docker),
                "start": (starts or {}).get(p["slug"], ""),
            }
            for p in profiles
        ],
        "custom": bool(allow_custom and partitions),
        "partitions": partitions,
        "top": {k: max((p.get(k, 0) for p in partitions), default=0) for k in LIMITS},
        "images": images or [],
        "docker_images": (docker or {}).get("images", []),
        "host_gpus": (docker or {}).get("gpus", 0),
        "docker_profiles": any(p.get("kind", "slurm") == "docker" for p in profiles),
        "CUSTOM": CUSTOM,
        "ALL_GPUS": ALL_GPUS,
    }


def template_error(template: str, *form: object, docker: dict | None = None) -> str:
    """Why a site's form template cannot serve the form with these settings (the arguments of render_form),
    in one sentence; "" when it renders."""
    try:
        _compiled(template).render(form_context(*form, docker=docker))
    except jinja2.TemplateSyntaxError as e:
        return f"line {e.lineno}: {e.message}"
    except jinja2.TemplateError as e:
        return str(e)
    return ""


def render_form(
    profiles: list[dict],
    partitions: list[dict],
    images=None,
    allow_custom=True,
    notice="",
    *,
    docker: dict | None = None,
    template: str = "",
    starts: dict[str, str] | None = None,
) -> str:
    """The spawn form: profile cards (Slurm and Docker), a custom Slurm section bounded by the partition limits.
    `template`: a site's own template text ("" for the packaged one)."""
    context = form_context(profiles, partitions, images, allow_custom, notice, docker=docker, starts=starts)
    if template:
        try:
            return _compiled(template).render(context)
        except jinja2.TemplateError:
            log.exception("The site's spawn form template failed to render; showing clusterhub's own form")
    return _compiled(default_template()).render(context)
