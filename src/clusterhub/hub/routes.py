"""The proxy's routes, checked every few seconds, and put back when the proxy lost them.

configurable-http-proxy keeps its routes in memory. When it restarts (a crash, an upgrade, systemd's
Restart=always) its table holds only its default route and every running server is unreachable until the hub
adds the routes again, which JupyterHub itself does only with its last-activity update (every
last_activity_interval: issue 16 measured 49 s). This check reads the table (one GET on the proxy's API, on
loopback) every interval; when a ready server or a service lacks its route, JupyterHub's own check_routes
adds what is missing. While the proxy does not answer (it is restarting) the check says so once and waits.
start_with_hub() runs it in the hub's process; the rest is plain logic, unit-tested with a fake proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from . import in_hub

log = logging.getLogger(__name__)


def lost_routes(users: Mapping, services: Mapping, routes: Mapping[str, dict]) -> list[str]:
    """The routes of the hub's ready servers and running services that the proxy's table lacks."""
    user_routes = {spec for spec, route in routes.items() if "user" in route.get("data", {})}
    service_routes = {route["data"]["service"] for route in routes.values() if "service" in route.get("data", {})}
    lost = [
        spawner.proxy_spec
        for user in users.values()
        for spawner in user.spawners.values()
        if spawner.ready and spawner.proxy_spec not in user_routes
    ]
    lost += [s.proxy_spec for s in services.values() if s.server is not None and s.name not in service_routes]
    return lost


class RouteCheck:
    """One look at the proxy's table; `users` and `services` give the hub's current ones."""

    def __init__(self, proxy, users: Callable[[], Mapping], services: Callable[[], Mapping], logger=log):
        self.proxy = proxy
        self.users = users
        self.services = services
        self.log = logger
        self.unreachable = False

    async def check(self) -> list[str]:
        """The routes put back (none when the table was whole or the proxy did not answer)."""
        try:
            routes = await self.proxy.get_all_routes()
        except Exception as e:  # refused while it restarts, an HTTP error from a proxy still starting
            if not self.unreachable:
                self.log.warning("The proxy's API does not answer (%s); checking its routes again shortly", e)
            self.unreachable = True
            return []
        if self.unreachable:
            self.log.info("The proxy's API answers again")
            self.unreachable = False
        users, services = self.users(), self.services()
        lost = lost_routes(users, services, routes)
        if lost:
            self.log.warning(
                "The proxy lacks %d route(s) of running servers or services (it restarted or lost them): %s; "
                "adding them back",
                len(lost),
                ", ".join(sorted(lost)[:10]) + (" …" if len(lost) > 10 else ""),
            )
            await self.proxy.check_routes(users, services, routes)
        return lost


async def _watch(app, interval: float) -> None:
    await in_hub.hub_up(app)
    check = RouteCheck(app.proxy, lambda: app.users, lambda: app._service_map, logger=app.log)
    app.log.info("Proxy route check every %s s", interval)
    await in_hub.every(interval, check.check, "Proxy route check", app.log)


def start_with_hub(interval: float) -> None:
    """Start the check in the JupyterHub process that is loading its configuration (jupyterhub_config.py
    calls this); does nothing elsewhere."""
    in_hub.start("proxy routes", lambda app: _watch(app, interval))
