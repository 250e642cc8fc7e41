"""What the in-process spawner tests share: JupyterHub's own database with alice, a real TCP server standing in
for the single-user server on its node, and spawners configured as jupyterhub_config.py configures them, with
the fake Slurm's commands (fake_slurm.py) and no sudo."""

from __future__ import annotations

import asyncio
import contextlib

from fake_slurm import FakeSlurm
from jupyterhub import orm
from jupyterhub.objects import Hub, Server
from jupyterhub.user import User
from traitlets.config import Config

from clusterhub.hub.spawner import ClusterSlurmSpawner
from clusterhub.protocol import SACCT_FIELDS

PARTITIONS = [{"name": "batch", "max_cpus": 4, "max_memory_gb": 8, "max_hours": 8, "max_gpus": 0}]
PROFILES = [{"slug": "small", "display_name": "Small", "partition": "batch", "cpus": 1, "memory_gb": 1, "hours": 1}]
SMALL = {"profile": "small"}


class NodeServer:
    """What answers on the job's node: a TCP server replying to any HTTP request, closed to lose the node."""

    def __init__(self):
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def _answer(self, reader, writer):
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        writer.close()

    async def open(self) -> int:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


# the form's settings: jupyterhub_config.py sets them on the dispatcher and on each child class
FORM_KEYS = frozenset({"profiles", "partitions", "images", "allow_custom", "maintenance_file"})


def new_spawner(db, slurm: FakeSlurm, tmp_path, spawner_class=ClusterSlurmSpawner, **settings) -> ClusterSlurmSpawner:
    """A spawner configured as jupyterhub_config.py configures it (traitlets config by class: the dispatcher's
    children read theirs from it too), with the fake Slurm's commands and no sudo."""
    user = User(db.query(orm.User).filter_by(name="alice").one(), {})
    settings = {
        "cmd": ["jupyterhub-singleuser"],
        "exec_prefix": "",
        "batch_submit_cmd": f"{slurm.bin}/sbatch --parsable",
        "batch_cancel_cmd": f"{slurm.bin}/scancel {{job_id}}",
        "squeue_command": [str(slurm.bin / "squeue")],
        "job_log_command": ["cat", "--", "{log}"],
        "job_accounting_command": [str(slurm.bin / "sacct"), "-n", "-P", "-j", "{job_id}", "-o", SACCT_FIELDS],
        "profiles": PROFILES,
        "partitions": PARTITIONS,
        "images": [],
        "maintenance_file": str(tmp_path / "maintenance"),
        "startup_poll_interval": 0.05,
        "squeue_max_age": 0.0,
        "poll_interval": 1,
        **settings,
    }
    form = {k: v for k, v in settings.items() if k in FORM_KEYS}
    config = Config({"ClusterSpawner": form, "ClusterDockerSpawner": form, "ClusterSlurmSpawner": settings})
    spawner = user._new_spawner("", spawner_class=spawner_class, hub=Hub(), user=user, config=config)
    spawner.server = record(db)
    return spawner


def record(db, ip: str = "", port: int = 0) -> Server:
    """The hub's stored record of a server (what the proxy routes to), in its database."""
    server = orm.Server(proto="http", ip=ip, port=port, base_url="/user/alice/", cookie_name="c")
    db.add(server)
    db.commit()
    return Server(orm_server=server)


async def polls_until_lost(spawner, node: NodeServer):
    """Polls while the node's server answers (kept), then after it stops answering: None, None, then the
    poll's verdict (1 when the node counts as lost after the spawner's 2 unanswered polls)."""
    await node.open()  # the server still runs on its port: polls keep it
    assert await spawner.poll() is None
    await node.close()
    assert await spawner.poll() is None
    return await spawner.poll()


def run(coro, timeout: float = 20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def form_of(spawner) -> str:
    """The spawn form as the hub gets it (JupyterHub's get_options_form awaits the spawner's async form)."""
    return run(spawner.get_options_form())


async def until(predicate, timeout: float = 10.0, task: asyncio.Task | None = None):
    """Until predicate() holds; a `task` that ends meanwhile ends the wait with its own outcome."""
    async with asyncio.timeout(timeout):
        while not predicate():
            if task is not None and task.done():
                task.result()
                raise AssertionError("the start returned before the expected step")
            await asyncio.sleep(0.02)
