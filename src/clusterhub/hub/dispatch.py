"""ClusterSpawner: one form with Slurm and Docker profiles; each server runs on the kind its profile names
(and Slurm servers on partitions marked `remote` with the remote HPC mode's spawner).

The hub talks to this spawner; it validates the request (request.py), then builds a child spawner of
the profile's kind (ClusterSlurmSpawner or ClusterDockerSpawner) from the same constructor arguments
the hub gave it (user, orm_spawner, oauth client, ...), so the child shares the server record. Start,
stop, poll and progress go to the child. The child's kind and state are persisted in the hub's
database, so after a hub restart the running job or container is found again. State written by the
plain ClusterSlurmSpawner (no kind) is read as Slurm state: switching a hub to this spawner keeps its
running servers.
"""

from __future__ import annotations

from jupyterhub.spawner import Spawner
from traitlets import Any, Unicode, default, observe

from .docker import ClusterDockerSpawner, validated_request
from .kinds import child_kind, child_state, spawner_kind, wrap_state

# imported when the hub loads its spawner class, not at the first spawn: importing batchspawner
# registers the API handler through which Slurm jobs report their port (/hub/api/batchspawner)
from .remote import ClusterRemoteSpawner
from .settings import DockerSettings, FormSpawner
from .spawner import ClusterSlurmSpawner

_CLASSES = {"slurm": ClusterSlurmSpawner, "docker": ClusterDockerSpawner, "remote": ClusterRemoteSpawner}

_FLAGS = ("_spawn_pending", "_start_pending", "_stop_pending", "_check_pending")


async def _apply_user_options(spawner: ClusterSpawner, user_options: dict) -> None:
    request = validated_request(spawner, user_options)
    child = spawner.make_child(spawner_kind(request.kind, request.partition, spawner.partitions))
    # the child checks the request again with its own rules and sets its job or container from it
    await child._run_apply_user_options(request.as_user_options())
    spawner.user_options = child.user_options


class ClusterSpawner(FormSpawner, DockerSettings, Spawner):
    kind = Unicode("", help="Kind of the current server's child spawner ('' when none)")
    child = Any(None, allow_none=True, help="The child spawner of the current server")
    _slurm_settings = Any(None, allow_none=True)  # a ClusterSlurmSpawner of the hub's config, for the form

    def __init__(self, **kwargs):
        self._child_kwargs = dict(kwargs)
        super().__init__(**kwargs)

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_user_options

    async def start_estimates(self) -> dict[str, str]:
        """The Slurm profiles' expected starts, asked with the Slurm spawner's settings (its sbatch, sudo, job name)."""
        if not any(p.get("kind", "slurm") == "slurm" for p in self.profiles):
            return {}
        if self._slurm_settings is None:
            self._slurm_settings = ClusterSlurmSpawner(config=self.config)
        return await self._slurm_settings.start_estimates_for(self.user.name)

    def make_child(self, kind: str) -> Spawner:
        """A child spawner of this kind, sharing the hub's server record and tokens with this one."""
        kwargs = dict(self._child_kwargs, user_options=self.user_options)
        self.child = _CLASSES[kind](**kwargs)
        self.kind = kind
        self.child.api_token = self.api_token
        # the hub reads these from the spawner it knows (this one) while the child works
        self.start_timeout = self.child.start_timeout
        self.http_timeout = self.child.http_timeout
        return self.child

    def _sync_flags(self) -> None:
        for flag in _FLAGS:
            setattr(self.child, flag, getattr(self, flag))

    @observe("port")
    def _forward_port(self, change):
        # batchspawner's single-user side reports its port to the hub API, which sets it here
        if self.child is not None and change.new:
            self.child.port = change.new

    def load_state(self, state):
        super().load_state(state)
        kind = child_kind(state or {})
        if kind in _CLASSES:
            self.make_child(kind).load_state(child_state(state))

    def get_state(self):
        state = super().get_state()
        if self.child is not None:
            state.update(wrap_state(self.kind, self.child.get_state()))
        return state

    def clear_state(self):
        super().clear_state()
        if self.child is not None:
            self.child.clear_state()
        self.child = None
        self.kind = ""

    async def start(self):
        self.refuse_during_maintenance()
        if self.child is None:  # apply_user_options always runs first; this is a safety net
            await self._run_apply_user_options(self.user_options)
        self.child.api_token = self.api_token
        self._sync_flags()
        url = await self.child.start()
        self.api_token = self.child.api_token
        return url

    async def stop(self, now=False):
        if self.child is not None:
            self._sync_flags()
            await self.child.stop(now=now)

    async def poll(self):
        if self.child is None:
            return 0
        self._sync_flags()
        return await self.child.poll()

    async def progress(self):
        if self.child is None:
            return
        self._sync_flags()
        async for event in self.child.progress():
            yield event
