"""The configuration files the roles write, rendered through Ansible's templar from the lab and the example
inventories and compared with golden/<role>/<inventory>/<file>.golden, so that a change in what a host gets
shows in review. After an intended change: `make golden`, then review the golden files' diff.

(The hub's jupyterhub_config.py and proxy unit: test_hub_config.py.) The lab's addresses, which the lab
inventory reads from Docker, are fixed here, and every host's facts are role_files.FACTS (2 CPUs, 8 GiB): no
render depends on this machine or a fact cache."""

from __future__ import annotations

import pytest
from role_files import GOLDEN, matches_golden, render

# what the lab inventory would read from `docker inspect`
LAB_ADDRESSES = {"lab_hub_address": "172.30.0.2", "lab_login_address": "172.30.0.3"}
RENDERS = [
    # role, template under templates/, host, inventory
    ("slurm", "etc/slurm/slurm.conf.j2", "login", "lab"),
    ("slurm", "etc/slurm/gres.conf.j2", "node2", "lab"),
    ("slurm", "etc/slurm/cgroup.conf.j2", "login", "lab"),
    ("slurm", "etc/slurm/slurmdbd.conf.j2", "login", "lab"),
    ("slurm", "etc/mysql/slurmdbd.cnf.j2", "login", "lab"),
    ("slurm", "etc/slurm/slurm.conf.j2", "login1.cluster.example.org", "example"),
    ("slurm", "etc/slurm/gres.conf.j2", "gpu01.cluster.example.org", "example"),
    ("slurm", "etc/slurm/cgroup.conf.j2", "login1.cluster.example.org", "example"),
    ("slurm", "etc/slurm/slurmdbd.conf.j2", "login1.cluster.example.org", "example"),
    ("jupyterhub", "etc/sudoers.d/jupyterhub.j2", "hub", "lab"),
    ("jupyterhub", "etc/sudoers.d/jupyterhub.j2", "jupyter.example.org", "example"),
    ("apptainer", "etc/apptainer/apptainer.conf.j2", "node1", "lab"),
    ("apptainer", "etc/apptainer/apptainer.conf.j2", "cn001.cluster.example.org", "example"),
    ("job_wrappers", "etc/clusterhub/jobs.conf.j2", "node1", "lab"),
    ("job_wrappers", "etc/clusterhub/jobs.conf.j2", "cn001.cluster.example.org", "example"),
    ("notebook_runner", "etc/sudoers.d/clusterhub-runs.j2", "hub", "lab"),
    ("notebook_runner", "etc/jupyterhub/jupyterhub_config.d/50-notebook-runner.py.j2", "hub", "lab"),
    ("notebook_runner", "etc/systemd/system/clusterhub-runs.service.j2", "hub", "lab"),
    ("notebook_scheduler", "clusterhub-scheduler.json.j2", "node1", "lab"),
    ("notebook_scheduler", "clusterhub-scheduler.json.j2", "cn001.cluster.example.org", "example"),
    ("hpc_account", "etc/clusterhub/hpc-gate.conf.j2", "login", "lab"),
    ("hpc_account", "etc/sudoers.d/clusterhub-hpc-gate.j2", "login", "lab"),
    ("hpc_account", "etc/ssh/sshd_config.d/clusterhub-hpc-account.conf.j2", "login", "lab"),
    ("tunnel_user", "etc/ssh/sshd_config.d/clusterhub-tunnel.conf.j2", "hub", "lab"),
]


@pytest.mark.parametrize(
    ("role", "template", "host", "inventory"), RENDERS, ids=[f"{r[3]}-{r[0]}-{r[1].split('/')[-1]}" for r in RENDERS]
)
def test_rendered_as_the_golden_file(role, template, host, inventory):
    text = render(role, template, host, inventory, LAB_ADDRESSES if inventory == "lab" else None)
    name = template.rsplit("/", 1)[-1].removesuffix(".j2")
    matches_golden(text, GOLDEN / role / inventory / f"{name}.golden")
