"""Remote HPC mode's WebDAV in the lab: a user's space mounted on a node, closed to everyone else.

The storage server is lab host `storage` (webdav_server), the client is `node1` (webdav_client); both are
reached through lab_host(), so CLUSTERHUB_LAB_PREFIX picks the containers. The WebDAV passwords come from
the lab inventory. No command sent to a host carries a password in clear: it travels base64-encoded and
is decoded into a pipe, so the process-list checks below cannot be fooled (or spoiled) by the test itself.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import uuid

import pytest
import yaml
from conftest import ROOT, lab_host, recap_changed, run_playbook, wait_for

pytestmark = pytest.mark.webdav

PASSWORDS = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/webdav.yml").read_text(encoding="utf-8"))[
    "lab_webdav_passwords"
]
CA = "/etc/davfs2/certs/clusterhub-webdav.pem"
MOUNT = "/usr/local/bin/clusterhub-webdav-mount"
UMOUNT = "/usr/local/bin/clusterhub-webdav-umount"


def share(user: str) -> str:
    return f"/home/{user}/WebDAV-Share"


def piped(secret: str) -> str:
    """A shell fragment that writes secret to stdout without it appearing on any command line."""
    return f"echo {base64.b64encode(secret.encode()).decode()} | base64 -d"


def as_user(user: str, command: str) -> str:
    return f"runuser -u {user} -- sh -c {shlex.quote(command)}"


@pytest.fixture(scope="module")
def node():
    return lab_host("node1")


# An HTTP request from a lab host with python3 (there on every host Ansible manages): the credentials come
# on stdin, the server is verified against the certificate the client role trusts, redirects are not followed.
REQUEST = f"""
import base64, http.client, json, ssl, sys
scheme, method, path = sys.argv[1:4]
headers = {{"Depth": "1"}}
auth = sys.stdin.read()
if auth:
    headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
if scheme == "https":
    conn = http.client.HTTPSConnection("storage", context=ssl.create_default_context(cafile="{CA}"))
else:
    conn = http.client.HTTPConnection("storage")
conn.request(method, path, headers=headers)
reply = conn.getresponse()
body = reply.read().decode(errors="replace")
print(json.dumps({{"status": reply.status, "headers": {{k.lower(): v for k, v in reply.getheaders()}}, "body": body}}))
"""


def request(node, method: str, path: str, user: str | None = None, password: str = "", *, scheme="https") -> dict:
    """status, headers (lower-case names) and body of one request to the storage server from node."""
    credentials = piped(f"{user}:{password}") if user else "true"
    out = node.check_output(f"{credentials} | python3 -c {shlex.quote(REQUEST)} {scheme} {method} {path}")
    return json.loads(out)


def status(node, method: str, path: str, user: str | None = None, password: str = "") -> int:
    return request(node, method, path, user, password)["status"]


def mounted(node, user: str) -> bool:
    return node.run(f"findmnt -n --mountpoint {share(user)}").rc == 0


@pytest.fixture
def alice_mounted(node):
    """alice's space mounted by alice herself (as her job would), unmounted afterwards."""
    result = node.run(as_user("alice", f"{MOUNT} alice {share('alice')}"))
    assert result.rc == 0, result.stderr
    yield
    node.run(UMOUNT + " " + share("alice"))


def test_a_file_alice_writes_lands_in_her_space_on_the_server(node, storage, alice_mounted):
    name = f"note-{uuid.uuid4().hex[:8]}.txt"
    node.check_output(as_user("alice", f"echo written-on-node1 > {share('alice')}/{name}"))
    # listing works too (on kernels >= 6.16 only with davfs2's buf_size 64)
    assert name in node.check_output(as_user("alice", f"ls {share('alice')}"))
    on_server = f"/srv/webdav/alice/{name}"
    wait_for(lambda: storage.file(on_server).exists, timeout=30, what=f"{on_server} on the storage server")
    server_file = storage.file(on_server)
    assert server_file.user == "www-data" and server_file.group == "www-data"
    assert wait_for(lambda: server_file.content_string == "written-on-node1\n", timeout=30, what="the upload")
    # nobody else on the node may enter the mounted space
    assert node.run(as_user("bob", f"ls {share('alice')}")).rc != 0


def test_unmount_waits_for_the_upload_and_leaves_nothing_mounted(node, storage):
    assert node.run(as_user("alice", f"{MOUNT} alice {share('alice')}")).rc == 0
    name = f"last-{uuid.uuid4().hex[:8]}.txt"
    node.check_output(as_user("alice", f"echo saved-at-job-end > {share('alice')}/{name}"))
    result = node.run(as_user("alice", f"{UMOUNT} {share('alice')}"))
    assert result.rc == 0, result.stderr
    assert not mounted(node, "alice")
    assert storage.file(f"/srv/webdav/alice/{name}").content_string == "saved-at-job-end\n"
    # a second unmount is a no-op, not an error
    assert node.run(as_user("alice", f"{UMOUNT} {share('alice')}")).rc == 0


def test_root_mounts_for_a_user_and_the_mount_is_the_users(node):
    result = node.run(f"{MOUNT} bob {share('bob')}")
    try:
        assert result.rc == 0, result.stderr
        assert node.check_output("ps -o user= -C mount.davfs").split() == ["bob"]
        assert node.file(share("bob")).user == "bob"
    finally:
        assert node.run(f"{UMOUNT} {share('bob')}").rc == 0
    assert not mounted(node, "bob")


@pytest.mark.parametrize(
    ("caller", "args", "reason"),
    [
        ("bob", f"alice {share('alice')}", "may not mount the WebDAV space of alice"),
        ("bob", f"bob {share('alice')}", "is not inside the home of bob"),
        ("bob", "bob /tmp/elsewhere", "is not inside the home of bob"),
        ("bob", "bob /home/bob/escape/x", "is not inside the home of bob"),
        ("bob", "bob /home/bob/not-declared", "has no davfs2 entry in /etc/fstab"),
        ("root", "nosuchuser /home/nosuchuser/WebDAV-Share", "no such user"),
    ],
)
def test_the_mount_helper_refuses(node, caller, args, reason):
    node.run("runuser -u bob -- ln -sfn /tmp /home/bob/escape")
    result = node.run(as_user(caller, f"{MOUNT} {args}") if caller != "root" else f"{MOUNT} {args}")
    assert result.rc == 1 and reason in result.stderr, result.stderr
    assert not mounted(node, "alice")


def test_bob_cannot_unmount_alices_space(node, alice_mounted):
    result = node.run(as_user("bob", f"{UMOUNT} {share('alice')}"))
    assert result.rc == 1 and "not inside your home" in result.stderr
    assert mounted(node, "alice")


def test_each_space_is_open_to_its_own_user_only(node):
    alice, bob = PASSWORDS["alice"], PASSWORDS["bob"]
    assert status(node, "PROPFIND", "/dav/alice/", "alice", alice) == 207
    assert status(node, "PROPFIND", "/dav/alice/", "bob", bob) in (401, 403)
    assert status(node, "GET", "/dav/alice/from-nobody", "bob", bob) in (401, 403)
    assert status(node, "PUT", "/dav/alice/from-bob", "bob", bob) in (401, 403)
    assert status(node, "PROPFIND", "/dav/alice/", "alice", bob) == 401
    assert status(node, "PROPFIND", "/dav/alice/") == 401
    # the lab's login password is not the WebDAV password
    assert status(node, "PROPFIND", "/dav/alice/", "alice", "alice-in-the-lab") == 401
    assert status(node, "PROPFIND", "/dav/bob/", "bob", bob) == 207


def test_nothing_else_is_served_and_plain_http_only_redirects(node):
    redirect = request(node, "GET", "/dav/alice/", scheme="http")
    assert redirect["status"] == 301 and redirect["headers"]["location"] == "https://storage/dav/alice/"
    for path in ("/", "/dav/", "/server-status", "/icons/", "/dav/nobody/"):
        assert status(node, "GET", path) in (403, 404), path
    # a collection is never rendered as an HTML listing, even for its owner
    listing = request(node, "GET", "/dav/alice/", "alice", PASSWORDS["alice"])
    assert listing["status"] in (403, 404) and "Index of" not in listing["body"]
    headers = request(node, "GET", "/")["headers"]
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    assert headers["server"] == "Apache"  # no version


def test_the_password_is_in_no_process_list_log_or_readable_file(node, storage, alice_mounted):
    password = PASSWORDS["alice"]
    find = f"{piped(password + chr(10))} | grep -F -f -"
    everywhere = "/ --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev --exclude-dir=WebDAV-Share"
    # the process list as another user sees it, and as root, while the space is mounted
    assert "mount.davfs" in node.check_output(as_user("bob", "ps -ef"))
    for listing in (as_user("bob", "ps -ef"), "ps -eo args", "cat /proc/[0-9]*/cmdline"):
        assert node.run(f"{listing} | {find}").rc == 1, listing
    # the journal and the log files of both hosts
    for host in (node, storage):
        assert host.run(f"journalctl --no-pager -o verbose | {find}").rc == 1
        assert host.run(f"{piped(password + chr(10))} | grep -rlsF -f - /var/log").stdout == ""
    # the one file on the node that holds it is alice's own 0600 secrets file (the remote HPC mode's shared
    # account holds none: test_a_shared_account_gets_no_webdav_...); the server keeps a hash only
    holders = node.check_output(f"{piped(password + chr(10))} | grep -rlsF -f - {everywhere}").split()
    assert holders == ["/home/alice/.davfs2/secrets"]
    for holder in holders:
        secrets = node.file(holder)
        assert (secrets.user, secrets.mode) == (holder.split("/")[2], 0o600)
    # (the lab's /home is the cluster's shared file system, mounted on the storage host too: checked above)
    assert storage.run(f"{piped(password + chr(10))} | grep -rlsF -f - {everywhere} --exclude-dir=home").stdout == ""
    htpasswd = storage.file("/etc/apache2/clusterhub-webdav.htpasswd")
    assert (htpasswd.user, htpasswd.group, htpasswd.mode) == ("root", "www-data", 0o640)
    assert re.search(r"^alice:\$2[aby]\$", htpasswd.content_string, re.M)  # bcrypt


SHARED = "/home/jupyterhpc"
SHARED_POINT = f"{SHARED}/WebDAV-Share/alice"
OLD_OPTIONS = "user,noauto,rw,_netdev,dir_mode=0700,file_mode=0600"  # as the role writes them


def shared_state(host) -> dict:
    """What of alice's WebDAV the shared account's jobs could reach on host: fstab entries, mounts, password files."""
    find = f"{piped(PASSWORDS['alice'] + chr(10))} | grep -rlsF -f - {SHARED} --exclude-dir=WebDAV-Share"
    return {
        "fstab": host.run(f"findmnt --fstab -rn -o TARGET --types davfs | grep '^{SHARED}/'").stdout.split(),
        "mounted": host.run(f"findmnt -rn -o TARGET | grep '^{SHARED}/'").stdout.split(),
        "passwords": host.run(find).stdout.split(),
    }


@pytest.fixture(scope="module")
def rnode():
    return lab_host("rnode1")


@pytest.mark.security
def test_what_an_earlier_version_left_in_the_shared_account_is_removed_on_the_next_run(rnode):
    """The old shared-account state, made as the old role made it (fstab entry, alice's password in jupyterhpc's
    ~/.davfs2/secrets, her space mounted by jupyterhpc): the next run of playbooks/webdav.yml unmounts it, takes
    it out of /etc/fstab and deletes the password; alice's own entry and password stay."""
    secrets = f"{SHARED}/.davfs2/secrets"
    old_secrets = (
        "umask 077; { echo '# WebDAV credentials of jupyterhpc for davfs2';"
        f' printf \'"%s" alice "%s"\\n\' {SHARED_POINT} "$(cat)"; }} > {secrets}'
    )
    joined = rnode.run("id -nG jupyterhpc").stdout.split()
    if "davfs2" not in joined:  # the old role let the shared account mount (group davfs2)
        rnode.check_output("gpasswd -a jupyterhpc davfs2")
    try:
        rnode.check_output(
            f"echo 'https://storage/dav/alice/ {SHARED_POINT} davfs {OLD_OPTIONS} 0 0' >> /etc/fstab && "
            f"runuser -u jupyterhpc -- install -d -m 0700 {SHARED}/.davfs2 {SHARED}/WebDAV-Share {SHARED_POINT} && "
            f"{piped(PASSWORDS['alice'])} | runuser -u jupyterhpc -- sh -c {shlex.quote(old_secrets)}"
        )
        mount = rnode.run(as_user("jupyterhpc", f"mount {SHARED_POINT} </dev/null"))
        assert mount.rc == 0, mount.stderr
        assert shared_state(rnode) == {"fstab": [SHARED_POINT], "mounted": [SHARED_POINT], "passwords": [secrets]}
        result = run_playbook("playbooks/webdav.yml", "--limit", "rnode1")
        assert result.returncode == 0, result.stdout[-3000:]
        assert shared_state(rnode) == {"fstab": [], "mounted": [], "passwords": []}
        # alice's own space is kept, and so is her password
        assert rnode.run(f"findmnt --fstab -n --mountpoint {share('alice')}").rc == 0
        assert rnode.file("/home/alice/.davfs2/secrets").user == "alice"
        again = run_playbook("playbooks/webdav.yml", "--limit", "rnode1")
        assert again.returncode == 0 and recap_changed(again.stdout) == {"rnode1": 0}, again.stdout[-3000:]
    finally:
        if "davfs2" not in joined:
            rnode.check_output("gpasswd -d jupyterhpc davfs2")
