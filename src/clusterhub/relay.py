#!/usr/bin/python3 -I
"""clusterhub-relay SOCKET: the hub API for a remote server, on a TCP port of this node that is never free.

A remote HPC mode job reaches the hub API through its SSH tunnel, whose local end is the Unix socket SOCKET
in a directory only the job's account can enter (ssh -L SOCKET:127.0.0.1:API-PORT). The single-user server
speaks HTTP over TCP only, so this relay binds 127.0.0.1 on a port the kernel picks (bound from the first
moment, held until the job ends: no window in which another user of the node could take it, tunnel
reconnects included), prints that port on stdout and hands every connection to SOCKET. While the tunnel is
being opened again, connections are closed at once and the server retries. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys

CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def relay(target: str, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    """One connection: to the tunnel's socket, both ways, until either side closes."""
    try:
        reader, writer = await asyncio.open_unix_connection(target)
    except OSError:
        client_writer.close()  # the tunnel is down (being opened again): the client sees a closed connection
        return
    await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))


def listen() -> socket.socket:
    """127.0.0.1 on a port the kernel picks: taken by this process before anyone learns its number."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def serve(target: str, sock: socket.socket) -> None:
    server = await asyncio.start_server(lambda r, w: relay(target, r, w), sock=sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].startswith("/"):
        print("usage: clusterhub-relay /absolute/path/of/the/tunnel.sock", file=sys.stderr)
        return 64
    sock = listen()
    print(sock.getsockname()[1], flush=True)
    asyncio.run(serve(argv[0], sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
