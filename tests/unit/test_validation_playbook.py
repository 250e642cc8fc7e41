"""The file checks of the roles' validation, run by ansible-playbook itself, in normal and in check mode.

Each run includes one role's tasks/validate.yml (as playbooks/validate.yml does) on two local hosts: `good`
names files that are there, `bad` names what is not. The bad host must fail in validation, with a message
naming the variable; the good one must pass. Facts a validation would gather are given as variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
FACTS = {"ansible_os_family": "Debian", "ansible_architecture": "x86_64"}
CTK_PACKAGES = [
    "libnvidia-container1",
    "libnvidia-container-tools",
    "nvidia-container-toolkit-base",
    "nvidia-container-toolkit",
]


def run(role: str, tmp: Path, good: dict[str, Any], bad: dict[str, Any], check: bool) -> dict[str, Any]:
    """ansible-playbook's JSON report of one role's validation on the hosts good and bad."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"hosts": {"good": {**local, **good}, "bad": {**local, **bad}}}}
    (tmp / "hosts.json").write_text(json.dumps(inventory))
    play = [
        {
            "name": f"Validate {role}",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [{"name": "Validate", "ansible.builtin.include_role": {"name": role, "tasks_from": "validate"}}],
        }
    ]
    (tmp / "play.json").write_text(json.dumps(play))  # JSON is YAML
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.memory",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-tmp"),
    }
    command = [str(PLAYBOOK), "-i", str(tmp / "hosts.json"), str(tmp / "play.json"), *(["--check"] if check else [])]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout)
    report["rc"] = done.returncode
    return report


def failures(report: dict[str, Any], host: str) -> list[str]:
    return [
        " ".join(str(task["hosts"][host].get("msg", "")).split())
        for play in report["plays"]
        for task in play["tasks"]
        if task["hosts"].get(host, {}).get("failed")
    ]


def deb_dir(path: Path, version: str, packages: list[str]) -> str:
    path.mkdir()
    for package in packages:
        (path / f"{package}_{version}_amd64.deb").write_text("")
    return str(path)


def form_template(tmp: Path, text: str, name: str = "good") -> str:
    path = tmp / f"{name}-form.html.j2"
    path.write_text(text)
    return str(path)


# the role's default partitions are the hub's own: its sudo rule needs the users' group
HUB = {"jupyterhub_slurm_users_group": "users"}
FORM = {**HUB, "jupyterhub_tls_self_signed": True}
# remote partitions only, one of them run as the users' own HPC accounts
OWN_ACCOUNTS = {
    "jupyterhub_tls_self_signed": True,
    "jupyterhub_remote_login": "login",
    "jupyterhub_partitions": [
        {"name": "hpcown", "max_cpus": 2, "max_memory_gb": 4, "max_hours": 12, "remote": True, "run_as": "user"}
    ],
    "jupyterhub_profiles": [{"slug": "own", "partition": "hpcown", "cpus": 1, "memory_gb": 1, "hours": 1}],
    "jupyterhub_images": [],
}
DAV = {"webdav_client_url": "https://storage/dav"}
CASES = {
    "jupyterhub TLS certificate": (
        "jupyterhub",
        lambda tmp: {
            **HUB,
            "jupyterhub_tls_cert": str(ROOT / "README.md"),
            "jupyterhub_tls_key": str(ROOT / "README.md"),
        },
        lambda tmp: {**HUB, "jupyterhub_tls_cert": str(tmp / "hub.crt"), "jupyterhub_tls_key": str(ROOT / "README.md")},
        "jupyterhub_tls_cert",
    ),
    "jupyterhub TLS key": (
        "jupyterhub",
        lambda tmp: {**HUB, "jupyterhub_tls_self_signed": True, "jupyterhub_tls_cert": str(tmp / "made-later.crt")},
        lambda tmp: {**HUB, "jupyterhub_tls_cert": str(ROOT / "README.md"), "jupyterhub_tls_key": str(ROOT / "roles")},
        "jupyterhub_tls_key",
    ),
    "webdav_server TLS files": (
        "webdav_server",
        lambda tmp: {
            "webdav_server_tls_cert": str(ROOT / "README.md"),
            "webdav_server_tls_key": str(ROOT / "README.md"),
        },
        lambda tmp: {"webdav_server_tls_cert": str(ROOT / "README.md"), "webdav_server_tls_key": str(tmp / "dav.key")},
        "webdav_server_tls_key",
    ),
    "hpc_account Slurm directory": (
        "hpc_account",
        lambda tmp: {
            "hpc_account_hub_group": "all",
            "hpc_account_hub_from": ["127.0.0.1"],
            "hpc_account_slurm_bin_dir": "/usr",
        },
        lambda tmp: {
            "hpc_account_hub_group": "all",
            "hpc_account_hub_from": ["127.0.0.1"],
            "hpc_account_slurm_bin_dir": str(tmp / "slurm/bin"),
        },
        "hpc_account_slurm_bin_dir",
    ),
    "nvidia_container_toolkit local packages": (
        "nvidia_container_toolkit",
        lambda tmp: {
            **FACTS,
            "nvidia_container_toolkit_local_packages_dir": deb_dir(tmp / "debs", "1.17.8-1", CTK_PACKAGES),
        },
        lambda tmp: {
            **FACTS,
            "nvidia_container_toolkit_local_packages_dir": deb_dir(tmp / "some-debs", "1.17.8-1", CTK_PACKAGES[:2]),
        },
        "nvidia_container_toolkit_local_packages_dir",
    ),
    # security: a run_as user partition where anyone the authenticator accepts may log in
    "jupyterhub run_as user with an open login": (
        "jupyterhub",
        lambda tmp: {**OWN_ACCOUNTS, "jupyterhub_hpc_user_map": {"alice@uni.de": "asmith"}},
        lambda tmp: OWN_ACCOUNTS,
        "jupyterhub_allowed_groups",
    ),
    # security: a shared account holding users' WebDAV passwords (every job of the account could read them)
    "webdav_client shared account": (
        "webdav_client",
        lambda tmp: {**DAV, "webdav_client_credentials": [{"user": "alice", "password": "pw-a"}]},
        lambda tmp: {
            **DAV,
            "webdav_client_credentials": [{"user": "alice", "account": "jupyterhpc", "password": "pw-a"}],
        },
        "webdav_client_credentials",
    ),
    "jupyterhub spawn form template missing": (
        "jupyterhub",
        lambda tmp: {
            **FORM,
            "jupyterhub_options_form_template": form_template(tmp, "{% for p in profiles %}{{ p.slug }}{% endfor %}"),
        },
        lambda tmp: {**FORM, "jupyterhub_options_form_template": str(tmp / "form.html.j2")},
        "jupyterhub_options_form_template",
    ),
    # a template that would fail at every form (a name the form does not give, a syntax error)
    "jupyterhub spawn form template broken": (
        "jupyterhub",
        lambda tmp: {**FORM, "jupyterhub_options_form_template": form_template(tmp, "{{ notice }}{{ top.max_cpus }}")},
        lambda tmp: {**FORM, "jupyterhub_options_form_template": form_template(tmp, "{{ site_banner }}", "bad")},
        "jupyterhub_options_form_template",
    ),
    "notebook_env requirements file": (
        "notebook_env",
        lambda tmp: {},
        lambda tmp: {"notebook_env_requirements_file": str(tmp / "requirements.txt")},
        "notebook_env_requirements_file",
    ),
}


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
@pytest.mark.parametrize("case", list(CASES))
def test_validation_refuses_what_is_not_there(case, check, tmp_path):
    role, good, bad, variable = CASES[case]
    report = run(role, tmp_path, good(tmp_path), bad(tmp_path), check)
    assert report["rc"] != 0
    assert report["stats"]["good"]["failures"] == 0, failures(report, "good")
    assert report["stats"]["bad"]["failures"] == 1
    (message,) = failures(report, "bad")
    assert variable in message, message
