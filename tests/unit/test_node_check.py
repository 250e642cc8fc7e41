"""The lost-node check's classification (src/clusterhub/hub/node_check.py): only an answer
about the node counts against it; the hub's own resolver and network are "unknown", never a lost node."""

import asyncio
import errno
import socket

import pytest

from clusterhub.hub.node_check import Reach, classify, missed_polls, probe, resolve, server_address


@pytest.mark.parametrize(
    ("error", "reach"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Reach.UNKNOWN),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), Reach.UNKNOWN),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), Reach.UNKNOWN),
        (OSError(errno.ENETDOWN, "Network is down"), Reach.UNKNOWN),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), Reach.UNKNOWN),
        (OSError(errno.EMFILE, "Too many open files"), Reach.UNKNOWN),
        (OSError(errno.EPERM, "Operation not permitted"), Reach.UNKNOWN),  # the hub's own firewall
        (ValueError("anything unexpected"), Reach.UNKNOWN),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Reach.DOWN),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), Reach.DOWN),
        (OSError(errno.EHOSTUNREACH, "No route to host"), Reach.DOWN),  # no ARP answer: the node is gone
        (TimeoutError(), Reach.DOWN),
    ],
)
def test_classification(error, reach):
    assert classify(error) is reach


def test_a_hub_side_error_never_counts_and_never_hides_a_lost_node():
    missed = 0
    for reach in (Reach.DOWN, Reach.UNKNOWN, Reach.UNKNOWN, Reach.DOWN):
        missed = missed_polls(reach, missed)
    assert missed == 2
    assert missed_polls(Reach.UNKNOWN, 0) == 0
    assert missed_polls(Reach.UP, 5) == 0


def test_a_name_resolution_failure_for_many_polls_drops_no_server():
    missed = 0
    for _ in range(10):
        missed = missed_polls(Reach.UNKNOWN, missed)
    assert missed == 0  # unreachable_polls (2) is never reached


@pytest.mark.parametrize(
    ("record", "spawner", "expected"),
    [
        # after a hub restart the spawner's ip and port are back at their defaults; the stored record has them
        (("node1", 41234), ("", 0), ("node1", 41234)),
        (("127.0.0.1", 50123), ("127.0.0.1", 0), ("127.0.0.1", 50123)),  # remote mode's tunnel port
        (("node2", 40000), ("node2", 40000), ("node2", 40000)),
        (("", 0), ("node1", 40001), ("node1", 40001)),  # no record (yet): the spawner's own
    ],
)
def test_the_port_comes_from_the_stored_server_record(record, spawner, expected):
    assert server_address(*record, *spawner) == expected


@pytest.fixture
def listening():
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_probe_of_a_listening_port_is_up(listening):
    assert asyncio.run(probe("127.0.0.1", listening)) == (Reach.UP, "", "127.0.0.1")


def test_probe_of_a_closed_port_is_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
    reach, detail, _ = asyncio.run(probe("127.0.0.1", port))
    assert reach is Reach.DOWN and "ConnectionRefusedError" in detail


def _with_loop(patch, port=40000, last_address=""):
    """Run probe() on a loop whose getaddrinfo or sock_connect is replaced (the hub's resolver or network)."""

    async def run():
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo
        for name, fake in patch.items():
            setattr(loop, name, fake)
        if "getaddrinfo" in patch:  # numeric addresses (the last known one) still go to the real one

            async def getaddrinfo(host, *args, flags=0, **kwargs):
                if flags & socket.AI_NUMERICHOST:
                    return await real(host, *args, flags=flags, **kwargs)
                return await patch["getaddrinfo"](host, *args, flags=flags, **kwargs)

            loop.getaddrinfo = getaddrinfo
        return await probe("node1", port, timeout=0.5, last_address=last_address)

    return asyncio.run(run())


async def no_name(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_a_name_the_hub_cannot_resolve_is_unknown():
    reach, detail, _ = _with_loop({"getaddrinfo": no_name})
    assert reach is Reach.UNKNOWN and "cannot resolve node1" in detail


def test_while_the_name_does_not_resolve_the_last_known_address_is_asked(listening):
    # the hub's name service is out for two polls; the node is alive at its last known address: kept
    for _ in range(2):
        reach, detail, address = _with_loop({"getaddrinfo": no_name}, listening, last_address="127.0.0.1")
        assert (reach, address) == (Reach.UP, "127.0.0.1") and "last known address 127.0.0.1" in detail


def test_a_dead_node_is_found_at_its_last_known_address_when_its_name_is_gone():
    # the lab's Docker DNS forgets a stopped container's name: the node is found dead all the same
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reach, _, _ = _with_loop({"getaddrinfo": no_name}, port, last_address="127.0.0.1")
    assert reach is Reach.DOWN


def test_a_resolver_that_does_not_answer_is_unknown():
    async def getaddrinfo(*args, **kwargs):
        await asyncio.sleep(10)

    assert _with_loop({"getaddrinfo": getaddrinfo})[0] is Reach.UNKNOWN


def test_the_hubs_own_network_down_is_unknown():
    async def getaddrinfo(*args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 40000))]

    async def sock_connect(sock, address):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    reach, detail, _ = _with_loop({"getaddrinfo": getaddrinfo, "sock_connect": sock_connect})
    assert reach is Reach.UNKNOWN and "Network is unreachable" in detail


def test_a_node_that_does_not_answer_is_down():
    async def getaddrinfo(*args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 40000))]

    async def sock_connect(sock, address):
        await asyncio.sleep(10)

    assert _with_loop({"getaddrinfo": getaddrinfo, "sock_connect": sock_connect})[0] is Reach.DOWN


def test_resolve_gives_an_address_or_nothing():
    assert asyncio.run(resolve("127.0.0.1")) == "127.0.0.1"

    async def run():
        asyncio.get_running_loop().getaddrinfo = no_name
        return await resolve("node1")

    assert asyncio.run(run()) == ""
