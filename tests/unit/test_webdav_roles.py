"""webdav_server and webdav_client: their validation rules and rendered configuration, through Ansible's templar.

The assertions of tasks/validate.yml are evaluated exactly as written there, with the role's defaults and
vars, so the table below tests the rules the roles really run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from role_files import trusted

ROOT = Path(__file__).resolve().parents[2]
GOOD_PASSWORD = "correct-horse-battery"


def role_variables(role: str, **overrides: Any) -> dict[str, Any]:
    variables: dict[str, Any] = {"inventory_hostname": "storage", "ansible_managed": "Ansible managed"}
    for part in ("defaults", "vars"):
        variables.update(trusted(yaml.safe_load((ROOT / "roles" / role / part / "main.yml").read_text()) or {}))
    variables.update(overrides)
    return variables


def templar(role: str, **overrides: Any) -> Templar:
    return Templar(loader=DataLoader(), variables=role_variables(role, **overrides))


def render(role: str, template: str, **overrides: Any) -> str:
    text = (ROOT / "roles" / role / "templates" / template).read_text()
    return templar(role, **overrides).template(trust_as_template(text))


def assertions_hold(role: str, **overrides: Any) -> bool:
    """True when every `that` of the asserts of the role's tasks/validate.yml (where `when` holds) is true."""
    tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / "validate.yml").read_text())
    results = []
    for task in tasks:
        if "ansible.builtin.assert" not in task:
            continue
        engine = templar(role, **overrides, **trusted(task.get("vars") or {}))
        when = task.get("when", [])
        if not all(
            engine.template(trust_as_template("{{ (" + condition + ") | bool }}"))
            for condition in ([when] if isinstance(when, str) else when)
        ):
            continue
        that = task["ansible.builtin.assert"]["that"]
        for condition in [that] if isinstance(that, str) else that:
            results.append(engine.template(trust_as_template("{{ (" + condition + ") | bool }}")))
    assert results, f"{role}: no assertions found"
    return all(results)


def users(*entries: dict[str, Any]) -> list[dict[str, Any]]:
    return list(entries)


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        ({}, True),
        ({"webdav_server_users": users({"name": "alice", "password": GOOD_PASSWORD})}, True),
        ({"webdav_server_users": users({"name": "Alice", "password": GOOD_PASSWORD})}, False),
        ({"webdav_server_users": users({"name": "al ice", "password": GOOD_PASSWORD})}, False),
        # the one user-name rule (clusterhub.protocol): a dotted LDAP name the gate and the hub take
        ({"webdav_server_users": users({"name": "j.doe", "password": GOOD_PASSWORD})}, True),
        ({"webdav_server_users": users({"name": ".hidden", "password": GOOD_PASSWORD})}, False),
        ({"webdav_server_users": users({"name": "alice", "password": "short-pass"})}, False),
        ({"webdav_server_users": users({"name": "alice", "password": "twelve chars\nplus"})}, False),
        (
            {
                "webdav_server_users": users(
                    {"name": "alice", "password": GOOD_PASSWORD}, {"name": "alice", "password": GOOD_PASSWORD + "2"}
                )
            },
            False,
        ),
        ({"webdav_server_users": users({"name": "gone", "state": "absent"})}, True),
        ({"webdav_server_users": users({"name": "gone", "state": "present"})}, False),
        ({"webdav_server_url_prefix": "/dav/"}, False),
        ({"webdav_server_url_prefix": "dav"}, False),
        ({"webdav_server_root": "/srv"}, False),
        ({"webdav_server_http_redirect_port": 443}, False),
        ({"webdav_server_http_redirect_port": 0}, True),
        ({"webdav_server_tls_names": []}, False),
    ],
)
def test_server_validation(overrides, valid):
    # the site certificate's files are checked on the server (test_validation_rules.py, test_validation_playbook.py)
    assert assertions_hold("webdav_server", **{"webdav_server_tls_self_signed": True, **overrides}) is valid


CLIENT_OK = {"webdav_client_url": "https://storage/dav"}
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        ({}, False),  # the URL is needed
        (CLIENT_OK, True),
        ({"webdav_client_url": "https://storage:8443/dav"}, True),
        ({"webdav_client_url": "https://storage/dav/"}, False),
        ({"webdav_client_url": "storage/dav"}, False),
        ({**CLIENT_OK, "webdav_client_mount_dir": "../etc"}, False),
        ({**CLIENT_OK, "webdav_client_mount_dir": "a/b"}, False),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "alice", "password": "x"}]}, True),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "j.doe", "password": "x"}]}, True),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "1abc", "password": "x"}]}, False),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "alice", "password": "x\ny"}]}, False),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "alice", "password": "x\ty"}]}, False),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "alice", "password": 'p"w\\ é #'}]}, True),
        (
            {
                **CLIENT_OK,
                "webdav_client_credentials": [{"user": "a", "password": "x"}, {"user": "a", "password": "y"}],
            },
            False,
        ),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "Alice", "password": "x"}]}, False),
        (
            {
                **CLIENT_OK,
                "webdav_client_credentials": [
                    {"user": "a", "password": "x"},
                    {"user": "a", "account": "jupyterhpc", "password": "y"},
                    {"user": "b", "account": "jupyterhpc", "password": "z"},
                ],
            },
            False,  # a shared account: every job of it could read both passwords (refused, see below)
        ),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "a", "account": "hpc", "password": "x"}]}, False),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "a", "account": "a", "password": "x"}]}, True),
        (
            {
                **CLIENT_OK,
                "webdav_client_credentials": [
                    {"user": "a", "account": "hpc", "password": "x"},
                    {"user": "a", "account": "hpc", "password": "y"},
                ],
            },
            False,
        ),
        ({**CLIENT_OK, "webdav_client_credentials": [{"user": "a", "account": "Hpc", "password": "x"}]}, False),
        ({**CLIENT_OK, "webdav_client_server_cert": CERT}, True),
        ({**CLIENT_OK, "webdav_client_server_cert": "not a certificate"}, False),
    ],
)
def test_client_validation(overrides, valid):
    assert assertions_hold("webdav_client", hostvars={"storage": {}}, **overrides) is valid


def test_client_refuses_an_unknown_certificate_host_and_two_certificate_sources():
    ok = {**CLIENT_OK, "hostvars": {"storage": {}}}
    assert assertions_hold("webdav_client", webdav_client_server_cert_host="storage", **ok)
    assert not assertions_hold("webdav_client", webdav_client_server_cert_host="nowhere", **ok)
    assert not assertions_hold(
        "webdav_client", webdav_client_server_cert_host="storage", webdav_client_server_cert=CERT, **ok
    )


def config_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_davfs2_conf_sets_the_buffer_newer_kernels_need_and_says_why():
    text = render("webdav_client", "etc/davfs2/davfs2.conf.j2")
    assert text.startswith("#\n# Ansible managed")
    assert "buf_size 64" in config_lines(text)
    before = text.split("buf_size 64")[0]
    assert "6.16" in before.split("\n\n")[-1] and "Invalid argument" in before
    assert not any(line.startswith("trust_ca_cert") for line in config_lines(text))


def test_davfs2_conf_trusts_the_servers_certificate_and_takes_site_settings():
    text = render(
        "webdav_client",
        "etc/davfs2/davfs2.conf.j2",
        webdav_client_server_cert_host="storage",
        webdav_client_davfs2_config={"buf_size": 128, "cache_size": 200},
    )
    lines = config_lines(text)
    assert "trust_ca_cert /etc/davfs2/certs/clusterhub-webdav.pem" in lines
    assert "buf_size 128" in lines and "buf_size 64" not in lines
    assert "cache_size 200" in lines


def test_davfs2_secrets_line_quotes_the_password():
    credentials = [{"user": "alice", "password": 'pa"ss\\word with space'}]
    text = render(
        "webdav_client",
        "home/davfs2-secrets.j2",
        item="alice",
        __webdav_client_home="/home/alice",
        webdav_client_credentials=credentials,
    )
    assert config_lines(text) == ['"/home/alice/WebDAV-Share" alice "pa\\"ss\\\\word with space"']


def test_webdav_for_a_shared_account_is_refused_with_what_to_do():
    """Every job of a shared account (remote HPC mode's) could read the passwords in its ~/.davfs2/secrets and
    enter the spaces it mounts: the validation refuses it, and says how to get rid of what an earlier run left."""
    credentials = [
        {"user": "alice", "password": "own-a"},
        {"user": "alice", "account": "jupyterhpc", "password": "pw-a"},
        {"user": "bob", "account": "jupyterhpc", "password": "pw-b"},
    ]
    overrides = {**CLIENT_OK, "hostvars": {"storage": {}}, "webdav_client_credentials": credentials}
    assert not assertions_hold("webdav_client", **overrides)
    task = next(
        t
        for t in yaml.safe_load((ROOT / "roles/webdav_client/tasks/validate.yml").read_text())
        if t["name"] == "Refuse WebDAV spaces for shared accounts"
    )
    engine = templar("webdav_client", **overrides, **trusted(task["vars"]))
    message = " ".join(engine.template(trust_as_template(task["ansible.builtin.assert"]["fail_msg"])).split())
    assert message.startswith(
        "webdav_client_credentials gives WebDAV spaces to accounts other than their users' own (alice (account"
        " jupyterhpc), bob (account jupyterhpc))"
    )
    assert "shared-account mode is refused" in message and "re-run playbooks/webdav.yml" in message


def test_spaces_an_earlier_run_declared_and_the_credentials_no_longer_give_are_retired():
    """tasks/retired.yml: a shared account's entries of /etc/fstab (from before the refusal) are retired, the users'
    own are kept, another server's are left alone; the homes searched for old secrets files exclude the users'."""
    fstab = {
        "filesystems": [
            {"source": "https://storage/dav/alice/", "target": "/home/alice/WebDAV-Share"},
            {"source": "https://storage/dav/alice/", "target": "/home/jupyterhpc/WebDAV-Share/alice"},
            {"source": "https://storage/dav/bob/", "target": "/home/jupyterhpc/WebDAV-Share/bob"},
            {"source": "https://storage/dav/carol/", "target": "/home/carol/WebDAV-Share"},  # carol's no longer
            {"source": "https://elsewhere/dav/dave/", "target": "/home/dave/dav"},
        ]
    }
    passwd = {"alice": ["x", "2001", "2001", "", "/home/alice", "/bin/bash"]}
    engine = templar(
        "webdav_client",
        **CLIENT_OK,
        webdav_client_credentials=[{"user": "alice", "password": "own-a"}],
        webdav_client_accounts={"results": [{"ansible_facts": {"getent_passwd": passwd}}]},
        webdav_client_fstab={"rc": 0, "stdout": json.dumps(fstab)},
    )
    retired = engine.template(trust_as_template("{{ __webdav_client_retired | map(attribute='target') | list }}"))
    assert retired == [
        "/home/jupyterhpc/WebDAV-Share/alice",
        "/home/jupyterhpc/WebDAV-Share/bob",
        "/home/carol/WebDAV-Share",
    ]
    homes = engine.template(trust_as_template("{{ __webdav_client_retired_homes }}"))
    assert homes == ["/home/jupyterhpc", "/home/carol"]
    # nothing in /etc/fstab (findmnt exits 1, prints nothing): nothing to retire
    engine = templar("webdav_client", **CLIENT_OK, webdav_client_fstab={"rc": 1, "stdout": ""})
    assert engine.template(trust_as_template("{{ __webdav_client_retired }}")) == []


def test_site_opens_each_space_to_its_own_user_only():
    text = render(
        "webdav_server",
        "etc/apache2/sites-available/clusterhub-webdav.conf.j2",
        webdav_server_users=users(
            {"name": "bob", "password": GOOD_PASSWORD},
            {"name": "alice", "password": GOOD_PASSWORD},
            {"name": "carol", "state": "absent"},
        ),
        webdav_server_limit_request_body=1024,
    )
    for name in ("alice", "bob"):
        block = text.split(f'<Location "/dav/{name}/">')[1].split("</Location>")[0]
        assert "DAV On" in block and f"Require user {name}\n" in block
        assert block.count("Require") == 1
        assert f'Alias "/dav/{name}/" "/srv/webdav/{name}/"' in text
    assert "carol" not in text
    assert text.index("/dav/alice/") < text.index("/dav/bob/")
    assert "LimitRequestBody 1024" in text
    assert '<Location "/">\n        Require all denied' in text
    assert "Redirect permanent / https://storage/" in text
    assert GOOD_PASSWORD not in text


def test_no_plain_http_at_all_when_the_redirect_port_is_zero():
    site = render(
        "webdav_server", "etc/apache2/sites-available/clusterhub-webdav.conf.j2", webdav_server_http_redirect_port=0
    )
    ports = render("webdav_server", "etc/apache2/ports.conf.j2", webdav_server_http_redirect_port=0)
    assert "Redirect" not in site and "<VirtualHost *:443>" in site
    assert config_lines(ports) == ["Listen 443 https"]
    assert config_lines(render("webdav_server", "etc/apache2/ports.conf.j2")) == ["Listen 80", "Listen 443 https"]
