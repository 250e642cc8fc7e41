"""Pinned requirement files become pip specifiers (filter_plugins/clusterhub_requirements.py)."""

from pathlib import Path

import pytest
from clusterhub_requirements import clusterhub_requirements

ROOT = Path(__file__).resolve().parents[2]


def test_comments_and_blanks_go_pins_stay():
    assert clusterhub_requirements("# pins\n\njupyterhub==6.1.1  # hub\nbatchspawner==1.3.0\n") == [
        "jupyterhub==6.1.1",
        "batchspawner==1.3.0",
    ]


def test_options_are_refused():
    with pytest.raises(ValueError, match=r"'-r other\.txt' is not supported"):
        clusterhub_requirements("-r other.txt\n")


@pytest.mark.parametrize(
    "path",
    ["roles/jupyterhub/files/requirements-hub.txt", "roles/notebook_env/files/requirements-notebook.txt"],
)
def test_the_roles_pin_every_package(path):
    specs = clusterhub_requirements((ROOT / path).read_text())
    assert specs and all("==" in s for s in specs), specs


def test_hub_and_nodes_agree_on_shared_packages():
    def pins(path):
        return dict(s.split("==") for s in clusterhub_requirements((ROOT / path).read_text()))

    hub, nodes = (
        pins("roles/jupyterhub/files/requirements-hub.txt"),
        pins("roles/notebook_env/files/requirements-notebook.txt"),
    )
    shared = set(hub) & set(nodes)
    assert shared >= {"jupyterhub", "batchspawner"}
    assert {k: hub[k] for k in shared} == {k: nodes[k] for k in shared}
