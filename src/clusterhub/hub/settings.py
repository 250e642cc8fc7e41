"""The form's settings, one definition for every spawner that renders or checks the form (the
dispatching spawner and its Slurm, remote and Docker children). jupyterhub_config.py sets them per
class (c.ClusterSlurmSpawner.profiles = ...), from the same spawn_options.json.

FormSpawner adds the form itself and the maintenance switch, once, for the spawners the hub offers
users directly (ClusterSpawner and ClusterSlurmSpawner, with ClusterRemoteSpawner)."""

from __future__ import annotations

from tornado import web
from traitlets import Bool, HasTraits, Integer, List, Unicode, default

from .form import maintenance_notice, render_form


class FormSettings(HasTraits):
    profiles = List(
        help="Resource profiles: slug, display_name, kind (slurm or docker), partition, cpus, memory_gb, hours, ..."
    ).tag(config=True)
    partitions = List(
        help="Slurm partitions with their limits: name, max_cpus, max_memory_gb, max_hours, max_gpus, remote, run_as"
    ).tag(config=True)
    images = List(help="Apptainer images offered on the Slurm partitions: name, display_name, path").tag(config=True)
    allow_custom = Bool(True, help="Offer a custom resource choice bounded by the partition limits").tag(config=True)
    maintenance_file = Unicode(
        "/etc/jupyterhub/maintenance", help="While this file exists, new spawns are refused with its text"
    ).tag(config=True)
    options_form_template = Unicode(
        "",
        help="A Jinja template file replacing clusterhub's spawn form (form.py: what it gets); empty: the packaged one",
    ).tag(config=True)


class DockerSettings(HasTraits):
    docker_images = List(help="Docker images offered: name, display_name, image (reference)").tag(config=True)
    host_gpus = Integer(0, help="GPUs on the Docker host usable by containers (0: none)").tag(config=True)

    def docker_offer(self) -> dict:
        """What the form offers and the validation allows on the Docker host (request.py's and form.py's `docker`)."""
        return {"images": self.docker_images, "gpus": self.host_gpus}


class FormSpawner(FormSettings):
    """The spawn form (with the Docker choices where the spawner has DockerSettings) and the maintenance
    switch. ClusterDockerSpawner has only the settings: it checks requests, the dispatcher shows the form."""

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._simple_options_from_form  # single values unpacked; validation happens in apply_user_options

    async def _render_options_form(self, spawner=None):
        docker = self.docker_offer() if isinstance(self, DockerSettings) else None
        notice = self.maintenance_notice()
        starts = await self.start_estimates()
        return render_form(
            self.profiles,
            self.partitions,
            self.images,
            self.allow_custom,
            notice,
            docker=docker,
            template=self._site_form_template(),
            starts=starts,
        )

    async def start_estimates(self) -> dict[str, str]:
        """{profile slug: when Slurm would start it, in words}: the Slurm spawners and the dispatcher ask Slurm."""
        return {}

    def _site_form_template(self) -> str:
        """The site's form template text ("" where none is set, or where it cannot be read: logged)."""
        if not self.options_form_template:
            return ""
        try:
            with open(self.options_form_template, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            self.log.error("Spawn form template %s: %s; showing clusterhub's own form", self.options_form_template, e)
            return ""

    def maintenance_notice(self) -> str:
        return maintenance_notice(self.maintenance_file)

    def refuse_during_maintenance(self) -> None:
        """While the maintenance switch is on, a start fails at once with its text (HTTP 503)."""
        notice = self.maintenance_notice()
        if notice:
            raise web.HTTPError(503, notice, reason=notice)
