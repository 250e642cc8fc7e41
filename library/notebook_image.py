#!/usr/bin/python
"""Ansible module notebook_image: build a notebook image (Docker or Apptainer SIF) from a declarative spec."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: notebook_image
short_description: Build a Jupyter notebook image (Docker image or Apptainer SIF) from a declarative spec
description:
  - Renders a Dockerfile (O(engine=docker)) or an Apptainer definition file (O(engine=apptainer)) from a
    declarative spec (base, apt and pip packages, Jupyter kernels, environment, files, notebook user and entry
    point), or from a repo2docker-style folder (C(apt.txt), C(requirements.txt), C(postBuild)), and builds it.
  - Builds only when the content hash of the rendered recipe plus its inputs (the bytes of copied files,
    requirement files, the repository folder, the host CA bundle) and the base image's identity differs from the
    hash recorded on the existing image (Docker label C(org.clusterhub.spec-hash); SIF C(%labels)). A run with
    nothing to do is C(changed=false) and only inspects the current image.
  - Atomic. Docker builds to a temporary tag, validates it, then C(docker tag)s it to O(name) and removes the
    temporary tag. Apptainer builds a temporary SIF in the destination directory and renames it over O(name).
    A failed build or validation leaves the previous image untouched and fails with the last 40 lines of the
    build log in C(msg) and C(stdout).
  - Validates a new image before it replaces the current one. The notebook user exists with O(user.uid)
    (C(id -u)), C(jupyter lab --version) and C(python3 -m papermill --version) succeed, every declared kernel is
    listed by C(jupyter kernelspec list) and (O(kernel_start_check)) starts and runs code.
  - Bad arguments (an unknown engine, uid 0, package names with spaces or shell metacharacters, environment
    variable names that are not identifiers, missing input files) fail before anything is built, with a message
    naming the argument.
  - Pip installs go into a virtual environment (O(venv)), so Debian's externally managed python3 (PEP 668) is
    left alone; the image must be Debian or Ubuntu based (C(apt-get), C(useradd)).
  - Apptainer builds unpack the image in C(APPTAINER_TMPDIR) when the environment sets it, otherwise in a
    scratch directory next to the target SIF (removed afterwards), since C(/tmp) is often small or C(noexec).
version_added: "0.1.0"
author:
  - clusterhub maintainers
options:
  engine:
    description:
      - The container engine that builds the image.
    type: str
    choices: [docker, apptainer]
    default: docker
  name:
    description:
      - For O(engine=docker), the image name and tag (C(:latest) when no tag is given).
      - For O(engine=apptainer), the path of the SIF file to write (must end in C(.sif); its directory must exist).
    type: str
    required: true
  base:
    description:
      - For O(engine=docker), a Docker image to build FROM; when it is in the local engine its image id is part
        of the hash, so rebuilding the base rebuilds this image.
      - For O(engine=apptainer), C(docker-daemon:IMAGE) (an image of the local Docker engine),
        C(localimage:PATH) or a PATH ending in C(.sif) (another SIF), or C(docker://REF) (a registry).
      - Mutually exclusive with O(debootstrap).
    type: str
  debootstrap:
    description:
      - For O(engine=apptainer) only, bootstrap the image with C(debootstrap) (a C(Bootstrap) line of
        V(debootstrap) in the definition file).
    type: dict
    suboptions:
      suite:
        description: The Debian or Ubuntu suite, for example C(bookworm).
        type: str
        required: true
      mirror:
        description: The archive mirror.
        type: str
        default: http://deb.debian.org/debian
      include:
        description: Extra packages debootstrap installs (the C(Include) header).
        type: list
        elements: str
        default: []
  apt_packages:
    description:
      - Debian packages to install (C(python3) and C(python3-venv) are always installed).
      - Each entry is a package name with an optional C(:arch), C(=version) or C(/release).
    type: list
    elements: str
    default: []
  pip_packages:
    description:
      - Pip requirements (C(name), C(name[extra]), C(name==1.2), C(name>=1,<2)) installed into O(venv) together
        with O(notebook_packages). Anything more elaborate (URLs, markers, hashes) goes in O(pip_requirements).
    type: list
    elements: str
    default: []
  pip_requirements:
    description:
      - A pinned requirements file on the build host, installed into O(venv) with O(pip_packages) in one
        resolver run; its bytes are part of the hash.
    type: path
  notebook_packages:
    description:
      - The packages that make the image a notebook image, installed into O(venv) first. Validation needs
        C(jupyterlab), C(papermill) and (for kernels) C(ipykernel); pin them here if you like.
    type: list
    elements: str
    default: [jupyterlab, papermill, ipykernel]
  venv:
    description:
      - The virtual environment (inside the image) that holds the notebook stack; its C(bin) directory is first
        on E(PATH).
    type: str
    default: /opt/notebook
  kernels:
    description:
      - Jupyter kernels to register (C(ipykernel install --prefix VENV)); each must be listed by
        C(jupyter kernelspec list) for the build to succeed.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The kernel name (lowercase letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      display_name:
        description: The name shown in JupyterLab (defaults to O(kernels[].name)).
        type: str
      venv:
        description:
          - A separate virtual environment for this kernel (created with C(ipykernel) and O(kernels[].pip_packages)).
          - Without it the kernel runs in O(venv).
        type: str
      pip_packages:
        description: Extra pip requirements for this kernel's environment.
        type: list
        elements: str
        default: []
  env:
    description:
      - Environment variables set in the image. Names must be identifiers; values are literal (no expansion);
        E(PATH) and E(HOME) are managed by the module.
    type: dict
    default: {}
  files:
    description:
      - Files or folders from the build host copied into the image (after the packages are installed).
    type: list
    elements: dict
    default: []
    suboptions:
      src:
        description: A file or folder on the build host (a folder's C(.git) is left out).
        type: path
        required: true
      dest:
        description: The absolute path in the image (a folder's contents are copied into it).
        type: str
        required: true
      mode:
        description: An octal mode such as C('0644') for the file (or the top folder).
        type: str
      owner:
        description: C(USER), C(USER:GROUP) or C(UID:GID); root when not set.
        type: str
  user:
    description:
      - The notebook user, created (or given O(user.uid) if the base already has it) with a home in C(/home/NAME).
        The Docker image runs as this user by default.
    type: dict
    default: {}
    suboptions:
      name:
        description: The user name.
        type: str
        default: jovyan
      uid:
        description: The user id; 0 is refused.
        type: int
        default: 1000
      gid:
        description: The primary group id (a group named after the user is created when it does not exist).
        type: int
  entrypoint:
    description:
      - The notebook entry point (Docker C(CMD), Apptainer C(%runscript)), as an argument list.
    type: list
    elements: str
    default: [jupyter, lab, --ip=0.0.0.0, --port=8888, --no-browser]
  repo:
    description:
      - A repo2docker-style folder on the build host, copied to O(repo_dest). C(apt.txt) adds Debian packages,
        C(requirements.txt) is pip-installed into O(venv), C(postBuild) runs (as root, in O(repo_dest)) after
        them; configuration in C(binder/) or C(.binder/) takes precedence. C(environment.yml), C(Pipfile),
        C(runtime.txt), C(install.R), C(Project.toml), C(Dockerfile) and C(start) are reported as unsupported.
    type: path
  repo_dest:
    description: Where O(repo) is copied in the image (owned by the notebook user).
    type: str
    default: /srv/repo
  ca_bundle:
    description:
      - A CA bundle path inside the image. When set (or O(trust_host_ca) is true) E(PIP_CERT) and
        E(REQUESTS_CA_BUNDLE) point at it during the build and in the image; needed behind TLS-inspecting proxies.
    type: str
  trust_host_ca:
    description:
      - Copy the build host's CA bundle (O(host_ca_bundle)) into the image, at O(ca_bundle) (default
        C(/etc/ssl/certs/ca-certificates.crt)) and in C(/usr/local/share/ca-certificates/), before anything is
        downloaded.
    type: bool
    default: false
  host_ca_bundle:
    description: The build host's CA bundle used by O(trust_host_ca).
    type: path
    default: /etc/ssl/certs/ca-certificates.crt
  fakeroot:
    description: For O(engine=apptainer), build with C(--fakeroot) (unprivileged builds).
    type: bool
    default: true
  sif_compression:
    description:
      - For O(engine=apptainer), how the SIF's file system is compressed (C(mksquashfs -comp)).
      - V(gzip) is Apptainer's default, readable by every squashfs reader. V(zstd) (level 3) builds several times
        faster at about the same size; the nodes' squashfuse or kernel (4.14 or later) must read zstd, as those of
        Debian 12, Ubuntu 20.04 and EL 8 onwards do. V(lz4) is faster to read and larger; V(xz) smallest and slowest.
      - How the image is packed, not what it holds: a change applies at the next build (O(force) repacks now).
    type: str
    choices: [gzip, zstd, xz, lz4]
    default: gzip
  build_cache:
    description:
      - Use the engine's build cache. V(false) passes C(--no-cache) (Docker) or C(--disable-cache) (Apptainer).
    type: bool
    default: true
  validate:
    description: Validate a new image before it replaces the current one (strongly recommended).
    type: bool
    default: true
  kernel_start_check:
    description: During validation, also start each declared kernel and run C(print(6 * 7)) in it.
    type: bool
    default: true
  force:
    description: Build even when the recorded hash matches.
    type: bool
    default: false
  remove_previous:
    description:
      - For O(engine=docker), try C(docker image rm) of the replaced image (without C(--force), so an image used by
        a container or tagged elsewhere stays).
    type: bool
    default: true
notes:
  - Check mode renders and hashes, reports whether a build would happen and builds nothing.
  - With C(--diff) the module returns the previous and the new recipe text.
  - Real Apptainer builds need C(apptainer) on the build host (and C(debootstrap) for O(debootstrap)).
requirements:
  - docker (CLI and a running engine) for O(engine=docker)
  - apptainer for O(engine=apptainer)
seealso:
  - name: repo2docker configuration files
    description: The folder layout O(repo) follows.
    link: https://repo2docker.readthedocs.io/en/latest/configuration/index.html
"""

EXAMPLES = r"""
- name: Course image on the lab base, rebuilt only when the spec or its files change
  notebook_image:
    name: site/notebook:2024
    base: clusterhub-lab/debian:bookworm
    apt_packages: [git, less]
    pip_packages: [numpy, pandas==2.2.2]
    pip_requirements: /srv/images/course/requirements.txt
    kernels:
      - name: course
        display_name: Python (course)
    env:
      COURSE: hpc-101
    files:
      - src: /srv/images/course/jupyter_server_config.py
        dest: /etc/jupyter/jupyter_server_config.py
        mode: "0644"
    user:
      name: jovyan
      uid: 1000
    trust_host_ca: true

- name: The same notebook stack as a SIF from the local Docker engine's base image
  notebook_image:
    engine: apptainer
    name: /srv/images/notebook.sif
    base: docker-daemon:clusterhub-lab/debian:bookworm
    pip_packages: [numpy]

- name: A SIF bootstrapped from scratch with debootstrap
  notebook_image:
    engine: apptainer
    name: /srv/images/minimal.sif
    debootstrap:
      suite: bookworm
      mirror: http://deb.debian.org/debian

- name: A binder-style repository
  notebook_image:
    name: site/lesson:latest
    base: clusterhub-lab/debian:bookworm
    repo: /srv/lessons/intro
"""

RETURN = r"""
built:
  description: Whether this run built (and swapped in) a new image.
  returned: always
  type: bool
  sample: true
engine:
  description: The engine used.
  returned: always
  type: str
  sample: docker
image:
  description: The image name (Docker) or SIF path (Apptainer).
  returned: always
  type: str
  sample: site/notebook:2024
image_id:
  description: The Docker image id now behind O(name) (the current one in check mode); null for Apptainer.
  returned: always
  type: str
  sample: sha256:4f1c2b0d9e8a7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b
sif_path:
  description: The SIF path when O(engine=apptainer) and the SIF exists.
  returned: always
  type: str
  sample: /srv/images/notebook.sif
size:
  description: The image size in bytes (Docker image size, SIF file size); null when there is no image.
  returned: always
  type: int
  sample: 734003200
hash:
  description: The content hash of the spec and its inputs (what the image is, or would be, labelled with).
  returned: always
  type: str
  sample: 9b5f0d3c8a1e2f4b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3
previous_hash:
  description: The hash recorded on the image found before this run (null when there was none).
  returned: always
  type: str
  sample: 0e1d2c3b4a5968778695a4b3c2d1e0f1029384756a5b4c3d2e1f0a9b8c7d6e5f
build_seconds:
  description: Seconds spent building and validating (0 when nothing was built).
  returned: always
  type: float
  sample: 183.4
recipe:
  description: The rendered Dockerfile or Apptainer definition file.
  returned: always
  type: str
  sample: "FROM clusterhub-lab/debian:bookworm\nUSER root\n..."
validation:
  description: The validation checks run on a new image, each with C(check), C(command), C(ok) and C(detail).
  returned: always
  type: list
  elements: dict
  sample: [{"check": "jupyterlab", "command": "jupyter lab --version", "ok": true, "detail": "4.2.5"}]
stdout:
  description: The last 40 lines of the build log (empty when nothing was built).
  returned: always
  type: str
  sample: "Successfully built 4f1c2b0d9e8a"
diff:
  description: The previous and the new recipe text (with C(--diff)).
  returned: when diff mode is on
  type: dict
  sample: {"before": "FROM debian:bookworm\n", "after": "FROM debian:trixie\n"}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.clusterhub_image_build import ensure_image
from ansible.module_utils.clusterhub_image_engine import BuildError, make_engine
from ansible.module_utils.clusterhub_image_spec import (
    DEFAULT_CA_BUNDLE,
    DEFAULT_ENTRYPOINT,
    DEFAULT_MIRROR,
    DEFAULT_NOTEBOOK_PACKAGES,
    DEFAULT_REPO_DEST,
    DEFAULT_VENV,
    SIF_COMPRESSION,
    SpecError,
    validate_spec,
)


def argument_spec() -> dict:
    return {
        "engine": {"type": "str", "choices": ["docker", "apptainer"], "default": "docker"},
        "name": {"type": "str", "required": True},
        "base": {"type": "str"},
        "debootstrap": {
            "type": "dict",
            "options": {
                "suite": {"type": "str", "required": True},
                "mirror": {"type": "str", "default": DEFAULT_MIRROR},
                "include": {"type": "list", "elements": "str", "default": []},
            },
        },
        "apt_packages": {"type": "list", "elements": "str", "default": []},
        "pip_packages": {"type": "list", "elements": "str", "default": []},
        "pip_requirements": {"type": "path"},
        "notebook_packages": {"type": "list", "elements": "str", "default": list(DEFAULT_NOTEBOOK_PACKAGES)},
        "venv": {"type": "str", "default": DEFAULT_VENV},
        "kernels": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "name": {"type": "str", "required": True},
                "display_name": {"type": "str"},
                "venv": {"type": "str"},
                "pip_packages": {"type": "list", "elements": "str", "default": []},
            },
        },
        "env": {"type": "dict", "default": {}},
        "files": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "src": {"type": "path", "required": True},
                "dest": {"type": "str", "required": True},
                "mode": {"type": "str"},
                "owner": {"type": "str"},
            },
        },
        "user": {
            "type": "dict",
            "default": {},
            "apply_defaults": True,
            "options": {
                "name": {"type": "str", "default": "jovyan"},
                "uid": {"type": "int", "default": 1000},
                "gid": {"type": "int"},
            },
        },
        "entrypoint": {"type": "list", "elements": "str", "default": list(DEFAULT_ENTRYPOINT)},
        "repo": {"type": "path"},
        "repo_dest": {"type": "str", "default": DEFAULT_REPO_DEST},
        "ca_bundle": {"type": "str"},
        "trust_host_ca": {"type": "bool", "default": False},
        "host_ca_bundle": {"type": "path", "default": DEFAULT_CA_BUNDLE},
        "fakeroot": {"type": "bool", "default": True},
        "sif_compression": {"type": "str", "default": "gzip", "choices": list(SIF_COMPRESSION)},
        "build_cache": {"type": "bool", "default": True},
        "validate": {"type": "bool", "default": True},
        "kernel_start_check": {"type": "bool", "default": True},
        "force": {"type": "bool", "default": False},
        "remove_previous": {"type": "bool", "default": True},
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("base", "debootstrap")],
        required_one_of=[("base", "debootstrap")],
        supports_check_mode=True,
    )
    try:
        spec = validate_spec(module.params)
    except SpecError as exc:
        module.fail_json(msg=f"notebook_image: bad argument {exc}", argument=exc.argument, changed=False)

    binary = module.get_bin_path(spec["engine"], required=True)

    def run(argv, cwd=None, env=None):
        environ = {"LC_ALL": "C", "LANG": "C", **(env or {})}
        return module.run_command(argv, cwd=cwd, environ_update=environ, check_rc=False)

    engine = make_engine(spec["engine"], binary, run)
    try:
        result = ensure_image(spec, engine, check_mode=module.check_mode, tmpdir=module.tmpdir)
    except BuildError as exc:
        module.fail_json(msg=exc.msg, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr, changed=False)

    previous_recipe = result.pop("previous_recipe", "")
    if module._diff:
        result["diff"] = {
            "before_header": f"{spec['name']} (recipe)",
            "after_header": f"{spec['name']} (recipe)",
            "before": previous_recipe or "",
            "after": result["recipe"],
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
