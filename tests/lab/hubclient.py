"""A small client for the lab hub: log in as a person does, get an API token, drive servers.

Used by the lab tests and by bench/. Talks only to the hub published on the build host's loopback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import uuid

import requests
import websocket

HUB_URL = os.environ.get("CLUSTERHUB_HUB_URL", f"https://localhost:{os.environ.get('CLUSTERHUB_LAB_HUB_PORT', '8443')}")


def lab_certificate(prefix: str = os.environ.get("CLUSTERHUB_LAB_PREFIX", "chlab")) -> str:
    """The lab hub's self-signed certificate, copied out of the hub container, to verify TLS against."""
    pem = subprocess.run(
        ["docker", "exec", f"{prefix}-hub", "cat", "/etc/jupyterhub/tls/hub.crt"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".crt", delete=False) as f:
        f.write(pem)
    return f.name


def parameterised_notebook(*sources: str) -> str:
    """A Python notebook (JSON text) whose first cell, tagged `parameters`, sets n = 1, then one code cell per
    source: what the notebook-run tests execute."""
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}
    cells = [{**cell, "metadata": {"tags": ["parameters"]}, "source": "n = 1"}]
    cells += [{**cell, "source": source} for source in sources]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return json.dumps({"cells": cells, "metadata": {"kernelspec": kernelspec}, "nbformat": 4, "nbformat_minor": 5})


class StartFailed(RuntimeError):
    """A start that failed: `status` of the spawn request (201/202 when it failed later) and what the user read."""

    def __init__(self, status: int, message: str):
        super().__init__(f"start failed (spawn request HTTP {status}): {message}")
        self.status = status
        self.message = message


def _api_message(r: requests.Response) -> str:
    try:
        return str(r.json().get("message", r.text[:500]))
    except ValueError:
        return r.text[:500]


class Hub:
    def __init__(self, user: str, password: str, url: str = HUB_URL, verify: str | bool = True):
        self.url = url.rstrip("/")
        self.user = user
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace `verify`
        self.session.verify = verify
        self.login(password)
        xsrf = self.session.cookies.get("_xsrf", "")
        r = self.session.post(
            f"{self.url}/hub/api/users/{user}/tokens",
            json={"note": "clusterhub lab test", "expires_in": 3600},
            headers={"X-XSRFToken": xsrf},
        )
        r.raise_for_status()
        self.token = r.json()["token"]
        self.api = requests.Session()
        self.api.trust_env = False
        self.api.verify = verify
        self.api.headers["Authorization"] = f"token {self.token}"

    def login(self, password: str) -> requests.Response:
        page = self.session.get(f"{self.url}/hub/login")
        page.raise_for_status()
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        data = {"username": self.user, "password": password}
        if xsrf:
            data["_xsrf"] = xsrf.group(1)
        r = self.session.post(f"{self.url}/hub/login?next=", data=data, allow_redirects=False)
        if r.status_code != 302:
            raise RuntimeError(f"login of {self.user} failed: HTTP {r.status_code}")
        return r

    def get(self, path: str, **kw) -> requests.Response:
        return self.api.get(f"{self.url}/hub/api{path}", **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.api.post(f"{self.url}/hub/api{path}", **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.api.delete(f"{self.url}/hub/api{path}", **kw)

    def server(self, user: str | None = None) -> dict | None:
        info = self.get(f"/users/{user or self.user}").json()
        return info.get("servers", {}).get("")

    def start(self, user: str | None = None, options: dict | None = None, timeout: float = 180) -> float:
        """Start a server and wait until it is ready; return seconds from request to ready."""
        user = user or self.user
        t0 = time.monotonic()
        r = self.post(f"/users/{user}/server", json=options or {})
        if r.status_code not in (201, 202):
            raise StartFailed(r.status_code, _api_message(r))
        while time.monotonic() - t0 < timeout:
            server = self.server(user)
            if server and server.get("ready"):
                return time.monotonic() - t0
            if not server or not (server.get("pending") or server.get("ready")):
                raise StartFailed(r.status_code, self.spawn_failure(user))
            time.sleep(0.2)
        raise TimeoutError(f"server of {user} not ready after {timeout}s")

    def start_watching(self, options: dict | None = None, timeout: float = 180) -> float:
        """Start the user's server and wait as the spawn page does, on one progress event stream (not a GET every
        0.2 s as `start`); return seconds from request to ready."""
        t0 = time.monotonic()
        r = self.post(f"/users/{self.user}/server", json=options or {})
        if r.status_code not in (201, 202):
            raise StartFailed(r.status_code, _api_message(r))
        while time.monotonic() - t0 < timeout:
            event = self._last_progress(self.user, read_timeout=min(60.0, timeout))
            if event.get("ready"):
                return time.monotonic() - t0
            if event.get("failed"):
                raise StartFailed(r.status_code, event.get("message", ""))
            server = self.server()  # the stream ended on neither (no longer pending): the server's record says
            if server and server.get("ready"):
                return time.monotonic() - t0
            if not server or not server.get("pending"):
                raise StartFailed(r.status_code, event.get("message") or "the server is neither starting nor up")
        raise TimeoutError(f"server of {self.user} not ready after {timeout}s")

    def _last_progress(self, user: str, read_timeout: float = 15) -> dict:
        """The hub's progress stream of the user's server, read until it says ready or failed, or ends: that event,
        or the last one ({"message": "HTTP <status>"} when the hub refused the stream)."""
        r = self.get(f"/users/{user}/server/progress", stream=True, timeout=(10, read_timeout))
        event = {"message": f"HTTP {r.status_code}"}
        with r:
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event.get("failed") or event.get("ready"):
                        break
        return event

    def spawn_failure(self, user: str | None = None) -> str:
        """What the spawn page shows for the last failed start (the hub's progress stream: "Spawn failed: ...")."""
        return self._last_progress(user or self.user).get("message", "")

    def stop(self, user: str | None = None, timeout: float = 60) -> None:
        user = user or self.user
        r = self.delete(f"/users/{user}/server")
        if r.status_code not in (202, 204, 400):
            r.raise_for_status()
        deadline = time.monotonic() + timeout
        while self.server(user) and time.monotonic() < deadline:
            time.sleep(0.3)

    def user_get(self, path: str, **kw) -> requests.Response:
        """GET on the user's own server through the proxy, authenticated by the API token."""
        return self.api.get(f"{self.url}/user/{self.user}{path}", **kw)

    def user_post(self, path: str, **kw) -> requests.Response:
        return self.api.post(f"{self.url}/user/{self.user}{path}", **kw)

    def run_code(self, code: str, timeout: float = 60) -> str:
        """Start a Python kernel on the user's server, run code, return its stdout; then shut the kernel down."""
        r = self.user_post("/api/kernels", json={"name": "python3"})
        r.raise_for_status()
        kernel = r.json()["id"]
        ws_url = self.url.replace("https://", "wss://") + f"/user/{self.user}/api/kernels/{kernel}/channels"
        ssl = {"ca_certs": self.api.verify} if isinstance(self.api.verify, str) else {}
        ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {self.token}"], sslopt=ssl, timeout=timeout
        )
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": self.user,
                        "session": uuid.uuid4().hex,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                    },
                }
            )
        )
        out = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "stream":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    raise RuntimeError("kernel error: " + "\n".join(msg["content"]["traceback"]))
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
            raise TimeoutError("no answer from the kernel")
        finally:
            ws.close()
            self.api.delete(f"{self.url}/user/{self.user}/api/kernels/{kernel}")
