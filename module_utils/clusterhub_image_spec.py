"""The ``notebook_image`` module's arguments: their defaults, and their validation into the spec the other parts use.

``validate_spec(params)`` checks every option (package names, paths inside the image, the user, kernels, files,
environment, the base image or debootstrap suite), reads a repo2docker-style repository folder (apt.txt,
requirements.txt, postBuild) and returns the normalised spec that clusterhub_image_recipe renders,
clusterhub_image_engine builds and clusterhub_image_build sequences; a bad argument raises ``SpecError`` naming it,
before anything is built.  Nothing here imports Ansible, so the unit tests call it directly.
"""

from __future__ import annotations

import json
import os
import re

ENGINES = ("docker", "apptainer")
DEFAULT_VENV = "/opt/notebook"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_REPO_DEST = "/srv/repo"
DEFAULT_USER = {"name": "jovyan", "uid": 1000, "gid": None}
DEFAULT_NOTEBOOK_PACKAGES = ["jupyterlab", "papermill", "ipykernel"]
DEFAULT_ENTRYPOINT = ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"]

# repo2docker configuration files this module cannot honour: a clear error beats a silently different image.
UNSUPPORTED_REPO_FILES = {
    "environment.yml": "conda environments are not supported; list the packages in requirements.txt (pip) "
    "and apt.txt instead",
    "Pipfile": "Pipenv is not supported; export the pins to requirements.txt",
    "Pipfile.lock": "Pipenv is not supported; export the pins to requirements.txt",
    "runtime.txt": "choosing the Python/R version is not supported; the base image's python3 is used",
    "install.R": "R environments are not supported",
    "DESCRIPTION": "R packages are not supported",
    "Project.toml": "Julia environments are not supported",
    "REQUIRE": "Julia environments are not supported",
    "default.nix": "Nix environments are not supported",
    "Dockerfile": "a repository Dockerfile is not used; build it with docker directly",
    "start": "a start wrapper script is not supported; set the entrypoint option",
}

OPTION_DEFAULTS = {
    "engine": "docker",
    "name": None,
    "base": None,
    "debootstrap": None,
    "apt_packages": [],
    "pip_packages": [],
    "pip_requirements": None,
    "notebook_packages": DEFAULT_NOTEBOOK_PACKAGES,
    "venv": DEFAULT_VENV,
    "kernels": [],
    "env": {},
    "files": [],
    "user": DEFAULT_USER,
    "entrypoint": DEFAULT_ENTRYPOINT,
    "repo": None,
    "repo_dest": DEFAULT_REPO_DEST,
    "ca_bundle": None,
    "trust_host_ca": False,
    "host_ca_bundle": DEFAULT_CA_BUNDLE,
    "fakeroot": True,
    "sif_compression": "gzip",
    "build_cache": True,
    "validate": True,
    "kernel_start_check": True,
    "force": False,
    "remove_previous": True,
}

_APT_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+|/[a-z0-9.-]+)?$")
_PIP_CLAUSE = r"(?:===|==|!=|~=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+"
_PIP_RE = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"  # project name
    r"(?:\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\])?"  # extras
    rf"(?:{_PIP_CLAUSE}(?:,{_PIP_CLAUSE})*)?$"  # version specifiers
)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_KERNEL_RE = re.compile(r"^[a-z0-9._-]+$")
# Paths inside the image: no whitespace, quotes or shell/Dockerfile metacharacters, so every recipe line stays literal.
_IMAGE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/@+,:=~-]*$")
# How Apptainer packs a SIF's file system: mksquashfs arguments per choice. gzip is Apptainer's own default and
# every squashfs reader's; zstd builds several times faster (the lab's 550 MB image: 2 s of mksquashfs, not 32)
# and needs squashfuse or a kernel (4.14+) with zstd, as Debian 12+, Ubuntu 20.04+ and EL 8+ have.
SIF_COMPRESSION = {
    "gzip": [],
    "zstd": ["-comp", "zstd", "-Xcompression-level", "3"],
    "xz": ["-comp", "xz"],
    "lz4": ["-comp", "lz4"],
}
_MODE_RE = re.compile(r"^0?[0-7]{3,4}$")
_OWNER_PART = r"(?:[a-z_][a-z0-9_-]{0,31}|[0-9]+)"
_OWNER_RE = re.compile(rf"^{_OWNER_PART}(?::{_OWNER_PART})?$")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9.-]*$")
_MIRROR_RE = re.compile(r"^(?:https?|file)://[A-Za-z0-9._~:/?#@!&'()*+,;=%-]+$")
_DOCKER_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOCKER_REF_RE = re.compile(
    rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_DOCKER_COMPONENT}(?:/{_DOCKER_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?$"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class SpecError(ValueError):
    """A bad argument, found before anything is built; ``argument`` names it (dotted for suboptions)."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


# ---------------------------------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------------------------------


def _check_image_path(argument: str, value) -> str:
    if not isinstance(value, str) or not _IMAGE_PATH_RE.match(value):
        raise SpecError(
            argument,
            f"{value!r} must be an absolute path inside the image made of letters, digits and ._/@+,:=~- "
            "(no spaces, quotes or shell metacharacters)",
        )
    return value


def _check_text(argument: str, value) -> str:
    value = "" if value is None else str(value)
    if _CONTROL_RE.search(value):
        raise SpecError(argument, f"{value!r} must not contain newlines or control characters")
    return value


def _check_choice(argument: str, value, allowed) -> str:
    if value not in allowed:
        raise SpecError(argument, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _check_list(argument: str, value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SpecError(argument, f"must be a list, got {type(value).__name__}")
    return list(value)


def _check_each(argument: str, values, pattern, what: str) -> list[str]:
    """Every item a string matching pattern, else SpecError naming the item and what is allowed."""
    out = []
    for i, value in enumerate(_check_list(argument, values)):
        if not isinstance(value, str) or not pattern.match(value):
            raise SpecError(f"{argument}[{i}]", f"{value!r} is not {what}")
        out.append(value)
    return out


def check_apt_packages(argument: str, packages) -> list[str]:
    return _check_each(
        argument,
        packages,
        _APT_RE,
        "a Debian package name (lowercase letters, digits, +.-, optional :arch, "
        "=version or /release; no spaces or shell metacharacters)",
    )


def check_pip_packages(argument: str, packages) -> list[str]:
    return _check_each(
        argument,
        packages,
        _PIP_RE,
        "a pip requirement of the form name[extras]<op>version (no spaces, URLs, "
        "environment markers or shell metacharacters; use pip_requirements for anything else)",
    )


def _check_file(argument: str, path, kind: str = "file") -> str:
    if not isinstance(path, str) or not path:
        raise SpecError(argument, "must be a path")
    path = os.path.abspath(os.path.expanduser(path))
    if kind == "file" and not os.path.isfile(path):
        raise SpecError(argument, f"{path} is not a readable file")
    if kind == "dir" and not os.path.isdir(path):
        raise SpecError(argument, f"{path} is not a directory")
    if kind == "any" and not os.path.exists(path):
        raise SpecError(argument, f"{path} does not exist")
    return path


def parse_apt_txt(text: str, argument: str = "repo") -> list[str]:
    """repo2docker's apt.txt: one package per line, ``#`` comments, blank lines ignored."""
    pkgs = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        for word in line.split():
            if not _APT_RE.match(word):
                raise SpecError(argument, f"apt.txt line {lineno}: {word!r} is not a Debian package name")
            pkgs.append(word)
    return pkgs


def read_repo(path: str, argument: str = "repo") -> dict:
    """Read a repo2docker-style folder: apt.txt, requirements.txt, postBuild (in binder/ or .binder/ if present)."""
    path = _check_file(argument, path, "dir")
    config_dir = path
    for sub in (".binder", "binder"):
        if os.path.isdir(os.path.join(path, sub)):
            config_dir = os.path.join(path, sub)
            break
    for name, why in UNSUPPORTED_REPO_FILES.items():
        if os.path.exists(os.path.join(config_dir, name)):
            raise SpecError(argument, f"{os.path.join(config_dir, name)}: {name} is not supported: {why}")
    rel = os.path.relpath(config_dir, path)
    rel = "" if rel == "." else rel + "/"
    info = {"path": path, "apt_packages": [], "requirements": None, "postbuild": None}
    apt_txt = os.path.join(config_dir, "apt.txt")
    if os.path.isfile(apt_txt):
        with open(apt_txt, encoding="utf-8") as fh:
            info["apt_packages"] = parse_apt_txt(fh.read(), argument)
    if os.path.isfile(os.path.join(config_dir, "requirements.txt")):
        info["requirements"] = rel + "requirements.txt"
    if os.path.isfile(os.path.join(config_dir, "postBuild")):
        info["postbuild"] = rel + "postBuild"
    return info


def _check_user(user) -> dict:
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise SpecError("user", "must be a dictionary with name, uid and gid")
    merged = dict(DEFAULT_USER)
    merged.update({k: v for k, v in user.items() if v is not None})
    name = merged["name"]
    if not isinstance(name, str) or not _USER_RE.match(name):
        raise SpecError("user.name", f"{name!r} is not a valid user name (lowercase letter or _ first, then a-z0-9_-)")
    out = {"name": name}
    for key in ("uid", "gid"):
        value = merged[key] if merged[key] is not None else out["uid"]
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise SpecError(f"user.{key}", f"{value!r} is not an integer") from None
        if value == 0:
            raise SpecError(f"user.{key}", "must not be 0: the notebook user must not be root")
        if not 0 < value < 2**31 - 1:
            raise SpecError(f"user.{key}", f"{value} is out of range")
        out[key] = value
    return out


def _check_kernels(kernels, venv: str) -> list[dict]:
    out, names = [], set()
    for i, item in enumerate(_check_list("kernels", kernels)):
        arg = f"kernels[{i}]"
        kernel = {"name": item} if isinstance(item, str) else item
        if not isinstance(kernel, dict):
            raise SpecError(arg, "must be a dictionary with at least a name")
        name = kernel.get("name")
        if not isinstance(name, str) or not _KERNEL_RE.match(name):
            raise SpecError(f"{arg}.name", f"{name!r}: kernel names are lowercase letters, digits, '.', '_' or '-'")
        if name in names:
            raise SpecError(f"{arg}.name", f"kernel {name!r} is declared twice")
        names.add(name)
        kvenv = kernel.get("venv")
        if kvenv is not None:
            kvenv = _check_image_path(f"{arg}.venv", kvenv)
            if kvenv.rstrip("/") == venv.rstrip("/"):
                kvenv = None
        out.append(
            {
                "name": name,
                "display_name": _check_text(f"{arg}.display_name", kernel.get("display_name") or name),
                "venv": kvenv,
                "pip_packages": check_pip_packages(f"{arg}.pip_packages", kernel.get("pip_packages")),
            }
        )
    return out


def _check_files(files) -> list[dict]:
    out = []
    for i, item in enumerate(_check_list("files", files)):
        arg = f"files[{i}]"
        if not isinstance(item, dict):
            raise SpecError(arg, "must be a dictionary with src and dest")
        src = _check_file(f"{arg}.src", item.get("src"), "any")
        dest = _check_image_path(f"{arg}.dest", item.get("dest"))
        mode = item.get("mode")
        if mode is not None:
            mode = str(mode)
            if not _MODE_RE.match(mode):
                raise SpecError(f"{arg}.mode", f"{mode!r} is not an octal mode such as '0644'")
        owner = item.get("owner")
        if owner is not None:
            owner = str(owner)
            if not _OWNER_RE.match(owner):
                raise SpecError(f"{arg}.owner", f"{owner!r} is not USER, USER:GROUP or UID:GID")
        out.append({"src": src, "dest": dest, "mode": mode, "owner": owner, "is_dir": os.path.isdir(src)})
    return out


def _check_env(env) -> dict:
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise SpecError("env", "must be a dictionary of NAME: value")
    out = {}
    for key in sorted(env, key=str):
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise SpecError("env", f"{key!r} is not a valid environment variable name (letters, digits, _)")
        value = env[key]
        if isinstance(value, bool):
            value = "true" if value else "false"
        out[key] = _check_text(f"env.{key}", value)
    return out


def _check_base(engine: str, base, debootstrap) -> tuple[str | None, dict | None]:
    if base is not None and debootstrap:
        raise SpecError("base", "base and debootstrap are mutually exclusive")
    if engine == "docker":
        if debootstrap:
            raise SpecError("debootstrap", "the docker engine builds FROM a local image: set base instead")
        if not base:
            raise SpecError("base", "the docker engine needs a base image")
        if not _DOCKER_REF_RE.match(base):
            raise SpecError("base", f"{base!r} is not a Docker image reference such as debian:bookworm")
        return base, None
    if debootstrap:
        if not isinstance(debootstrap, dict):
            raise SpecError("debootstrap", "must be a dictionary with suite, mirror and include")
        suite = debootstrap.get("suite")
        if not isinstance(suite, str) or not _SUITE_RE.match(suite):
            raise SpecError("debootstrap.suite", f"{suite!r} is not a Debian/Ubuntu suite name such as bookworm")
        mirror = debootstrap.get("mirror") or DEFAULT_MIRROR
        if not _MIRROR_RE.match(mirror):
            raise SpecError("debootstrap.mirror", f"{mirror!r} is not an http(s):// or file:// URL")
        include = check_apt_packages("debootstrap.include", debootstrap.get("include"))
        return None, {"suite": suite, "mirror": mirror, "include": include}
    if not base:
        raise SpecError(
            "base",
            "the apptainer engine needs base (docker-daemon:IMAGE, localimage:PATH.sif, "
            "docker://REF or a .sif path) or debootstrap",
        )
    return parse_apptainer_base(base), None


def parse_apptainer_base(base: str) -> str:
    """Normalise an Apptainer base to ``docker-daemon:REF``, ``docker://REF`` or ``localimage:/ABS/PATH.sif``."""
    if base.startswith("docker-daemon:"):
        ref = base[len("docker-daemon:") :]
        if not _DOCKER_REF_RE.match(ref):
            raise SpecError("base", f"{ref!r} is not a Docker image reference")
        return base
    if base.startswith("docker://"):
        ref = base[len("docker://") :]
        if not _DOCKER_REF_RE.match(ref):
            raise SpecError("base", f"{ref!r} is not a Docker image reference")
        return base
    path = base[len("localimage:") :] if base.startswith("localimage:") else base
    if path.endswith(".sif"):
        path = _check_file("base", path, "file")
        if not _IMAGE_PATH_RE.match(path):
            raise SpecError("base", f"{path!r}: a base SIF path must not contain spaces or metacharacters")
        return "localimage:" + path
    raise SpecError(
        "base",
        f"{base!r}: for apptainer use docker-daemon:IMAGE, docker://REF, localimage:PATH or a PATH ending in .sif",
    )


def normalize_params(params: dict) -> dict:
    """Fill in the module's defaults for any option that is missing or None."""
    out = {}
    for key, default in OPTION_DEFAULTS.items():
        value = params.get(key)
        if value is None:
            value = json.loads(json.dumps(default))  # a fresh copy
        out[key] = value
    unknown = set(params) - set(OPTION_DEFAULTS)
    if unknown:
        raise SpecError(sorted(unknown)[0], "unknown option")
    return out


def validate_spec(params: dict) -> dict:
    """Check every argument and return the normalised spec the renderers use; raises SpecError naming the argument.

    Host paths (files.src, pip_requirements, repo, host_ca_bundle) must exist: nothing is built otherwise.
    """
    p = normalize_params(params)
    engine = p["engine"]
    if engine not in ENGINES:
        raise SpecError("engine", f"{engine!r} is not one of {', '.join(ENGINES)}")
    name = p["name"]
    if not isinstance(name, str) or not name:
        raise SpecError("name", "is required")
    if engine == "docker":
        if not _DOCKER_REF_RE.match(name) or "@" in name:
            raise SpecError("name", f"{name!r} is not a Docker image name such as site/notebook:2024")
        if not _has_tag(name):
            name += ":latest"
    else:
        if not name.endswith(".sif"):
            raise SpecError("name", f"{name!r}: the apptainer engine writes a SIF file; the name must end in .sif")
        name = os.path.abspath(os.path.expanduser(name))
        if not os.path.isdir(os.path.dirname(name)):
            raise SpecError("name", f"the directory {os.path.dirname(name)} does not exist")
    base, debootstrap = _check_base(engine, p["base"], p["debootstrap"])
    venv = _check_image_path("venv", p["venv"]).rstrip("/") or "/"
    if venv == "/":
        raise SpecError("venv", "must not be /")
    user = _check_user(p["user"])
    entrypoint = _check_list("entrypoint", p["entrypoint"])
    if not entrypoint:
        raise SpecError("entrypoint", "must not be empty")
    entrypoint = [_check_text(f"entrypoint[{i}]", a) for i, a in enumerate(entrypoint)]
    ca_bundle = p["ca_bundle"]
    if ca_bundle is None and p["trust_host_ca"]:
        ca_bundle = DEFAULT_CA_BUNDLE
    if ca_bundle is not None:
        ca_bundle = _check_image_path("ca_bundle", ca_bundle)
    host_ca = _check_file("host_ca_bundle", p["host_ca_bundle"]) if p["trust_host_ca"] else None
    repo = read_repo(p["repo"]) if p["repo"] else None
    spec = {
        "engine": engine,
        "name": name,
        "base": base,
        "debootstrap": debootstrap,
        "apt_packages": check_apt_packages("apt_packages", p["apt_packages"]),
        "pip_packages": check_pip_packages("pip_packages", p["pip_packages"]),
        "notebook_packages": check_pip_packages("notebook_packages", p["notebook_packages"]),
        "pip_requirements": _check_file("pip_requirements", p["pip_requirements"]) if p["pip_requirements"] else None,
        "venv": venv,
        "kernels": _check_kernels(p["kernels"], venv),
        "env": _check_env(p["env"]),
        "files": _check_files(p["files"]),
        "user": user,
        "entrypoint": entrypoint,
        "repo": repo,
        "repo_dest": _check_image_path("repo_dest", p["repo_dest"]),
        "ca_bundle": ca_bundle,
        "trust_host_ca": bool(p["trust_host_ca"]),
        "host_ca_bundle": host_ca,
        "fakeroot": bool(p["fakeroot"]),
        "sif_compression": _check_choice("sif_compression", p["sif_compression"], SIF_COMPRESSION),
        "build_cache": bool(p["build_cache"]),
        "validate": bool(p["validate"]),
        "kernel_start_check": bool(p["kernel_start_check"]),
        "force": bool(p["force"]),
        "remove_previous": bool(p["remove_previous"]),
    }
    for key in ("PATH", "HOME"):
        if key in spec["env"]:
            raise SpecError("env", f"{key} is managed by the module (venv and user.name); do not set it")
    return spec


def _has_tag(ref: str) -> bool:
    last = ref.rsplit("/", 1)[-1]
    return ":" in last


def split_tag(ref: str) -> tuple[str, str]:
    """``host:5000/site/nb:1`` -> (``host:5000/site/nb``, ``1``); an untagged reference gets ``latest``."""
    if _has_tag(ref):
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"
