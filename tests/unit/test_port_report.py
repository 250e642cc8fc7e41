"""The port report (src/clusterhub/hub/port_report.py): a starting server's job may tell the hub its port and
nothing else; batchspawner's own handler, which set any attribute the body named, is gone from the hub's API."""

from types import SimpleNamespace

import pytest
from jupyterhub import apihandlers

from clusterhub.hub import spawner  # noqa: F401 -- importing the spawner installs the handler
from clusterhub.hub.port_report import PATH, PortReportHandler, Refused, accept

STARTING = SimpleNamespace(api_token="t-start", pending="spawn", port=0)
RUNNING = SimpleNamespace(api_token="t-run", pending=None, port=40000)


def test_a_starting_server_reports_its_port():
    assert accept([RUNNING, STARTING], "t-start", {"port": 51234}) == (STARTING, 51234)


@pytest.mark.parametrize(
    ("token", "body", "status", "words"),
    [
        # what batchspawner's handler would have set: the commands the hub runs through a shell, the route's host
        ("t-start", {"exec_prefix": "touch /tmp/pwned;"}, 400, "its port and nothing else"),
        ("t-start", {"port": 51234, "batch_cancel_cmd": "id"}, 400, "its port and nothing else"),
        ("t-start", {"ip": "10.0.0.9"}, 400, "its port and nothing else"),
        ("t-start", {"port": "51234; id"}, 400, "whole number from 1 to 65535"),
        ("t-start", {"port": 0}, 400, "whole number from 1 to 65535"),
        ("t-start", {"port": 70000}, 400, "whole number from 1 to 65535"),
        ("t-start", {"port": True}, 400, "whole number from 1 to 65535"),
        ("t-start", [51234], 400, "its port and nothing else"),
        # a server that is up may not move its route (to another user's port on the node, say)
        ("t-run", {"port": 40001}, 409, "not being started"),
        # a token of none of the user's servers (their own API token, a stale one)
        ("t-other", {"port": 51234}, 403, "none of your servers"),
        ("", {"port": 51234}, 403, "none of your servers"),
    ],
)
def test_everything_else_is_refused_and_nothing_is_set(token, body, status, words):
    with pytest.raises(Refused) as refused:
        accept([RUNNING, STARTING], token, body)
    assert refused.value.status == status and words in refused.value.message
    assert (STARTING.port, RUNNING.port) == (0, 40000)
    assert not hasattr(STARTING, "exec_prefix")


def test_the_hubs_api_has_this_handler_at_batchspawners_path_and_no_other():
    routes = [handler for path, handler in apihandlers.default_handlers if path == PATH]
    assert routes == [PortReportHandler]
