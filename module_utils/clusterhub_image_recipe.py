"""What a notebook image is made of: the build context, the recipe (Dockerfile or Apptainer definition) and the
content hash over both.

The content hash covers the rendered recipe (Dockerfile or Apptainer definition, without the hash label), the bytes
of every staged input (copied files, pip requirement files, the repository folder, the host CA bundle) and the base
image's identity (the local Docker image id; size and mtime of a base SIF).  It is recorded on the image (Docker
label ``org.clusterhub.spec-hash``, SIF ``%labels``); a run whose hash matches the image's does not build.

The other clusterhub_image_* files are imported as ``ansible.module_utils.<name>``, the way Ansible ships them with
the module (the unit tests point those names at the plain files: tests/unit/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import stat

HASH_LABEL = "org.clusterhub.spec-hash"
HASH_SCHEME = b"clusterhub-notebook-image/1\n"
# python3-venv: pip installs go into a virtual environment (PEP 668 marks Debian's python externally managed).
BASE_APT_PACKAGES = ["python3", "python3-venv"]
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA_IN_IMAGE = "/usr/local/share/ca-certificates/clusterhub-build-host.crt"
DOCKER_STAGING = "/tmp/clusterhub-build"
APPTAINER_STAGING = "/opt/clusterhub-build"


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


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def _q(value: str) -> str:
    return shlex.quote(str(value))


def _words(values) -> str:
    return " ".join(_q(v) for v in values)


def _unique(items):
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


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
