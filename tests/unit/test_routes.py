"""The proxy route check (src/clusterhub/hub/routes.py): after the proxy restarts with an empty table, the
routes of ready servers and running services are put back through JupyterHub's check_routes; a whole
table, servers still starting and an unreachable proxy change nothing.

The proxy is a fake with configurable-http-proxy's table shape ({routespec: {"target", "data"}}); its
check_routes records what the hub would have been asked to repair."""

import asyncio
import logging
from types import SimpleNamespace

from clusterhub.hub import in_hub
from clusterhub.hub.routes import RouteCheck, lost_routes

# configurable-http-proxy's table right after a restart with --default-target: its default route only
RESTARTED = {"/": {"routespec": "/", "target": "http://127.0.0.1:8081", "data": {}}}


def spawner(user, name="", ready=True):
    spec = f"/user/{user}/{name + '/' if name else ''}"
    return SimpleNamespace(ready=ready, proxy_spec=spec, server=SimpleNamespace(host="http://node1:40000"))


def user(name, *spawners):
    return SimpleNamespace(name=name, spawners={s.proxy_spec: s for s in spawners})


def route(spec, **data):
    return {"routespec": spec, "target": "http://node1:40000", "data": data}


def table(users):
    routes = dict(RESTARTED)
    for u in users.values():
        for s in u.spawners.values():
            if s.ready:
                routes[s.proxy_spec] = route(s.proxy_spec, user=u.name)
    return routes


class FakeProxy:
    def __init__(self, routes):
        self.routes = routes
        self.repairs = []
        self.down = False

    async def get_all_routes(self):
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        return dict(self.routes)

    async def check_routes(self, users, services, routes):
        self.repairs.append(sorted(lost_routes(users, services, routes)))
        self.routes = table(users)


USERS = {
    "alice": user("alice", spawner("alice")),
    "bob": user("bob", spawner("bob"), spawner("bob", "gpu")),
    "carol": user("carol", spawner("carol", ready=False)),  # still starting: no route expected yet
}
SERVICES = {
    "runs": SimpleNamespace(name="runs", server=object(), proxy_spec="/services/runs/"),
    "idle-culler": SimpleNamespace(name="idle-culler", server=None, proxy_spec="/services/idle-culler/"),
}


def check(proxy, services=None, logger=None):
    return RouteCheck(proxy, lambda: USERS, lambda: services or {}, logger=logger or logging.getLogger("t"))


def test_a_whole_table_is_left_alone():
    proxy = FakeProxy(table(USERS))
    assert asyncio.run(check(proxy).check()) == []
    assert proxy.repairs == []


def test_a_restarted_proxy_gets_every_ready_servers_route_back():
    proxy = FakeProxy(dict(RESTARTED))
    c = check(proxy)
    assert sorted(asyncio.run(c.check())) == ["/user/alice/", "/user/bob/", "/user/bob/gpu/"]
    assert proxy.repairs == [["/user/alice/", "/user/bob/", "/user/bob/gpu/"]]
    assert "/user/carol/" not in proxy.routes  # a server still starting gets its route from its own start
    assert asyncio.run(c.check()) == []  # repaired: the next look changes nothing
    assert len(proxy.repairs) == 1


def test_one_lost_route_among_many_is_noticed():
    routes = table(USERS)
    del routes["/user/bob/gpu/"]
    routes["/user/bob/gpu/"] = route("/user/bob/gpu/")  # a route without the hub's data is not the server's
    assert lost_routes(USERS, {}, routes) == ["/user/bob/gpu/"]


def test_a_running_service_without_its_route_is_lost_and_a_stopped_one_is_not():
    routes = table(USERS)
    assert lost_routes(USERS, SERVICES, routes) == ["/services/runs/"]
    routes["/services/runs/"] = route("/services/runs/", service="runs")
    assert lost_routes(USERS, SERVICES, routes) == []


def test_an_unreachable_proxy_is_said_once_and_checked_again(caplog):
    proxy = FakeProxy(dict(RESTARTED))
    proxy.down = True
    c = check(proxy)
    with caplog.at_level(logging.INFO, logger="t"):
        assert asyncio.run(c.check()) == []
        assert asyncio.run(c.check()) == []
        proxy.down = False
        assert len(asyncio.run(c.check())) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("does not answer" in m for m in messages) == 1
    assert "The proxy's API answers again" in messages
    assert any("lacks 3 route(s)" in m and "/user/alice/" in m for m in messages)


def test_nothing_starts_outside_a_running_hub():
    calls = []

    async def probe(app):
        calls.append(app)

    in_hub.start("probe", probe)  # no event loop: jupyterhub --generate-config, upgrade-db

    async def inside_a_loop_without_a_hub():
        in_hub.start("probe", probe)
        await asyncio.sleep(0)

    asyncio.run(inside_a_loop_without_a_hub())
    assert calls == []
    assert not any(name == "probe" for _, name in in_hub._TASKS)
