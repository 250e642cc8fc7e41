"""The one thing a starting server tells the hub: the port it listens on.

batchspawner-singleuser picks a free port on the node and POSTs {"port": N} to /hub/api/batchspawner with the
server's API token. batchspawner's own handler sets *any* attribute the body names on the spawner of that token
(exec_prefix, batch_cancel_cmd, ip, ...), and the hub runs some of those through a shell: any code a user runs
in their job (a notebook, a package's setup) could make the hub run commands as its own account, or point the
user's route elsewhere at any time. This handler replaces it at the same URL: the body is exactly {"port": N}
with 1 <= N <= 65535, the token must be the API token of one of the user's servers, and only while that server
is being started; anything else is refused (400, 403, 409) and logged. `accept` is plain logic, unit-tested.
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

PATH = r"/api/batchspawner"


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def accept(spawners, token: str, body) -> tuple[object, int]:
    """(the spawner of `token` among `spawners`, the port it reported); Refused says why not."""
    spawner = next((s for s in spawners if token and s.api_token == token), None)
    if spawner is None:
        raise Refused(403, "this token belongs to none of your servers")
    if not isinstance(body, dict) or set(body) != {"port"}:
        raise Refused(400, 'a starting server reports its port and nothing else: {"port": 1-65535}')
    port = body["port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise Refused(400, f"port must be a whole number from 1 to 65535, not {str(port)[:20]!r}")
    if getattr(spawner, "pending", None) != "spawn":
        raise Refused(409, "the server is not being started: its port is set once, while it starts")
    return spawner, port


class PortReportHandler(APIHandler):
    @web.authenticated
    def post(self):
        user = self.current_user
        spawners = list(getattr(user, "spawners", {}).values())
        try:
            spawner, port = accept(spawners, self.get_auth_token(), self.get_json_body())
        except Refused as e:
            self.log.warning("Port report for %s refused: %s", getattr(user, "name", user), e.message)
            raise web.HTTPError(e.status, e.message) from None
        spawner.port = port
        self.set_status(201)
        self.finish(json.dumps({"message": "port recorded"}))


def install() -> None:
    """Put this handler in place of batchspawner's (registered when batchspawner is imported), once."""
    default_handlers[:] = [h for h in default_handlers if h[0] != PATH]
    default_handlers.append((PATH, PortReportHandler))
