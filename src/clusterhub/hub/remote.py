"""ClusterRemoteSpawner: remote HPC mode, for partitions the hub cannot reach (`remote: true`).

Every server is a Slurm job of one HPC account, submitted, queried and cancelled over SSH through
hpc-gate on the login node (remote_job.py has the commands). The hub picks a free port of the tunnel
account's ports (tunnel_ports: the only ones its -R may listen on) on its own loopback before
submitting; the job's wrapper (clusterhub-startjob --tunnel PORT) opens SSH tunnels back to the hub's
tunnel account that make the server appear at 127.0.0.1:PORT here and bring the hub API to the job.
So the server's address is always 127.0.0.1, whatever node runs it, and the port is known before the
job starts (nothing needs to report it). Each server's job gets a tunnel key of its own (tunnel_keys.py):
its private half travels in the job script, like the API token, and the hub's sshd accepts its public half
for a -R on that server's port alone, so no other job can take the port while this server's tunnel is
being opened again.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess

from tornado import web
from traitlets import Dict, Integer, List, Unicode, default

from .. import tunnel_keys
from ..protocol import REMOTE_JOB_LOG_DIR
from .remote_job import (
    cancel_argv,
    env_exports,
    hpc_user,
    image_only,
    job_name,
    joblog_argv,
    parse_job_id,
    pick_port,
    sacct_argv,
    squeue_argv,
    submit_argv,
)
from .slurm_queue import SlurmQueue, run_exec
from .spawner import _QUEUES, ClusterSlurmSpawner, _apply_user_options, start_failed


async def _apply_remote_user_options(spawner: ClusterRemoteSpawner, user_options: dict) -> None:
    _apply_user_options(spawner, user_options)
    if not spawner.req_image_path:
        reason = image_only(spawner.request.partition, spawner.images)
        raise web.HTTPError(400, f"Cannot start the server: {reason}", reason=reason)
    # a run_as: user partition: the user must have an HPC account of their own (refused here, before any job)
    try:
        hpc_user(spawner.request.partition, spawner.partitions, spawner.user.name, spawner.hpc_user_map)
    except ValueError as e:
        raise web.HTTPError(400, f"Cannot start the server: {e}", reason=str(e)) from None


# Tunnel ports the servers of this hub hold (from their start, or their stored state, until cleared).
_HELD_PORTS: set[int] = set()


def _port_free(port: int) -> bool:
    """Nothing listens on the hub's 127.0.0.1:port (SO_REUSEADDR: connections closing there do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ClusterRemoteSpawner(ClusterSlurmSpawner):
    ssh_command = List(
        help="argv of the SSH login to the HPC account (through hpc-gate), ending with user@login-node"
    ).tag(config=True)
    ssh_timeout = Integer(60, help="Seconds an sbatch or scancel over SSH may take").tag(config=True)
    job_environment = Dict(help="Further variables exported in every job script").tag(config=True)
    tunnel_port = Integer(0, help="The hub's loopback port of the current server's tunnel")
    tunnel_ports = List(
        Integer(), help="The ports the tunnel account may listen on (tunnel_user_listen_ports): each server gets one"
    ).tag(config=True)
    tunnel_keys_dir = Unicode(
        "",
        help="Where the hub publishes each server's tunnel key for sshd (tunnel_user_keys_dir): <port>.pub",
    ).tag(config=True)
    hpc_user = Unicode("", help="The user's own HPC account the current job runs as (run_as: user); empty: the hub's")
    hpc_user_map = Dict(
        help="Hub user name: HPC account, for run_as user partitions; when not empty, it refuses the users it lacks"
    ).tag(config=True)

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_remote_user_options

    @default("startup_poll_interval")
    def _default_startup_poll_interval(self):
        return 0.5  # the hub picks the tunnel's port: only a look at Slurm (through hpc-gate) says the job runs

    @default("unreachable_polls")
    def _default_unreachable_polls(self):
        # through a tunnel, "no answer" is more often the network between hub and HPC (the tunnel is being
        # reopened) than a dead node: give it ten polls before the job counts as lost
        return 10

    @default("req_job_name")
    def _default_req_job_name(self):
        return job_name(self.job_name, self.user.name)

    # hpc-gate's squeue lists the hub's jobs only: no place among the partition's pending jobs
    cluster_wide_queue = False

    @property
    def queue(self) -> SlurmQueue:
        argv = squeue_argv(self.ssh_command)
        key = (tuple(argv), self.squeue_timeout)
        if key not in _QUEUES:
            _QUEUES[key] = SlurmQueue(argv, timeout=self.squeue_timeout)
        return _QUEUES[key]

    async def _through_gate(self, argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
        """One SSH command to hpc-gate, bounded by ssh_timeout (the ssh process is killed past it)."""
        return await asyncio.wait_for(run_exec(argv, stdin), self.ssh_timeout)

    def state_gethost(self):
        return "127.0.0.1"  # the tunnel's end on the hub, wherever the job runs

    def _fresh_port(self) -> int:
        """A port of tunnel_ports for this server's tunnel (-R on the hub's loopback): none another server of
        this hub holds (a pending job's tunnel is not up yet) and none anything listens on."""
        port = pick_port(self.tunnel_ports, _HELD_PORTS, _port_free)
        if port is None:
            raise start_failed(
                f"All {len(self.tunnel_ports)} tunnel ports of the hub are in use; try again when a server has "
                "stopped, or tell the administrators (tunnel_user_listen_ports)"
            )
        _HELD_PORTS.add(port)
        self.tunnel_port = port
        return port

    # the end of the job's output (joblog) and its accounting (sacct), read through hpc-gate as the account the
    # job ran as
    async def job_output(self, job: str) -> str:
        return await self._gate_output(joblog_argv(self.ssh_command, job, self.hpc_user))

    async def job_accounting(self, job: str) -> str:
        return await self._gate_output(sacct_argv(self.ssh_command, job, self.hpc_user))

    async def _gate_output(self, argv: list[str]) -> str:
        try:
            code, out, _ = await self._through_gate(argv)
        except (OSError, TimeoutError):
            return ""
        return out if code == 0 else ""

    def job_log(self, job: str) -> str:
        home = f"~{self.hpc_user}" if self.hpc_user else "the HPC job account's ~"
        return f"{home}/{REMOTE_JOB_LOG_DIR}/{self.req_job_name}-{job}.log on the HPC login node"

    def cmd_formatted_for_batch(self):
        # the port is known in advance: the server need not report it through batchspawner's API
        return " ".join([*self.cmd, *self.get_args()])

    async def submit_batch_script(self):
        subvars = self.get_req_subvars()
        subvars["cmd"] = self.cmd_formatted_for_batch()
        subvars.update(self.user_options)
        subvars["tunnel_port"] = self.port
        private_key = await self._tunnel_key()
        subvars["remote_env"] = env_exports(
            self.get_env(), {**self.job_environment, tunnel_keys.JOB_VARIABLE: private_key}
        )
        script = await self._get_batch_script(**subvars)
        self.hpc_user = hpc_user(self.req_partition, self.partitions, self.user.name, self.hpc_user_map)
        argv = submit_argv(self.ssh_command, self.req_job_name, self.hpc_user)
        # the script holds the server's API token: it is never logged
        self.log.info(
            "Submitting the server of %s through %s as %s (tunnel port %s)",
            self.user.name,
            argv[-2],
            self.hpc_user or "the hub's HPC account",
            self.port,
        )
        code, out, err = await self._through_gate(argv, script.encode())
        if code != 0:
            raise start_failed(
                f"The HPC login node refused the job (exit {code}: {err.strip()[-300:]}); try again later, "
                "or tell the administrators if it persists"
            )
        self.job_id = parse_job_id(out)
        self.log.info("Server of %s: job %s submitted", self.user.name, self.job_id)
        return self.job_id

    async def _tunnel_key(self) -> str:
        """A fresh key pair for this server's tunnel: the public half published for sshd (a -R on this
        server's port alone), the private half returned for the job script; nothing of it kept on disk."""
        if not self.tunnel_keys_dir:
            raise start_failed(
                "The hub has no directory for the servers' tunnel keys (ClusterRemoteSpawner.tunnel_keys_dir); "
                "tell the administrators"
            )
        comment = f"clusterhub tunnel of {self.user.name} on port {self.port}"
        try:
            private, public = await asyncio.to_thread(tunnel_keys.generate, comment)
            tunnel_keys.publish(self.tunnel_keys_dir, self.port, public)
        except (OSError, ValueError, subprocess.CalledProcessError) as e:
            self.log.error("Tunnel key for the server of %s: %s", self.user.name, e)
            raise start_failed(
                "The hub could not make a tunnel key for your server; try again, or tell the administrators"
            ) from None
        return private

    async def cancel_batch_job(self):
        self.log.info("Cancelling job %s of %s", self.job_id, self.user.name)
        code, _, err = await self._through_gate(cancel_argv(self.ssh_command, self.job_id, self.hpc_user))
        if code != 0:
            raise RuntimeError(
                f"scancel {self.job_id} on the HPC login node failed (exit {code}): {err.strip()[-500:]}"
            )

    def get_state(self):
        state = super().get_state()
        if self.tunnel_port:
            state["tunnel_port"] = self.tunnel_port
        if self.hpc_user:
            state["hpc_user"] = self.hpc_user
        return state

    def load_state(self, state):
        super().load_state(state)
        self.tunnel_port = state.get("tunnel_port", 0)
        if self.tunnel_port:
            _HELD_PORTS.add(self.tunnel_port)
        self.hpc_user = state.get("hpc_user", "")

    def clear_state(self):
        super().clear_state()
        if self.tunnel_port and self.tunnel_keys_dir:
            # the job's key may not open the port again (a job that outlived its server included)
            try:
                tunnel_keys.withdraw(self.tunnel_keys_dir, self.tunnel_port)
            except OSError as e:
                self.log.error("Withdrawing the tunnel key of port %s failed: %s", self.tunnel_port, e)
        _HELD_PORTS.discard(self.tunnel_port)
        self.tunnel_port = 0
        self.hpc_user = ""
