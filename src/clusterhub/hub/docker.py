"""ClusterDockerSpawner: a user's server in a container on the hub's Docker host (GPU workstation mode).

dockerspawner's SystemUserSpawner, so the container runs as the user's own uid:gid (from the hub
host's passwd, the same accounts Slurm uses) with the user's home directory bind-mounted read-write:
files belong to the user, with no permission fix-up, and persist across container restarts. A
shared data directory is mounted read-only. The image, CPU, memory and GPU values come only from a
validated Request (request.py).

Each container has a memory limit with no swap on top, a pids limit and an init process that reaps
orphans, so a runaway or forking process in it is stopped at its own limits, not at the hub's. GPUs
are given by device id: a request for N GPUs gets N GPUs of this host that no other container of the
hub holds, read from Docker at each start (the containers' host config, so a restarted hub knows them
again), one assignment at a time.
"""

from __future__ import annotations

import asyncio

from docker.errors import NotFound
from dockerspawner import SystemUserSpawner
from tornado import web
from traitlets import Integer, Unicode, default

from .kinds import GpusBusy, assign_gpus, device_requests, held_gpus, host_gpu_ids
from .request import OptionsError, validate_options
from .settings import DockerSettings, FormSettings
from .spawner import start_failed

USER_LABEL = "org.clusterhub.user"
# held from listing the GPUs in use until the new container exists: two starts never get the same GPU
_GPU_LOCK = asyncio.Lock()


def validated_request(spawner, user_options: dict):
    """The request checked against the spawner's Slurm and Docker settings; HTTP 400 naming the problem."""
    try:
        return validate_options(
            user_options or {},
            spawner.profiles,
            spawner.partitions,
            spawner.images,
            spawner.allow_custom,
            docker=spawner.docker_offer(),
        )
    except OptionsError as e:
        raise web.HTTPError(400, f"Cannot start the server: {e}", reason=str(e)) from None


def _apply_user_options(spawner: ClusterDockerSpawner, user_options: dict) -> None:
    """Validate the request (form or REST body) and set the container's image and limits from it."""
    request = validated_request(spawner, user_options)
    if request.kind != "docker":
        reason = f"profile {request.profile} runs on Slurm, not on Docker"
        raise web.HTTPError(400, f"Cannot start the server: {reason}", reason=reason)
    spawner.request = request
    spawner.image = {i["name"]: i["image"] for i in spawner.docker_images}[request.image]
    spawner.cpu_limit = float(request.cpus)
    spawner.mem_limit = f"{request.memory_gb}G"
    # dicts, not callables: SystemUserSpawner.start adds the user (uid:gid) and working_dir to them;
    # the GPUs' device requests are added in create_object, when they are assigned
    spawner.extra_host_config = {
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "memswap_limit": spawner.mem_limit,  # memory + swap = memory: no swap beyond the limit
        "pids_limit": spawner.pids_limit,
        "init": True,  # Docker's init as PID 1 reaps orphans (a fork bomb's), so they do not fill the pids limit
    }
    spawner.extra_create_kwargs = {"labels": {USER_LABEL: spawner.user.name, "org.clusterhub.profile": request.profile}}
    # dockerspawner reads user_options["image"] as a name of allowed_images: keep only validated values
    spawner.user_options = request.as_user_options()


class ClusterDockerSpawner(FormSettings, DockerSettings, SystemUserSpawner):
    shared_dir = Unicode("", help="Host directory mounted read-only in every container ('' for none)").tag(config=True)
    shared_mount = Unicode("/shared", help="Where the shared directory appears in the container").tag(config=True)
    hub_api_port = Integer(8081, help="Port of the hub API, reached through the network's gateway").tag(config=True)
    pids_limit = Integer(1024, help="Processes and threads a container may have at once").tag(config=True)

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_user_options

    @default("remove")
    def _default_remove(self):
        return True  # the home directory holds what persists; a new spawn gets the profile's current image

    @default("run_as_root")
    def _default_run_as_root(self):
        return False  # containers run as the user's uid:gid, never root

    @default("allowed_images")
    def _default_allowed_images(self):
        return {i["name"]: i["image"] for i in self.docker_images}

    @default("read_only_volumes")
    def _default_read_only_volumes(self):
        return {self.shared_dir: self.shared_mount} if self.shared_dir else {}

    async def _gateway_url(self) -> str:
        """The hub API as containers reach it: the Docker network's gateway is the hub host itself."""
        network = await self.docker("inspect_network", self.network_name)
        for pool in network.get("IPAM", {}).get("Config") or []:
            if pool.get("Gateway"):
                return f"http://{pool['Gateway']}:{self.hub_api_port}"
        raise RuntimeError(f"Docker network {self.network_name} has no gateway address; set hub_connect_url")

    async def hub_containers(self) -> list[dict]:
        """`docker inspect` of every container of this hub's users, in any state."""
        found = []
        for listed in await self.docker("containers", all=True, filters={"label": USER_LABEL}):
            try:
                found.append(await self.docker("inspect_container", listed["Id"]))
            except NotFound:
                continue  # removed since the listing
        return found

    async def create_object(self):
        gpus = self.request.gpus if getattr(self, "request", None) else 0
        if not gpus:
            return await super().create_object()
        async with _GPU_LOCK:
            host_ids = host_gpu_ids(self.host_gpus)
            try:
                ids = assign_gpus(gpus, host_ids, held_gpus(await self.hub_containers(), host_ids))
            except GpusBusy as e:
                raise start_failed(f"Cannot start the server: {e}.") from None
            self.log.info("GPUs %s of this host for %s", ",".join(ids), self._log_name)
            self.extra_host_config = {**self.extra_host_config, "device_requests": device_requests(ids)}
            return await super().create_object()

    async def start(self):
        if not self.hub_connect_url:
            self.hub_connect_url = await self._gateway_url()
        return await super().start()
