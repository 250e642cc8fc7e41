"""Plain-Python core of the ``notebook_image`` module: argument validation, recipe rendering, content hashing,
build-log tailing and the build/validate/swap sequence for the Docker and Apptainer engines.

Nothing here imports Ansible: the module (library/notebook_image.py) hands in a ``run(argv, cwd=None)`` callable
that returns ``(rc, stdout, stderr)``, so the unit tests drive every function with a fake runner.

The content hash covers the rendered recipe (Dockerfile or Apptainer definition, without the hash label), the bytes
of every staged input (copied files, pip requirement files, the repository folder, the host CA bundle) and the base
image's identity (the local Docker image id; size and mtime of a base SIF).  It is recorded on the image (Docker
label ``org.clusterhub.spec-hash``, SIF ``%labels``); a run whose hash matches the image's does not build.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import stat
import tempfile
import time

HASH_LABEL = "org.clusterhub.spec-hash"
RECIPE_LABEL = "org.clusterhub.recipe"
HASH_SCHEME = b"clusterhub-notebook-image/1\n"
LOG_TAIL_LINES = 40

ENGINES = ("docker", "apptainer")
DEFAULT_VENV = "/opt/notebook"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_REPO_DEST = "/srv/repo"
DEFAULT_USER = {"name": "jovyan", "uid": 1000, "gid": None}
DEFAULT_NOTEBOOK_PACKAGES = ["jupyterlab", "papermill", "ipykernel"]
DEFAULT_ENTRYPOINT = ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"]
# python3-venv: pip installs go into a virtual environment (PEP 668 marks Debian's python externally managed).
BASE_APT_PACKAGES = ["python3", "python3-venv"]
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA_IN_IMAGE = "/usr/local/share/ca-certificates/clusterhub-build-host.crt"
DOCKER_STAGING = "/tmp/clusterhub-build"
APPTAINER_STAGING = "/opt/clusterhub-build"

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


class BuildError(RuntimeError):
    """A failed build or validation (or engine call); the previous image is untouched when this is raised."""

    def __init__(self, msg: str, rc: int | None = None, stdout: str = "", stderr: str = ""):
        super().__init__(msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


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


def _unique(items):
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


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


# ---------------------------------------------------------------------------------------------------------------
# Inputs and hashing
# ---------------------------------------------------------------------------------------------------------------


def _safe_name(path: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(path.rstrip("/"))) or "file"
    return name.lstrip(".") or "file"


def plan_inputs(spec: dict) -> list[tuple[str, str]]:
    """The build context: (relative path in the context, host path), in a fixed order the recipe refers to."""
    inputs = []
    if spec["trust_host_ca"]:
        inputs.append(("ca/host-ca.crt", spec["host_ca_bundle"]))
    if spec["pip_requirements"]:
        inputs.append(("requirements/pip-requirements.txt", spec["pip_requirements"]))
    if spec["repo"]:
        inputs.append(("repo", spec["repo"]["path"]))
    for i, item in enumerate(spec["files"]):
        inputs.append((file_context_name(i, item), item["src"]))
    return inputs


def file_context_name(index: int, item: dict) -> str:
    return f"files/{index}-{_safe_name(item['src'])}"


def _skip(name: str) -> bool:
    return name == ".git"


def _hash_tree(h, root: str) -> None:
    """Feed a file or directory tree (names, types, modes' exec bit, bytes, link targets) into the hash."""

    def feed(tag: bytes, data: bytes) -> None:
        h.update(tag + len(data).to_bytes(8, "big") + data)

    def feed_file(path: str) -> None:
        st = os.stat(path)
        feed(b"x", b"1" if st.st_mode & stat.S_IXUSR else b"0")
        h.update(b"f" + st.st_size.to_bytes(8, "big"))
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)

    if not os.path.isdir(root) or os.path.islink(root):
        feed_file(root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skip(d))
        entries = sorted([(d, True) for d in dirnames] + [(f, False) for f in filenames if not _skip(f)])
        for entry, is_dir in entries:
            full = os.path.join(dirpath, entry)
            feed(b"n", os.path.relpath(full, root).encode("utf-8", "surrogateescape"))
            if os.path.islink(full):
                feed(b"l", os.readlink(full).encode("utf-8", "surrogateescape"))
            elif is_dir:
                feed(b"d", b"")
            else:
                feed_file(full)
        # symlinked directories were recorded as links above; do not descend into them
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]


def spec_hash(engine: str, recipe: str, inputs: list[tuple[str, str]], base_fingerprint: str | None = None) -> str:
    """sha256 over the recipe, every input's bytes and the base image's identity."""
    h = hashlib.sha256(HASH_SCHEME)
    for part in (engine, recipe, base_fingerprint or ""):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "big") + data)
    for rel, src in inputs:
        data = rel.encode("utf-8")
        h.update(b"input" + len(data).to_bytes(8, "big") + data)
        _hash_tree(h, src)
    return h.hexdigest()


def stage_inputs(inputs: list[tuple[str, str]], context: str) -> None:
    """Copy the inputs into the build context directory (``.git`` folders left out, symlinks kept)."""
    for rel, src in inputs:
        dest = os.path.join(context, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        else:
            shutil.copy2(src, dest)


def tail_lines(text: str | bytes | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a build log (carriage-return progress redraws collapsed)."""
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = [line.rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")]
    return "\n".join(out[-lines:])


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def _q(value: str) -> str:
    return shlex.quote(str(value))


def _words(values) -> str:
    return " ".join(_q(v) for v in values)


def apt_package_list(spec: dict) -> list[str]:
    repo_apt = spec["repo"]["apt_packages"] if spec["repo"] else []
    return _unique(BASE_APT_PACKAGES + spec["apt_packages"] + repo_apt)


def _apt_commands(spec: dict) -> list[str]:
    return [
        "apt-get update",
        "apt-get install -y --no-install-recommends " + _words(apt_package_list(spec)),
        "apt-get clean",
        "rm -rf /var/lib/apt/lists/*",
    ]


def _user_commands(spec: dict) -> list[str]:
    u = spec["user"]
    name, uid, gid = _q(u["name"]), u["uid"], u["gid"]
    return [
        f"if id -u {name} >/dev/null 2>&1; then usermod -u {uid} {name}; "
        f"else {{ getent group {gid} >/dev/null || groupadd -g {gid} {name}; }} "
        f"&& useradd -m -u {uid} -g {gid} -s /bin/bash {name}; fi"
    ]


_PIP = "pip install --no-cache-dir --disable-pip-version-check --progress-bar off"


def _venv_commands(spec: dict, requirements_path: str | None) -> list[str]:
    venv = spec["venv"]
    pkgs = _unique(spec["notebook_packages"] + spec["pip_packages"])
    install = f"{_q(venv)}/bin/{_PIP}"
    if pkgs:
        install += " " + _words(pkgs)
    if requirements_path:
        install += " -r " + _q(requirements_path)
    cmds = [f"python3 -m venv {_q(venv)}"]
    if pkgs or requirements_path:
        cmds.append(install)
    return cmds


def _kernel_commands(spec: dict, kernel: dict) -> list[str]:
    main = spec["venv"]
    kvenv = kernel["venv"]
    cmds = []
    if kvenv:
        cmds.append(f"python3 -m venv {_q(kvenv)}")
        cmds.append(f"{_q(kvenv)}/bin/{_PIP} " + _words(_unique(["ipykernel", *kernel["pip_packages"]])))
    elif kernel["pip_packages"]:
        cmds.append(f"{_q(main)}/bin/{_PIP} " + _words(kernel["pip_packages"]))
    python = f"{_q(kvenv or main)}/bin/python"
    cmds.append(
        f"{python} -m ipykernel install --prefix {_q(main)} --name {_q(kernel['name'])} "
        f"--display-name {_q(kernel['display_name'])}"
    )
    return cmds


def _repo_commands(spec: dict) -> list[str]:
    repo, dest, u = spec["repo"], spec["repo_dest"], spec["user"]
    cmds = [f"cd {_q(dest)}"]
    if repo["requirements"]:
        cmds.append(f"{_q(spec['venv'])}/bin/{_PIP} -r {_q(repo['requirements'])}")
    if repo["postbuild"]:
        cmds.append(f"chmod +x {_q(repo['postbuild'])}")
        cmds.append(f"./{repo['postbuild']}")
    cmds.append(f"chown -R {u['uid']}:{u['gid']} {_q(dest)}")
    return cmds


def _file_fixups(item: dict) -> list[str]:
    cmds = []
    if item["mode"]:
        cmds.append(f"chmod {item['mode']} {_q(item['dest'])}")
    if item["owner"]:
        recursive = "-R " if item["is_dir"] else ""
        cmds.append(f"chown {recursive}{item['owner']} {_q(item['dest'])}")
    return cmds


def _docker_run(cmds: list[str]) -> str:
    return "RUN " + " \\\n && ".join(cmds)


def _docker_env_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _json_list(values) -> str:
    return json.dumps(list(values))


def render_dockerfile(spec: dict) -> str:
    """The Dockerfile for a spec (the hash label is added on the ``docker build`` command line, not here)."""
    lines = [
        "# Rendered by clusterhub's notebook_image module: edit the task, not this file.",
        f"FROM {spec['base']}",
        "USER root",
        "ARG DEBIAN_FRONTEND=noninteractive",
    ]
    ca = spec["ca_bundle"]
    if spec["trust_host_ca"]:
        lines.append(f"COPY {_json_list(['ca/host-ca.crt', HOST_CA_IN_IMAGE])}")
        lines.append(f"COPY {_json_list(['ca/host-ca.crt', ca])}")
    if ca:
        lines.append(f"ENV PIP_CERT={ca} REQUESTS_CA_BUNDLE={ca}")
    lines.append(_docker_run(_apt_commands(spec)))
    lines.append(_docker_run(_user_commands(spec)))
    req = None
    if spec["pip_requirements"]:
        req = f"{DOCKER_STAGING}/pip-requirements.txt"
        lines.append(f"COPY {_json_list(['requirements/pip-requirements.txt', req])}")
    venv_cmds = _venv_commands(spec, req)
    if req:
        venv_cmds.append(f"rm -rf {DOCKER_STAGING}")
    lines.append(_docker_run(venv_cmds))
    lines.append(f"ENV PATH={spec['venv']}/bin:${{PATH:-{STANDARD_PATH}}}")
    for kernel in spec["kernels"]:
        lines.append(_docker_run(_kernel_commands(spec, kernel)))
    if spec["repo"]:
        lines.append(f"COPY {_json_list(['repo', spec['repo_dest']])}")
        lines.append(_docker_run(_repo_commands(spec)))
    for i, item in enumerate(spec["files"]):
        lines.append(f"COPY {_json_list([file_context_name(i, item), item['dest']])}")
        fixups = _file_fixups(item)
        if fixups:
            lines.append(_docker_run(fixups))
    for key, value in spec["env"].items():
        lines.append(f"ENV {key}={_docker_env_value(value)}")
    u = spec["user"]
    lines += [
        f"WORKDIR /home/{u['name']}",
        f"USER {u['uid']}:{u['gid']}",
        "ENTRYPOINT []",
        f"CMD {_json_list(spec['entrypoint'])}",
    ]
    return "\n".join(lines) + "\n"


def apptainer_header(spec: dict) -> list[str]:
    if spec["debootstrap"]:
        d = spec["debootstrap"]
        head = ["Bootstrap: debootstrap", f"OSVersion: {d['suite']}", f"MirrorURL: {d['mirror']}"]
        if d["include"]:
            head.append("Include: " + " ".join(d["include"]))
        return head
    base = spec["base"]
    if base.startswith("docker-daemon:"):
        return ["Bootstrap: docker-daemon", f"From: {base[len('docker-daemon:') :]}"]
    if base.startswith("docker://"):
        return ["Bootstrap: docker", f"From: {base[len('docker://') :]}"]
    return ["Bootstrap: localimage", f"From: {base[len('localimage:') :]}"]


def _indent(cmds: list[str]) -> list[str]:
    return ["    " + c for c in cmds]


def render_apptainer_def(spec: dict) -> str:
    """The definition file for a spec, without %labels (``add_hash_label`` appends the hash).

    %files sources are relative to the build context (``apptainer build`` runs there), so the text does not
    depend on the temporary directory and the hash is stable.
    """
    lines = ["# Rendered by clusterhub's notebook_image module: edit the task, not this file.", *apptainer_header(spec)]
    staged = [(rel, f"{APPTAINER_STAGING}/{rel}") for rel, _src in plan_inputs(spec)]
    if staged:
        lines += ["", "%files", *_indent([f"{rel} {dest}" for rel, dest in staged])]
    venv, ca = spec["venv"], spec["ca_bundle"]
    env = [f'export PATH="{venv}/bin:$PATH"']
    if ca:
        env.append(f"export PIP_CERT={ca} REQUESTS_CA_BUNDLE={ca}")
    env += [f"export {k}={_q(v)}" for k, v in spec["env"].items()]
    lines += ["", "%environment", *_indent(env)]

    post = ["set -eu", "export DEBIAN_FRONTEND=noninteractive"]
    if spec["trust_host_ca"]:
        src = f"{APPTAINER_STAGING}/ca/host-ca.crt"
        post += [f"install -D -m 0644 {src} {HOST_CA_IN_IMAGE}", f"install -D -m 0644 {src} {ca}"]
    if ca:
        post.append(f"export PIP_CERT={ca} REQUESTS_CA_BUNDLE={ca}")
    post += _apt_commands(spec)
    post += _user_commands(spec)
    req = f"{APPTAINER_STAGING}/requirements/pip-requirements.txt" if spec["pip_requirements"] else None
    post += _venv_commands(spec, req)
    post.append(f'export PATH="{venv}/bin:$PATH"')
    for kernel in spec["kernels"]:
        post += _kernel_commands(spec, kernel)
    if spec["repo"]:
        dest = _q(spec["repo_dest"])
        post += [f"mkdir -p {dest}", f"cp -a {APPTAINER_STAGING}/repo/. {dest}/"]
        post += _repo_commands(spec)
        post.append("cd /")
    for i, item in enumerate(spec["files"]):
        src, dest = f"{APPTAINER_STAGING}/{file_context_name(i, item)}", _q(item["dest"])
        if item["is_dir"]:
            post += [f"mkdir -p {dest}", f"cp -a {src}/. {dest}/"]
        else:
            post += [f'mkdir -p "$(dirname {dest})"', f"cp -a {src} {dest}"]
        post += _file_fixups(item)
    post.append(f"rm -rf {APPTAINER_STAGING}")
    lines += ["", "%post", *_indent(post)]
    lines += ["", "%runscript", "    exec " + _words(spec["entrypoint"]) + ' "$@"']
    return "\n".join(lines) + "\n"


def add_hash_label(definition: str, digest: str) -> str:
    return definition + f"\n%labels\n    {HASH_LABEL} {digest}\n"


def render_recipe(spec: dict) -> str:
    return render_dockerfile(spec) if spec["engine"] == "docker" else render_apptainer_def(spec)


# ---------------------------------------------------------------------------------------------------------------
# Validation of a built image
# ---------------------------------------------------------------------------------------------------------------

KERNEL_START_SCRIPT = """\
import sys
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=120)
try:
    reply = kc.execute_interactive("print(6 * 7)", timeout=120, output_hook=lambda msg: None)
    status = reply["content"]["status"]
    print("kernel %s: execute %s" % (sys.argv[1], status))
    sys.exit(0 if status == "ok" else 1)
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
"""


def validation_checks(spec: dict) -> list[dict]:
    """What a new image must pass before it replaces the current one (argv runs inside the image)."""
    u = spec["user"]
    checks = [
        {"check": "user", "argv": ["id", "-u", u["name"]], "expect_stdout": str(u["uid"])},
        {"check": "jupyterlab", "argv": ["jupyter", "lab", "--version"]},
        {"check": "papermill", "argv": ["python3", "-m", "papermill", "--version"]},
    ]
    if spec["kernels"]:
        checks.append(
            {
                "check": "kernelspecs",
                "argv": ["jupyter", "kernelspec", "list", "--json"],
                "expect_kernels": [k["name"] for k in spec["kernels"]],
            }
        )
        if spec["kernel_start_check"]:
            for k in spec["kernels"]:
                checks.append(
                    {"check": f"kernel {k['name']} starts", "argv": ["python3", "-c", KERNEL_START_SCRIPT, k["name"]]}
                )
    return checks


def evaluate_check(check: dict, rc: int, stdout: str, stderr: str) -> tuple[bool, str]:
    """(passed, one-line detail) for one validation check's result."""
    out = (stdout or "").strip()
    if rc != 0:
        return False, f"exit status {rc}: {tail_lines((stdout or '') + (stderr or ''), 5)}"
    if "expect_stdout" in check and out != check["expect_stdout"]:
        return False, f"expected {check['expect_stdout']!r}, got {out!r}"
    if "expect_kernels" in check:
        try:
            listed = set(json.loads(out)["kernelspecs"])
        except (ValueError, KeyError, TypeError):
            return False, f"could not read `jupyter kernelspec list --json`: {out[:200]!r}"
        missing = [k for k in check["expect_kernels"] if k not in listed]
        if missing:
            return False, f"kernels not registered: {', '.join(missing)} (listed: {', '.join(sorted(listed))})"
        return True, "listed: " + ", ".join(sorted(listed))
    return True, out.splitlines()[-1] if out else "ok"


# ---------------------------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------------------------


def encode_recipe_label(recipe: str) -> str:
    """The recipe as a label value: base64, because the legacy Docker builder expands ``$VAR`` in label values."""
    return "base64:" + base64.b64encode(recipe.encode("utf-8")).decode("ascii")


def decode_recipe_label(value: str | None) -> str:
    if not value:
        return ""
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value[len("base64:") :]).decode("utf-8")
        except ValueError:
            return ""
    return value


class _Engine:
    """An engine CLI (binary path) and the command runner it uses (run(argv) -> rc, out, err)."""

    def __init__(self, binary: str, run):
        self.bin = binary
        self.run = run


class DockerEngine(_Engine):
    """Builds with a temporary tag, validates, then ``docker tag`` to the final name and drops the temporary tag."""

    name = "docker"

    def inspect(self, ref: str) -> dict | None:
        rc, out, err = self.run([self.bin, "image", "inspect", ref])
        if rc != 0:
            if "no such image" in (err + out).lower():
                return None
            raise BuildError(f"docker image inspect {ref} failed: {tail_lines(err, 5)}", rc, out, err)
        data = json.loads(out)[0]
        labels = (data.get("Config") or {}).get("Labels") or {}
        return {
            "id": data.get("Id"),
            "size": data.get("Size"),
            "hash": labels.get(HASH_LABEL),
            "recipe": decode_recipe_label(labels.get(RECIPE_LABEL)),
            "path": None,
        }

    def base_fingerprint(self, spec: dict) -> str | None:
        base = self.inspect(spec["base"])
        return base["id"] if base else spec["base"]

    def temp_ref(self, spec: dict, digest: str) -> str:
        repo, _tag = split_tag(spec["name"])
        return f"{repo}:clusterhub-tmp-{digest[:12]}-{secrets.token_hex(4)}"

    def build_argv(self, spec: dict, recipe: str, digest: str, context: str, temp: str) -> list[str]:
        argv = [self.bin, "build", "--force-rm", "-f", os.path.join(context, "Dockerfile")]
        if not spec["build_cache"]:
            argv.append("--no-cache")
        argv += [
            "--label",
            f"{HASH_LABEL}={digest}",
            "--label",
            f"{RECIPE_LABEL}={encode_recipe_label(recipe)}",
            "-t",
            temp,
            context,
        ]
        return argv

    def build(self, spec: dict, recipe: str, digest: str, context: str, temp: str) -> tuple[int, str, str]:
        with open(os.path.join(context, "Dockerfile"), "w", encoding="utf-8") as fh:
            fh.write(recipe)
        return self.run(self.build_argv(spec, recipe, digest, context, temp), cwd=context)

    def exec_argv(self, image: str, argv: list[str]) -> list[str]:
        return [self.bin, "run", "--rm", "--network", "none", "--entrypoint", argv[0], image, *argv[1:]]

    def promote(self, temp: str, final: str) -> None:
        rc, out, err = self.run([self.bin, "tag", temp, final])
        if rc != 0:
            self.discard(temp)
            raise BuildError(f"docker tag {temp} {final} failed: {tail_lines(err, 5)}", rc, out, err)
        self.run([self.bin, "image", "rm", temp])  # only the temporary tag: the final name still holds the image

    def discard(self, temp: str) -> None:
        self.run([self.bin, "image", "rm", temp])

    def remove_previous(self, previous: dict, current: dict) -> None:
        # Without --force: an image still used by a container, or tagged elsewhere, stays.
        if previous.get("id") and previous["id"] != current.get("id"):
            self.run([self.bin, "image", "rm", previous["id"]])


def parse_apptainer_labels(text: str) -> dict:
    """Labels from ``apptainer inspect --labels --json`` (or the plain ``key: value`` listing)."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        labels = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                labels[key.strip()] = value.strip()
        return labels
    attrs = (data.get("data") or {}).get("attributes") or {}
    labels = attrs.get("labels", data.get("labels", {}))
    return labels if isinstance(labels, dict) else {}


class ApptainerEngine(_Engine):
    """Builds to a temporary SIF in the destination directory, validates, then renames it over the final SIF."""

    name = "apptainer"

    def inspect(self, path: str) -> dict | None:
        if not os.path.exists(path):
            return None
        rc, out, err = self.run([self.bin, "inspect", "--labels", "--json", path])
        if rc != 0:
            raise BuildError(f"apptainer inspect {path} failed: {tail_lines(err, 5)}", rc, out, err)
        labels = parse_apptainer_labels(out)
        rc, deffile, _err = self.run([self.bin, "inspect", "--deffile", path])
        return {
            "id": None,
            "size": os.path.getsize(path),
            "hash": labels.get(HASH_LABEL),
            "recipe": deffile if rc == 0 else "",
            "path": path,
        }

    def base_fingerprint(self, spec: dict) -> str | None:
        base = spec["base"] or ""
        if base.startswith("localimage:"):
            st = os.stat(base[len("localimage:") :])
            return f"{base} {st.st_size} {st.st_mtime_ns}"
        return base or None

    def temp_ref(self, spec: dict, digest: str) -> str:
        directory, fname = os.path.split(spec["name"])
        return os.path.join(directory, f".{fname}.{digest[:12]}-{secrets.token_hex(4)}.tmp.sif")

    def build_argv(self, spec: dict, definition_path: str, temp: str) -> list[str]:
        argv = [self.bin, "build"]
        if spec["fakeroot"]:
            argv.append("--fakeroot")
        if not spec["build_cache"]:
            argv.append("--disable-cache")
        return [*argv, temp, definition_path]

    def build(self, spec: dict, recipe: str, digest: str, context: str, temp: str) -> tuple[int, str, str]:
        definition = os.path.join(context, "notebook.def")
        with open(definition, "w", encoding="utf-8") as fh:
            fh.write(recipe)
        argv = self.build_argv(spec, definition, temp)
        if os.environ.get("APPTAINER_TMPDIR"):
            return self.run(argv, cwd=context)
        # The unpacked root file system needs room and exec rights, which /tmp often lacks (tmpfs, noexec):
        # scratch space next to the SIF instead, on the disk that will hold it, removed afterwards.
        scratch = tempfile.mkdtemp(prefix=".build-", dir=os.path.dirname(spec["name"]))
        try:
            return self.run(argv, cwd=context, env={"APPTAINER_TMPDIR": scratch})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def exec_argv(self, image: str, argv: list[str]) -> list[str]:
        return [self.bin, "exec", "--containall", "--cleanenv", image, *argv]

    def promote(self, temp: str, final: str) -> None:
        os.replace(temp, final)  # same directory: an atomic rename

    def discard(self, temp: str) -> None:
        try:
            if os.path.isdir(temp):
                shutil.rmtree(temp)
            else:
                os.unlink(temp)
        except FileNotFoundError:
            pass

    def remove_previous(self, previous: dict, current: dict) -> None:
        """The rename replaced the previous SIF; nothing is left to remove."""


def make_engine(engine: str, binary: str, run):
    return DockerEngine(binary, run) if engine == "docker" else ApptainerEngine(binary, run)


# ---------------------------------------------------------------------------------------------------------------
# The whole sequence
# ---------------------------------------------------------------------------------------------------------------


def final_recipe(spec: dict, recipe: str, digest: str) -> str:
    """The recipe as it is written for the build (Apptainer gets the hash in %labels)."""
    return add_hash_label(recipe, digest) if spec["engine"] == "apptainer" else recipe


def plan(spec: dict, engine) -> dict:
    """Everything a run decides without building: recipe, hash, current image, whether to build."""
    recipe = render_recipe(spec)
    inputs = plan_inputs(spec)
    digest = spec_hash(spec["engine"], recipe, inputs, engine.base_fingerprint(spec))
    current = engine.inspect(spec["name"])
    return {
        "recipe": recipe,
        "final_recipe": final_recipe(spec, recipe, digest),
        "inputs": inputs,
        "hash": digest,
        "current": current,
        "build": bool(spec["force"] or current is None or current.get("hash") != digest),
    }


def run_validation(spec: dict, engine, image: str) -> list[dict]:
    """Run every check inside ``image``; raise BuildError at the first failure."""
    results = []
    for check in validation_checks(spec):
        rc, out, err = engine.run(engine.exec_argv(image, check["argv"]))
        ok, detail = evaluate_check(check, rc, out, err)
        results.append({"check": check["check"], "command": " ".join(check["argv"][:3]), "ok": ok, "detail": detail})
        if not ok:
            raise BuildError(
                f"validation of the new image failed: {check['check']} ({' '.join(check['argv'][:4])}): {detail}; "
                "the previous image is unchanged",
                rc if rc != 0 else 1,
                tail_lines(out),
                tail_lines(err),
            )
    return results


def ensure_image(spec: dict, engine, check_mode: bool = False, clock=time.monotonic, tmpdir: str | None = None) -> dict:
    """Build the image when its hash differs from the current one; return the module's result (without diff)."""
    p = plan(spec, engine)
    current = p["current"]
    result = {
        "changed": p["build"],
        "built": False,
        "engine": spec["engine"],
        "image": spec["name"],
        "image_id": current["id"] if current else None,
        "sif_path": spec["name"] if spec["engine"] == "apptainer" and current else None,
        "size": current["size"] if current else None,
        "hash": p["hash"],
        "previous_hash": current["hash"] if current else None,
        "build_seconds": 0.0,
        "recipe": p["final_recipe"],
        "previous_recipe": current["recipe"] if current else "",
        "validation": [],
        "stdout": "",
    }
    if not p["build"] or check_mode:
        return result

    temp = engine.temp_ref(spec, p["hash"])
    started = clock()
    with tempfile.TemporaryDirectory(prefix="clusterhub-image-", dir=tmpdir) as context:
        stage_inputs(p["inputs"], context)
        rc, out, err = engine.build(spec, p["final_recipe"], p["hash"], context, temp)
    # The legacy Docker builder echoes the recipe label in full; keep the tail about the build itself.
    log = "\n".join(part for part in (out, err) if part).replace(encode_recipe_label(p["final_recipe"]), "<recipe>")
    if rc != 0:
        engine.discard(temp)
        tail = tail_lines(log)
        raise BuildError(
            f"{engine.name} build of {spec['name']} failed (rc={rc}); the previous image is unchanged. "
            f"Last {LOG_TAIL_LINES} lines of the build log:\n{tail}",
            rc,
            tail,
            tail_lines(err),
        )
    try:
        if spec["validate"]:
            result["validation"] = run_validation(spec, engine, temp)
    except BuildError:
        engine.discard(temp)
        raise
    engine.promote(temp, spec["name"])
    new = engine.inspect(spec["name"])
    result["build_seconds"] = round(clock() - started, 3)
    if current and spec["remove_previous"] and new:
        engine.remove_previous(current, new)
    result.update(
        built=True,
        image_id=new["id"] if new else None,
        sif_path=spec["name"] if spec["engine"] == "apptainer" else None,
        size=new["size"] if new else None,
        stdout=tail_lines(log),
    )
    return result
