"""The form's settings, one definition for every spawner that renders or checks the form (the
dispatching spawner and its Slurm, remote and Docker children). jupyterhub_config.py sets them per
class (c.ClusterSlurmSpawner.profiles = ...), from the same spawn_options.json."""

from __future__ import annotations

from traitlets import Bool, HasTraits, Integer, List, Unicode


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


class DockerSettings(HasTraits):
    docker_images = List(help="Docker images offered: name, display_name, image (reference)").tag(config=True)
    host_gpus = Integer(0, help="GPUs on the Docker host usable by containers (0: none)").tag(config=True)
