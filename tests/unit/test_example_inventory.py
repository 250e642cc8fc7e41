"""The example site inventory passes the same checks a real run applies before changing anything."""

from pathlib import Path

import pytest
import yaml
from ansible.module_utils.clusterhub_image_spec import validate_spec

from clusterhub.hub.rules import config_errors
from clusterhub_slurm import slurm_hub_partition_errors, slurm_hub_partitions, slurm_inventory_errors

EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "example"


def load(name):
    return yaml.safe_load((EXAMPLE / "group_vars" / "all" / name).read_text())


def expand(pattern: str) -> list[str]:
    # Ansible's host range syntax, e.g. cn[001:032].cluster.example.org
    head, _, rest = pattern.partition("[")
    if not rest:
        return [pattern]
    span, _, tail = rest.partition("]")
    start, end = span.split(":")
    return [f"{head}{str(i).zfill(len(start))}{tail}" for i in range(int(start), int(end) + 1)]


def test_example_slurm_inventory_is_valid():
    hosts = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())["all"]["children"]
    computes = [h for p in hosts["slurm_compute"]["hosts"] for h in expand(p)]
    controllers = list(hosts["slurm_controller"]["hosts"])
    nodes = {
        "gpu01.cluster.example.org": yaml.safe_load(
            (EXAMPLE / "host_vars" / "gpu01.cluster.example.org.yml").read_text()
        )["slurm_node"]
    }
    assert len(computes) == 36
    assert slurm_inventory_errors(computes, controllers, load("slurm.yml")["slurm_partitions"], nodes) == []


def test_example_hub_profiles_fit_their_partitions_which_slurm_defines_once():
    hub = load("hub.yml")
    slurm = load("slurm.yml")["slurm_partitions"]
    assert "jupyterhub_partitions" not in hub, "the example derives the hub's partitions from slurm_partitions"
    partitions = slurm_hub_partitions(slurm)
    assert [p["name"] for p in partitions] == ["jupyter", "gpu"]
    assert config_errors(hub["jupyterhub_profiles"], partitions, []) == []
    hosts = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())["all"]["children"]
    computes = [h for p in hosts["slurm_compute"]["hosts"] for h in expand(p)]
    gpu_node = yaml.safe_load((EXAMPLE / "host_vars" / "gpu01.cluster.example.org.yml").read_text())
    # the GPU nodes declare their GPUs (all four alike); node sizes come from facts at the site
    hostvars = {h: (gpu_node if h.startswith("gpu") else {}) for h in computes}
    assert slurm_hub_partition_errors(partitions, slurm, computes, hostvars) == []


@pytest.mark.parametrize("engine", ["apptainer", "docker"])
def test_example_notebook_images_are_valid_specs_for_both_engines(engine, tmp_path):
    """The CPU and GPU specs pass the notebook_image module's own validation, as the role would call it."""
    role_only = {"display_name", "engines", "debootstrap", "base"}
    for image in load("images.yml")["notebook_images_list"]:
        assert engine in image["engines"]
        params = {k: v for k, v in image.items() if k not in role_only}
        params["engine"] = engine
        if engine == "docker":
            params.update(name=f"site/{image['name']}:latest", base=image["base"])
        else:
            # the SIF directory must exist where the module runs
            params.update(name=str(tmp_path / f"{image['name']}.sif"), debootstrap=image["debootstrap"])
        spec = validate_spec(params)
        assert spec["pip_packages"] == image["pip_packages"]
