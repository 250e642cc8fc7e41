"""Background checks that live in the JupyterHub process (the orphaned-job check, the proxy's routes).

jupyterhub_config.py starts them while the hub loads its configuration; each waits until the hub's users
and database are up, then runs for the life of the hub. Outside a running hub (jupyterhub upgrade-db,
--generate-config) nothing starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

_TASKS: dict[tuple[int, str], asyncio.Task] = {}


def start(name: str, check: Callable[[object], Awaitable[None]]) -> None:
    """Run `check(app)` once per hub process and event loop; `name` keeps two checks apart."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    from jupyterhub.app import JupyterHub  # noqa: PLC0415 -- JupyterHub only in the hub's process

    if not JupyterHub.initialized() or (id(loop), name) in _TASKS:
        return
    _TASKS[(id(loop), name)] = loop.create_task(check(JupyterHub.instance()))


async def hub_up(app) -> None:
    """Return once the hub's users and database are there (the hub loads its configuration first)."""
    while "users" not in app.tornado_settings or getattr(app, "db", None) is None:
        await asyncio.sleep(1)


async def every(interval: float, check: Callable[[], Awaitable[object]], what: str, log: logging.Logger) -> None:
    """Run check() every `interval` seconds for the life of the hub; one that fails is logged, never the end."""
    while True:
        await asyncio.sleep(interval)
        try:
            await check()
        except Exception:
            log.exception("%s failed; trying again in %s s", what, interval)
