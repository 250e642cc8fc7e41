"""Every role's tasks/validate.yml: each value that could only fail later is refused there, naming its variable.

The tasks are evaluated as written, through Ansible's templar, with the role's defaults and vars: asserts
(with their `vars`, `when` and loops), named and first_found include_vars, and stat (on this machine's
files), so the tables test the rules the validation play really runs. test_validation_playbook.py runs the
file checks through ansible-playbook itself, in normal and in check mode.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from role_files import load, trusted

init_plugin_loader()  # lookups (first_found) as ansible-playbook has them

ROOT = Path(__file__).resolve().parents[2]
HOST = "hub"
A_FILE = str(ROOT / "README.md")  # a file that exists here (a certificate, a requirements file...)
A_DIR = str(ROOT / "roles")  # a directory that exists here
MISSING = "/nonexistent/clusterhub/file"
FACTS = {
    "ansible_os_family": "Debian",
    "ansible_distribution": "Debian",
    "ansible_distribution_release": "trixie",
    "ansible_distribution_major_version": "13",
    "ansible_distribution_version": "13",
    "ansible_architecture": "x86_64",
    "ansible_virtualization_role": "host",
    "ansible_virtualization_type": "kvm",
}


EVALUATED = ("ansible.builtin.assert", "ansible.builtin.stat", "ansible.builtin.include_vars")


def role_variables(role: str, overrides: dict[str, Any]) -> dict[str, Any]:
    groups = {"all": [HOST], "jupyterhub": [HOST], "hpc_login": ["login"], "slurm_controller": ["ctl"]}
    variables: dict[str, Any] = {
        "inventory_hostname": HOST,
        "inventory_hostname_short": HOST,
        "ansible_managed": "Ansible managed",
        "ansible_check_mode": False,
        "role_path": str(ROOT / "roles" / role),
        "playbook_dir": str(ROOT / "playbooks"),
        "groups": groups,
        "hostvars": {HOST: {}, "login": {}, "ctl": {"inventory_hostname_short": "ctl"}},
        **FACTS,
        "ansible_facts": {key.removeprefix("ansible_"): value for key, value in FACTS.items()},
    }
    for part in ("defaults", "vars"):
        path = ROOT / "roles" / role / part / "main.yml"
        if path.is_file():
            variables.update(load(path))
    variables.update(overrides)
    return variables


def listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def owner_name(uid: int) -> str:
    """The account name Ansible's stat reports as pw_name (the number where no account has it)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def fail_messages(role: str, **overrides: Any) -> list[str]:
    """The fail_msg of every assert of the role's tasks/validate.yml that fails for these variables."""
    variables = role_variables(role, overrides)
    loader = DataLoader()
    messages: list[str] = []
    asserts = 0
    for task in yaml.safe_load((ROOT / "roles" / role / "tasks" / "validate.yml").read_text()):
        action = next(key for key in task if key.startswith("ansible.builtin."))
        if action not in EVALUATED:
            continue  # facts (setup), probes of the network (uri) and find: ansible-playbook runs those
        args = trusted(task[action])
        scope = {**variables, **trusted(task.get("vars") or {})}
        engine = Templar(loader=loader, variables=scope)
        items = engine.template(trusted(task["loop"])) if "loop" in task else [None]
        results = []
        for item in items:
            engine = Templar(loader=loader, variables={**scope, "item": item})

            def holds(condition: Any, engine: Templar = engine) -> bool:
                if isinstance(condition, bool):
                    return condition
                return engine.template(trust_as_template("{{ (" + condition + ") | bool }}"))

            if not all(holds(condition) for condition in listed(task.get("when", []))):
                results.append({"item": item, "skipped": True})
                continue
            if action == "ansible.builtin.assert":
                asserts += 1
                if not all(holds(condition) for condition in listed(args["that"])):
                    messages.append(" ".join(engine.template(args["fail_msg"]).split()))
            elif action == "ansible.builtin.stat":
                path = engine.template(args["path"])
                found = {"exists": os.path.lexists(path)}
                if found["exists"]:
                    st = os.stat(path)
                    found.update(isreg=stat.S_ISREG(st.st_mode), isdir=stat.S_ISDIR(st.st_mode))
                    found.update(ischr=stat.S_ISCHR(st.st_mode), mode=f"{stat.S_IMODE(st.st_mode):04o}")
                    found.update(roth=bool(st.st_mode & stat.S_IROTH), woth=bool(st.st_mode & stat.S_IWOTH))
                    found.update(pw_name=owner_name(st.st_uid))
                results.append({"item": item, "stat": found})
            elif action == "ansible.builtin.include_vars":
                source = args["file"] if isinstance(args, dict) else args
                data = load(Path(engine.template(source)))
                variables.update({args["name"]: data} if isinstance(args, dict) and "name" in args else data)
        if "register" in task:
            variables[task["register"]] = {"results": results} if "loop" in task else (results[0] | {})
            if "loop" not in task and "stat" in results[0]:
                variables[task["register"]] = {"stat": results[0]["stat"]}
    assert asserts, f"{role}: no assertion was evaluated"
    return messages


def check(role: str, bad: str | None, **overrides: Any) -> None:
    """bad None: every check passes; else some check fails and what it says names the variable `bad`."""
    messages = fail_messages(role, **overrides)
    if bad is None:
        assert messages == []
    else:
        assert messages, f"{role}: {overrides} was accepted"
        assert any(bad in message for message in messages), f"{bad} not named in {messages}"


# --- jupyterhub ---------------------------------------------------------------------------------------------
HUB = {"jupyterhub_tls_cert": A_FILE, "jupyterhub_tls_key": A_FILE, "jupyterhub_slurm_users_group": "users"}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        ({}, "jupyterhub_tls_cert"),  # the defaults name a site certificate this host lacks
        (HUB, None),
        ({**HUB, "jupyterhub_tls_self_signed": True}, None),
        ({**HUB, "jupyterhub_tls_cert": MISSING}, "jupyterhub_tls_cert"),
        ({**HUB, "jupyterhub_tls_key": MISSING}, "jupyterhub_tls_key"),
        ({**HUB, "jupyterhub_tls_cert": A_DIR}, "jupyterhub_tls_cert"),
        ({**HUB, "jupyterhub_tls_self_signed": True, "jupyterhub_tls_cert": MISSING}, None),  # the role makes it
        ({"jupyterhub_tls_self_signed": True, "jupyterhub_tls_names": []}, "jupyterhub_tls_names"),
        ({"jupyterhub_tls_self_signed": True, "jupyterhub_tls_names": ["hub", "bad name"]}, "jupyterhub_tls_names"),
        ({**HUB, "jupyterhub_tls_names": ["bad name"]}, None),  # no self-signed certificate: names unused
        ({**HUB, "jupyterhub_hub_bind_url": "http://127.0.0.1:8081"}, None),
        ({**HUB, "jupyterhub_subdomain_host": "https://hub.example.org"}, None),
        ({**HUB, "jupyterhub_subdomain_host": "https://lab.localhost:8443"}, None),
        ({**HUB, "jupyterhub_subdomain_host": "hub.example.org"}, "jupyterhub_subdomain_host"),  # no scheme
        ({**HUB, "jupyterhub_subdomain_host": "http://hub.example.org"}, "jupyterhub_subdomain_host"),
        ({**HUB, "jupyterhub_subdomain_host": "https://localhost:8443"}, "jupyterhub_subdomain_host"),  # one label
        ({**HUB, "jupyterhub_subdomain_host": "https://hub.example.org/"}, "jupyterhub_subdomain_host"),  # a path
        ({**HUB, "jupyterhub_subdomain_host": "https://hub.example.org:70000"}, "jupyterhub_subdomain_host"),
        ({**HUB, "jupyterhub_subdomain_host": "https://10.0.0.1:8443"}, "jupyterhub_subdomain_host"),
        ({**HUB, "jupyterhub_subdomain_host": "https://Hub.Example.org"}, "jupyterhub_subdomain_host"),
        ({**HUB, "jupyterhub_subdomain_host": "https://hub_1.example.org"}, "jupyterhub_subdomain_host"),
        ({**HUB, "jupyterhub_hub_bind_url": "http://0.0.0.0"}, "jupyterhub_hub_bind_url"),  # no port
        ({**HUB, "jupyterhub_hub_bind_url": "0.0.0.0:8081"}, "jupyterhub_hub_bind_url"),
        ({**HUB, "jupyterhub_hub_bind_url": "http://0.0.0.0:70000"}, "jupyterhub_hub_bind_url"),
        ({**HUB, "jupyterhub_hub_bind_url": "http://0.0.0.0:443"}, "jupyterhub_hub_bind_url"),  # the HTTPS port
        ({**HUB, "jupyterhub_hub_bind_url": "http://0.0.0.0:8001"}, "jupyterhub_proxy_api_port"),
        ({**HUB, "jupyterhub_hub_connect_url": "hub:8081"}, "jupyterhub_hub_connect_url"),
        ({**HUB, "jupyterhub_hub_connect_url": "http://bad host:8081"}, "jupyterhub_hub_connect_url"),
        ({**HUB, "jupyterhub_docker_hub_connect_url": "http://172.17.0.1:8081"}, None),
        ({**HUB, "jupyterhub_docker_hub_connect_url": "tcp://172.17.0.1:8081"}, "jupyterhub_docker_hub_connect_url"),
        ({**HUB, "jupyterhub_db_url": "postgresql://hub@db/jupyterhub"}, None),
        ({**HUB, "jupyterhub_db_url": "postgresql+psycopg2://hub@db/jupyterhub"}, None),
        ({**HUB, "jupyterhub_db_url": "/var/lib/jupyterhub/jupyterhub.sqlite"}, "jupyterhub_db_url"),
        ({**HUB, "jupyterhub_proxy_api_port": 0}, "jupyterhub_proxy_api_port"),
        # the hub's sudo rule: one users' group where it submits to Slurm itself, never system accounts
        ({**HUB, "jupyterhub_slurm_users_group": ""}, "jupyterhub_slurm_users_group"),
        ({**HUB, "jupyterhub_slurm_users_group": "%users"}, "jupyterhub_slurm_users_group"),
        ({**HUB, "jupyterhub_slurm_users_min_uid": 100}, "jupyterhub_slurm_users_min_uid"),
        (
            {
                **HUB,
                "jupyterhub_slurm_users_group": "",
                "jupyterhub_partitions": [
                    {"name": "hpc", "max_cpus": 1, "max_memory_gb": 1, "max_hours": 1, "remote": True}
                ],
                "jupyterhub_profiles": [],
            },
            None,
        ),
        ({**HUB, "jupyterhub_proxy_api_port": 443}, "jupyterhub_proxy_api_port"),
        ({**HUB, "jupyterhub_http_redirect_port": 8081}, "jupyterhub_http_redirect_port"),
        ({**HUB, "jupyterhub_http_redirect_port": 0, "jupyterhub_proxy_api_port": 80}, None),
        ({**HUB, "jupyterhub_state_dir": "var/lib/jupyterhub"}, "jupyterhub_state_dir"),
        ({**HUB, "jupyterhub_venv": "/opt"}, "jupyterhub_venv"),
        ({**HUB, "jupyterhub_config_dir": "/etc/jupyter hub"}, "jupyterhub_config_dir"),
        ({**HUB, "jupyterhub_singleuser_venv": "jupyter"}, "jupyterhub_singleuser_venv"),
        ({**HUB, "jupyterhub_docker_shared_dir": "/srv/shared"}, None),  # need not exist: the role creates it
        ({**HUB, "jupyterhub_docker_shared_dir": "shared"}, "jupyterhub_docker_shared_dir"),
        ({**HUB, "jupyterhub_docker_shared_mount": "/"}, "jupyterhub_docker_shared_mount"),
        ({**HUB, "jupyterhub_docker_shared_mount": "/a:b"}, "jupyterhub_docker_shared_mount"),
        ({**HUB, "jupyterhub_docker_pids_limit": 4096}, None),
        ({**HUB, "jupyterhub_docker_pids_limit": 0}, "jupyterhub_docker_pids_limit"),
        ({**HUB, "jupyterhub_docker_pids_limit": -1}, "jupyterhub_docker_pids_limit"),
        ({**HUB, "jupyterhub_docker_pids_limit": "lots"}, "jupyterhub_docker_pids_limit"),
        ({**HUB, "jupyterhub_requirements_file": MISSING}, "jupyterhub_requirements_file"),
        ({**HUB, "jupyterhub_batch_script_src": MISSING}, "jupyterhub_batch_script_src"),
        ({**HUB, "jupyterhub_batch_script_src": A_DIR}, "jupyterhub_batch_script_src"),
    ],
)
def test_jupyterhub(overrides, bad):
    check("jupyterhub", bad, **overrides)


def test_jupyterhub_does_not_require_the_keys_the_hpc_account_role_writes_later():
    """jupyterhub_remote_key and _known_hosts are generated in remote.yml, after the hub: only their form counts."""
    remote = [{"name": "hpc", "max_cpus": 4, "max_memory_gb": 8, "max_hours": 12, "remote": True}]
    profiles = [{"slug": "s", "partition": "hpc", "cpus": 1, "memory_gb": 1, "hours": 1}]
    vars_ = {**HUB, "jupyterhub_partitions": remote, "jupyterhub_profiles": profiles, "jupyterhub_images": []}
    check("jupyterhub", None, jupyterhub_remote_key=MISSING, **vars_)
    check("jupyterhub", "jupyterhub_remote_key", jupyterhub_remote_key="relative/key", **vars_)


# remote partitions only: the direct-Slurm rules (the hub's sudo group) stay out of these tables
OWN_REMOTE = {
    **HUB,
    "jupyterhub_partitions": [
        {"name": "hpc", "max_cpus": 4, "max_memory_gb": 8, "max_hours": 12, "remote": True},
        {"name": "hpcown", "max_cpus": 4, "max_memory_gb": 8, "max_hours": 12, "remote": True, "run_as": "user"},
    ],
    "jupyterhub_profiles": [{"slug": "s", "partition": "hpc", "cpus": 1, "memory_gb": 1, "hours": 1}],
    "jupyterhub_images": [],
}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        # anyone the authenticator accepts could run jobs as the HPC account of the same name
        ({}, "jupyterhub_allowed_groups"),
        (
            {"jupyterhub_authenticator": "oauth", "jupyterhub_authenticator_config": {"client_id": "x"}},
            "jupyterhub_partitions",
        ),
        ({"jupyterhub_authenticator_config": {"allowed_users": []}}, "jupyterhub_allowed_groups"),
        ({"jupyterhub_authenticator_config": {"allow_all": True}}, "jupyterhub_allowed_groups"),
        # each of the restrictions is enough
        ({"jupyterhub_allowed_groups": ["hpc-users"]}, None),
        ({"jupyterhub_authenticator_config": {"allowed_users": ["alice", "bob"]}}, None),
        ({"jupyterhub_authenticator": "ldap", "jupyterhub_authenticator_config": {"allowed_groups": ["cn=hpc"]}}, None),
        ({"jupyterhub_authenticator_config": {"allow_all": False}}, None),
        ({"jupyterhub_hpc_user_map": {"alice@uni.de": "asmith"}}, None),
        # the map's accounts are account names, never root
        ({"jupyterhub_hpc_user_map": {"mallory": "root"}}, "jupyterhub_hpc_user_map"),
        ({"jupyterhub_hpc_user_map": {"alice": "A Smith"}}, "jupyterhub_hpc_user_map"),
        ({"jupyterhub_hpc_user_map": {"": "asmith"}}, "jupyterhub_hpc_user_map"),
    ],
)
def test_jupyterhub_run_as_user_needs_a_restricted_login_or_a_name_map(overrides, bad):
    check("jupyterhub", bad, **{**OWN_REMOTE, **overrides})
    if bad in ("jupyterhub_allowed_groups", "jupyterhub_partitions"):
        (message,) = fail_messages("jupyterhub", **{**OWN_REMOTE, **overrides})
        assert "jupyterhub_partitions hpcown run jobs as the hub users' own HPC accounts" in message
        assert "jupyterhub_allowed_groups" in message and "jupyterhub_hpc_user_map" in message


def test_jupyterhub_run_as_user_needs_a_remote_partition():
    """run_as user is remote HPC mode's (hpc-gate runs the job as the user's own account); a direct partition
    already runs jobs as the hub user (moved here from the lab's bad-inventory runs)."""
    direct = {"name": "jupyter", "max_cpus": 2, "max_memory_gb": 4, "max_hours": 12, "run_as": "user"}
    restricted = {"jupyterhub_allowed_groups": ["students"], "jupyterhub_profiles": []}
    messages = fail_messages("jupyterhub", **{**OWN_REMOTE, **restricted, "jupyterhub_partitions": [direct]})
    assert any("jupyterhub_partitions jupyter: run_as user needs remote true" in message for message in messages)


def test_jupyterhub_without_run_as_user_partitions_needs_no_restriction():
    partitions = [p for p in OWN_REMOTE["jupyterhub_partitions"] if "run_as" not in p]
    check("jupyterhub", None, **{**OWN_REMOTE, "jupyterhub_partitions": partitions})


# --- tunnel_user ---------------------------------------------------------------------------------------------
TUNNEL = {"tunnel_user_from": ["10.0.0.0/8"]}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        (TUNNEL, None),
        ({**TUNNEL, "tunnel_user_listen_ports": [20000, 20001]}, None),
        ({**TUNNEL, "tunnel_user_listen_ports": ["20000-20998", 20999]}, None),
        (
            {**TUNNEL, "tunnel_user_listen_ports": ["*"]},
            "tunnel_user_listen_ports",
        ),  # a job could take 8081 in a restart
        ({**TUNNEL, "tunnel_user_listen_ports": ["20000-21000"]}, "tunnel_user_listen_ports"),  # 1001 ports
        ({**TUNNEL, "tunnel_user_listen_ports": ["8000-8100"]}, "tunnel_user_listen_ports"),  # the hub API, proxy API
        ({**TUNNEL, "tunnel_user_listen_ports": []}, "tunnel_user_listen_ports"),
        ({**TUNNEL, "tunnel_user_listen_ports": [8081]}, "tunnel_user_listen_ports"),  # the hub API (bind URL)
        ({**TUNNEL, "tunnel_user_listen_ports": ["8001"]}, "tunnel_user_listen_ports"),  # the proxy API
        (
            {
                **TUNNEL,
                "jupyterhub_hub_bind_url": "http://0.0.0.0:8083",
                "tunnel_user_api_port": 8083,
                "tunnel_user_listen_ports": [20000, 8083],
            },
            "tunnel_user_listen_ports",
        ),  # tunnel_user_api_port
        ({**TUNNEL, "tunnel_user_api_port": 8083}, "tunnel_user_api_port"),  # the hub serves its API on 8081
        ({**TUNNEL, "jupyterhub_hub_bind_url": "http://10.0.0.5:8081"}, "tunnel_user_api_port"),  # not loopback
        ({**TUNNEL, "jupyterhub_hub_bind_url": "http://127.0.0.1:8081"}, None),
        ({**TUNNEL, "jupyterhub_https_port": 8443, "tunnel_user_listen_ports": [8443]}, "tunnel_user_listen_ports"),
        (
            {**TUNNEL, "jupyterhub_http_redirect_port": 8080, "tunnel_user_listen_ports": [8080]},
            "tunnel_user_listen_ports",
        ),
        ({**TUNNEL, "jupyterhub_http_redirect_port": 0, "tunnel_user_listen_ports": [20000]}, None),
        (
            {**TUNNEL, "jupyterhub_hub_bind_url": "http://0.0.0.0:9000", "tunnel_user_listen_ports": [9000]},
            "tunnel_user_listen_ports",
        ),
        (
            {
                **TUNNEL,
                "jupyterhub_hub_bind_url": "http://0.0.0.0:9000",
                "tunnel_user_api_port": 9000,
                "tunnel_user_listen_ports": [8081],
            },
            None,
        ),
        ({**TUNNEL, "tunnel_user_api_port": 8081}, None),
        ({**TUNNEL, "tunnel_user_api_port": 443}, "tunnel_user_api_port"),  # the hub's HTTPS port
        ({**TUNNEL, "tunnel_user_api_port": 80}, "tunnel_user_api_port"),
        ({**TUNNEL, "tunnel_user_api_port": 8001}, "tunnel_user_api_port"),  # the proxy's API
        ({**TUNNEL, "jupyterhub_https_port": 8443, "tunnel_user_api_port": 8443}, "tunnel_user_api_port"),
        (
            {
                **TUNNEL,
                "jupyterhub_proxy_api_port": 9001,
                "jupyterhub_hub_bind_url": "http://0.0.0.0:8001",
                "tunnel_user_api_port": 8001,
            },
            None,
        ),
        ({**TUNNEL, "tunnel_user_listen_ports": [80]}, "tunnel_user_listen_ports"),  # below 1024 (existing rule)
    ],
)
def test_tunnel_user(overrides, bad):
    check("tunnel_user", bad, **overrides)


# --- notebook_runner ------------------------------------------------------------------------------------------
RUNNER = {"jupyterhub_slurm_users_group": "students"}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        (RUNNER, None),
        ({**RUNNER, "notebook_runner_db_url": "postgresql+psycopg://runs:pw@db/runs"}, None),
        ({**RUNNER, "notebook_runner_db_url": "mysql://x"}, "notebook_runner_db_url"),
        ({**RUNNER, "jupyterhub_slurm_users_group": ""}, "notebook_runner_users_group is empty"),
        ({**RUNNER, "notebook_runner_port": 8081}, "notebook_runner_port"),  # the hub's API
        ({**RUNNER, "notebook_runner_port": 443}, "notebook_runner_port"),  # the hub's HTTPS
        ({**RUNNER, "notebook_runner_port": 70000}, "notebook_runner_port"),
        ({**RUNNER, "notebook_runner_service_name": "Runs Service"}, "notebook_runner_service_name"),
        ({**RUNNER, "notebook_runner_user": "root;id"}, "notebook_runner_user"),
    ],
)
def test_notebook_runner(overrides, bad):
    check("notebook_runner", bad, **overrides)


# --- webdav_server, webdav_client --------------------------------------------------------------------------
DAV = {"webdav_server_tls_cert": A_FILE, "webdav_server_tls_key": A_FILE}
NOT_HUB = {"groups": {"all": [HOST], "jupyterhub": []}}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        (NOT_HUB, "webdav_server_tls_cert"),  # the defaults name a site certificate this host lacks
        ({**NOT_HUB, **DAV}, None),
        ({**NOT_HUB, "webdav_server_tls_self_signed": True}, None),
        ({**NOT_HUB, **DAV, "webdav_server_tls_key": MISSING}, "webdav_server_tls_key"),
        ({**NOT_HUB, **DAV, "webdav_server_tls_cert": A_DIR}, "webdav_server_tls_cert"),
        ({**NOT_HUB, **DAV, "webdav_server_tls_names": ["storage", "no such name"]}, "webdav_server_tls_names"),
        ({**NOT_HUB, **DAV, "webdav_server_tls_names": ["storage.example.org", "10.0.0.5"]}, None),
        # the hub host is a WebDAV server too: its proxy has 443 and 80 already
        (DAV, "webdav_server_https_port"),
        ({**DAV, "webdav_server_https_port": 8443, "webdav_server_http_redirect_port": 0}, None),
        (
            {**DAV, "webdav_server_https_port": 8443, "webdav_server_http_redirect_port": 8081},
            "webdav_server_http_redirect_port",
        ),
        ({**DAV, "webdav_server_http_redirect_port": 0, "jupyterhub_https_port": 8443}, None),
    ],
)
def test_webdav_server(overrides, bad):
    check("webdav_server", bad, **overrides)


DAV_CLIENT = {"webdav_client_url": "https://storage/dav", "hostvars": {HOST: {}, "storage": {}}}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        (DAV_CLIENT, None),
        ({**DAV_CLIENT, "webdav_client_server_cert_host": "storage"}, None),
        ({**DAV_CLIENT, "webdav_client_server_cert_path": "certs/x.crt"}, "webdav_client_server_cert_path"),
        (
            {
                **DAV_CLIENT,
                "webdav_client_server_cert_host": "storage",
                "hostvars": {"storage": {"webdav_server_tls_cert": "/etc/ssl/dav.crt"}},
            },
            "webdav_client_server_cert_path",
        ),
        (
            {
                **DAV_CLIENT,
                "webdav_client_server_cert_host": "storage",
                "webdav_client_server_cert_path": "/etc/ssl/dav.crt",
                "hostvars": {"storage": {"webdav_server_tls_cert": "/etc/ssl/dav.crt"}},
            },
            None,
        ),
        ({**DAV_CLIENT, "webdav_client_server_cert_host": "nowhere"}, "webdav_client_server_cert_host"),
    ],
)
def test_webdav_client(overrides, bad):
    check("webdav_client", bad, **overrides)


# --- hpc_account, job_wrappers ----------------------------------------------------------------------------
HPC = {"hpc_account_hub_from": ["192.0.2.10"]}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        (HPC, None),
        ({**HPC, "hpc_account_slurm_bin_dir": A_DIR}, None),
        ({**HPC, "hpc_account_slurm_bin_dir": MISSING}, "hpc_account_slurm_bin_dir"),
        ({**HPC, "hpc_account_slurm_bin_dir": A_FILE}, "hpc_account_slurm_bin_dir"),
        ({**HPC, "hpc_account_slurm_bin_dir": "usr/bin"}, "hpc_account_slurm_bin_dir"),
        # the gate runs commands only as members of a named group, never as root or system accounts
        ({**HPC, "hpc_account_users_group": "hpcusers", "hpc_account_users_min_uid": 1000}, None),
        ({**HPC, "hpc_account_users_group": "HPC users"}, "hpc_account_users_group"),
        ({**HPC, "hpc_account_users_group": "hpcusers", "hpc_account_users_min_uid": 0}, "hpc_account_users_min_uid"),
        ({**HPC, "hpc_account_users_min_uid": 999}, "hpc_account_users_min_uid"),
    ],
)
def test_hpc_account(overrides, bad):
    check("hpc_account", bad, **overrides)


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        ({}, None),
        ({"job_wrappers_maintenance_file": "/srv/cluster/maintenance"}, None),
        ({"job_wrappers_maintenance_file": "maintenance"}, "job_wrappers_maintenance_file"),
        ({"job_wrappers_maintenance_file": "/etc/clusterhub/main tenance"}, "job_wrappers_maintenance_file"),
        ({"job_wrappers_maintenance_file": "/etc/$x"}, "job_wrappers_maintenance_file"),
    ],
)
def test_job_wrappers(overrides, bad):
    check("job_wrappers", bad, **overrides)


# --- notebook_env, notebook_images, docker_engine, users ----------------------------------------------------
@pytest.mark.parametrize(
    ("role", "overrides", "bad"),
    [
        ("notebook_env", {}, None),
        ("notebook_env", {"notebook_env_requirements_file": MISSING}, "notebook_env_requirements_file"),
        ("notebook_env", {"notebook_env_requirements_file": A_DIR}, "notebook_env_requirements_file"),
        ("notebook_env", {"notebook_env_venv": "opt/jupyter"}, "notebook_env_venv"),
        ("notebook_env", {"notebook_env_venv": "/"}, "notebook_env_venv"),
        ("notebook_images", {}, None),
        ("notebook_images", {"notebook_images_sif_dir": "images"}, "notebook_images_sif_dir"),
        ("notebook_images", {"notebook_images_build_tmpdir": "/"}, "notebook_images_build_tmpdir"),
        ("notebook_images", {"notebook_images_controller_dir": "cache"}, "notebook_images_controller_dir"),
        ("notebook_images", {"notebook_images_controller_dir": "/tmp/images"}, None),
        ("notebook_images", {"notebook_images_docker_prefix": ""}, None),
        ("notebook_images", {"notebook_images_docker_prefix": "clusterhub"}, "notebook_images_docker_prefix"),
        ("notebook_images", {"notebook_images_docker_prefix": "Site/"}, "notebook_images_docker_prefix"),
        ("notebook_images", {"notebook_images_list": [{"name": "My Image"}]}, "notebook_images_list"),
        ("notebook_images", {"notebook_images_list": [{"name": "x"}, {"name": "x"}]}, "notebook_images_list"),
        ("notebook_images", {"notebook_images_list": [{"name": "x", "engines": ["podman"]}]}, "notebook_images_list"),
        ("docker_engine", {}, None),
        ("docker_engine", {"docker_engine_images_dir": "cache"}, "docker_engine_images_dir"),
        ("docker_engine", {"docker_engine_images_dir": "/var"}, "docker_engine_images_dir"),
        ("users", {}, None),
        ("users", {"users_home_root": "home"}, "users_home_root"),
        ("users", {"users_home_root": "/home/a b"}, "users_home_root"),
    ],
)
def test_paths(role, overrides, bad):
    check(role, bad, **overrides)


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        ({}, None),
        ({"apptainer_config": {"mount hostfs": "yes"}}, "may not turn 'mount hostfs' on"),
        ({"apptainer_config": {"mount hostfs": "no"}}, None),
        ({"apptainer_bind_paths": ["/etc/hosts", "relative/path"]}, "apptainer_bind_paths entries must be absolute"),
        ({"apptainer_bind_paths": ["/etc/hosts", "/srv/data:/data:ro"]}, None),
    ],
)
def test_apptainer_settings(overrides, bad):
    """The hardened configuration's rules (moved here from the lab's bad-inventory runs). The node's /dev/fuse
    check reads this machine's device, whatever its mode here: only the settings' own messages count."""
    messages = [m for m in fail_messages("apptainer", **overrides) if "/dev/fuse" not in m]
    if bad is None:
        assert messages == []
    else:
        assert any(bad in message for message in messages), messages


def image(mirror: str | None) -> dict[str, Any]:
    debootstrap = {"suite": "trixie"} | ({"mirror": mirror} if mirror is not None else {})
    return {"name": "base", "debootstrap": debootstrap}


@pytest.mark.parametrize(
    ("mirror", "valid"),
    [
        ("http://deb.debian.org/debian", True),
        ("https://mirror.example.org/debian/", True),
        ("file:///srv/mirror/debian", True),
        (None, True),  # the module's default mirror
        ("deb.debian.org/debian", False),
        ("ftp://deb.debian.org/debian", False),
        ("http://bad host/debian", False),
        ("file://relative", False),
    ],
)
def test_notebook_images_mirrors(mirror, valid):
    check(
        "notebook_images",
        None if valid else "notebook_images_list",
        notebook_images_list=[image(mirror)],
        groups={"all": [HOST], "notebook_image_builders": [HOST]},
    )


# --- nvidia_driver, nvidia_container_toolkit, slurm ----------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        ({}, None),
        ({"nvidia_driver_debian_mirror": "http://mirror.example.org/debian"}, None),
        ({"nvidia_driver_debian_mirror": "mirror.example.org/debian"}, "nvidia_driver_debian_mirror"),
        ({"nvidia_driver_debian_mirror": "http://mirror example/debian"}, "nvidia_driver_debian_mirror"),
        ({"nvidia_driver_cuda_repo_url": "ftp://mirror/cuda"}, "nvidia_driver_cuda_repo_url"),
        ({"nvidia_driver_cuda_repo_key_url": "3bf863cc.pub"}, "nvidia_driver_cuda_repo_key_url"),
        ({"nvidia_driver_debian_suites": []}, "nvidia_driver_debian_suites"),
        ({"nvidia_driver_debian_suites": ["trixie main"]}, "nvidia_driver_debian_suites"),
    ],
)
def test_nvidia_driver(overrides, bad):
    check("nvidia_driver", bad, **overrides)


CTK = {"nvidia_container_toolkit_install": False}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        (CTK, None),
        ({**CTK, "nvidia_container_toolkit_repo_url": "nvidia.github.io/x"}, "nvidia_container_toolkit_repo_url"),
        ({**CTK, "nvidia_container_toolkit_repo_key_url": "gpgkey"}, "nvidia_container_toolkit_repo_key_url"),
        ({**CTK, "nvidia_container_toolkit_cdi_spec": "nvidia.yaml"}, "nvidia_container_toolkit_cdi_spec"),
        (
            {**CTK, "nvidia_container_toolkit_docker_daemon_json": "daemon.json"},
            "nvidia_container_toolkit_docker_daemon_json",
        ),
        ({**CTK, "nvidia_container_toolkit_apptainer_conf": "a.conf"}, "nvidia_container_toolkit_apptainer_conf"),
        ({**CTK, "nvidia_container_toolkit_cli_path": "nvidia-container-cli"}, "nvidia_container_toolkit_cli_path"),
        ({**CTK, "nvidia_container_toolkit_runtime_path": "/usr/bin/nvidia-container-runtime"}, None),
        ({**CTK, "nvidia_container_toolkit_runtime_path": "nvidia runtime"}, "nvidia_container_toolkit_runtime_path"),
    ],
)
def test_nvidia_container_toolkit(overrides, bad):
    check("nvidia_container_toolkit", bad, **overrides)


SLURM = {
    "groups": {"all": ["ctl", "node1"], "slurm_controller": ["ctl"], "slurm_compute": ["node1"], "slurm_submit": []},
    "hostvars": {
        "ctl": {"inventory_hostname_short": "ctl"},
        "node1": {"inventory_hostname_short": "node1", "slurm_node": {"cpus": 4, "memory_mb": 8192}},
    },
    "inventory_hostname": "ctl",
}


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        (SLURM, None),
        ({**SLURM, "slurm_conf_template": A_FILE}, None),  # a site's own, by absolute path
        ({**SLURM, "slurm_conf_template": "etc/slurm/nothing.conf.j2"}, "slurm_conf_template"),
        ({**SLURM, "slurm_conf_template": MISSING}, "slurm_conf_template"),
        ({**SLURM, "slurm_state_save_location": "slurmctld"}, "slurm_state_save_location"),
        ({**SLURM, "slurm_conf_config": {"SlurmdPort": 6817}}, "SlurmdPort"),
        ({**SLURM, "slurm_conf_config": {"SlurmctldPort": "6817-6820", "SlurmdPort": 6818}}, "SlurmctldPort"),
        ({**SLURM, "slurm_conf_config": {"SlurmctldPort": "6817-6820", "SlurmdPort": 6821}}, "slurm_dbd_port (6819)"),
        (
            {**SLURM, "slurm_conf_config": {"SlurmctldPort": "6817-6820", "SlurmdPort": 6821}, "slurm_dbd_port": 16819},
            None,
        ),
        ({**SLURM, "slurm_conf_config": {"SlurmctldPort": 70000}}, "SlurmctldPort"),
        ({**SLURM, "slurm_conf_config": {"SlurmdPort": "x"}}, "SlurmdPort"),
        # accounting: one slurmdbd host, its port and database, the accounts sacctmgr will be given
        ({**SLURM, "groups": {**SLURM["groups"], "slurm_dbd": ["ctl"]}}, None),
        ({**SLURM, "groups": {**SLURM["groups"], "slurm_dbd": ["ctl", "node1"]}}, "slurm_dbd_group"),
        ({**SLURM, "slurm_dbd_port": 6817}, "slurm_dbd_port"),
        ({**SLURM, "slurm_dbd_port": 6818}, "slurm_dbd_port"),
        ({**SLURM, "slurm_dbd_port": 0}, "slurm_dbd_port"),
        ({**SLURM, "slurm_dbd_database": "acct`; DROP DATABASE mysql; --"}, "slurm_dbd_database"),
        ({**SLURM, "slurm_accounts": [{"name": "physics", "users": ["ada"]}]}, None),
        ({**SLURM, "slurm_accounts": [{"name": "Physics"}]}, "slurm_accounts: account 'Physics'"),
        ({**SLURM, "slurm_accounts": [{"name": "ta", "parent": "physics"}]}, "slurm_accounts: account 'ta': parent"),
        ({**SLURM, "slurm_accounts": [{"name": "p", "users": ["ada;id"]}]}, "slurm_accounts: account 'p': user"),
    ],
)
def test_slurm(overrides, bad):
    check("slurm", bad, **overrides)
