"""The lost-node check: can the hub reach a running job's server, and if not, whose fault is it?

A poll asks the server's port for a TCP connection. Only an answer about the node counts against it: a
refused or reset connection (the node is up, its server is gone), silence (a timeout, no host at that
address). An error on the hub's own side is "unknown", never a lost node: the node's name does not
resolve (the hub's resolver or /etc/hosts), the hub has no route or no address (its own network), it is
out of sockets or file descriptors, its own firewall forbids the connection. While the name does not
resolve, the node's last known address is asked instead (a dead node is still found, a live one kept).
No JupyterHub import: the rules are unit-tested on their own.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from enum import Enum


class Reach(Enum):
    UP = "up"  # the port accepted a connection
    DOWN = "down"  # the node or its server did not: counts towards a lost node
    UNKNOWN = "unknown"  # the hub could not ask: never counts


# errors that say something about the node (or the path to it), not about the hub
NODE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ETIMEDOUT}
)


def classify(error: BaseException) -> Reach:
    """DOWN for a refused, reset or unanswered connection; UNKNOWN for everything on the hub's side
    (name resolution, no route or address, no sockets left, a local firewall, anything unexpected)."""
    if isinstance(error, socket.gaierror):
        return Reach.UNKNOWN
    if isinstance(error, TimeoutError):
        return Reach.DOWN
    if isinstance(error, OSError) and error.errno in NODE_ERRNOS:
        return Reach.DOWN
    return Reach.UNKNOWN


def missed_polls(reach: Reach, missed: int) -> int:
    """Polls in a row at which the server did not answer, after one more poll: an answer resets the count,
    a hub-side error leaves it as it was (so it never makes a node lost, nor hides one)."""
    if reach is Reach.UP:
        return 0
    return missed + 1 if reach is Reach.DOWN else missed


def server_address(record_ip: str, record_port: int, ip: str, port: int) -> tuple[str, int]:
    """Where the server is: the hub's stored server record first (what the proxy routes to; after a hub
    restart the spawner's own ip and port are back at their defaults), the spawner's values else."""
    return (record_ip or ip, record_port or port)


async def resolve(host: str, timeout: float = 3.0) -> str:
    """The first address of host as the hub resolves it now; "" when it does not resolve."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError):
        return ""
    return infos[0][4][0] if infos else ""


async def _connect(loop, info, timeout: float) -> BaseException | None:
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
    except (OSError, TimeoutError) as e:
        return e
    finally:
        sock.close()
    return None


async def probe(host: str, port: int, timeout: float = 3.0, last_address: str = "") -> tuple[Reach, str, str]:
    """Reach host:port: (verdict, what went wrong, the address that answered or was tried).

    The name is resolved first. When the hub cannot resolve it (its resolver, its /etc/hosts), the node's
    last known address (`last_address`, kept by the spawner from an earlier resolution) is asked instead,
    so a dead node is still found while the hub's name service is out; without one the verdict is UNKNOWN.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        lookup = ""
    except (OSError, TimeoutError) as e:
        lookup = f"the hub cannot resolve {host} ({e!r})"
        if not last_address:
            return Reach.UNKNOWN, lookup, ""
        try:
            infos = await loop.getaddrinfo(last_address, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        except OSError:
            return Reach.UNKNOWN, lookup, ""
        lookup += f"; asked its last known address {last_address}"
    verdicts = []
    for info in infos:
        error = await _connect(loop, info, timeout)
        if error is None:
            return Reach.UP, lookup, info[4][0]
        verdicts.append((classify(error), info[4][0], f"{info[4][0]}:{port}: {error!r}"))
    for reach in (Reach.DOWN, Reach.UNKNOWN):
        tried = [(a, d) for r, a, d in verdicts if r is reach]
        if tried:
            return reach, "; ".join(filter(None, [lookup, *(d for _, d in tried)])), tried[0][0]
    return Reach.UNKNOWN, lookup or f"{host} resolved to no address", ""
