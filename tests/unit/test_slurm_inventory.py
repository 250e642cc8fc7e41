"""The Slurm inventory checks and node list (filter_plugins/clusterhub_slurm.py)."""

import pytest

from clusterhub_slurm import slurm_inventory_errors, slurm_node_list

COMPUTES = ["node1", "node2"]
PARTS = [{"name": "batch", "default": True, "nodes": "ALL"}, {"name": "jupyter", "oversubscribe": "FORCE:4"}]


def errors(partitions=PARTS, nodes=None, controllers=("login",), computes=COMPUTES):
    return slurm_inventory_errors(list(computes), list(controllers), partitions, nodes or {})


def test_a_good_inventory_has_no_errors():
    nodes = {"node1": {"cpus": 4, "memory_mb": 8000, "gpus": [{"type": "a100", "count": 2}]}}
    assert errors(nodes=nodes) == []


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ({"node1": {"cpus": -2}}, "slurm_node.cpus on node1 is -2: it must be a whole number of CPUs, 1 or more"),
        ({"node2": {"cpus": 0}}, "slurm_node.cpus on node2 is 0"),
        ({"node1": {"memory_mb": "16G"}}, "slurm_node.memory_mb on node1 is '16G': it must be a whole number of MiB"),
        ({"node1": {"memory_mb": 2.5}}, "slurm_node.memory_mb on node1 is 2.5"),
        ({"node1": {"cpus": True}}, "slurm_node.cpus on node1 is True"),
        ({"node1": {"gpus": [{"type": "a100", "count": 0}]}}, "slurm_node.gpus[0].count on node1 is 0"),
        ({"node1": {"gpus": [{"type": "a 100", "count": 1}]}}, "slurm_node.gpus[0].type on node1 is 'a 100'"),
        ({"node1": {"name": "node;1"}}, "slurm_node.name on node1 is 'node;1'"),
    ],
)
def test_bad_node_values_are_named(nodes, expected):
    assert any(e.startswith(expected) for e in errors(nodes=nodes)), errors(nodes=nodes)


def test_digit_strings_are_whole_numbers():
    # values from INI inventories arrive as strings
    assert errors(nodes={"node1": {"cpus": "8", "memory_mb": "32000"}}) == []


@pytest.mark.parametrize(
    ("partitions", "expected"),
    [
        (
            [{"name": "batch", "nodes": ["node1", "node9"]}],
            "slurm_partitions[0] (batch): nodes node9 not in the slurm_compute group (known: node1, node2)",
        ),
        ([{"name": "a", "nodes": []}], "slurm_partitions[0] (a): nodes must be ALL or a non-empty list"),
        ([{"name": "a"}, {"name": "a"}], "slurm_partitions: the name 'a' is used more than once"),
        (
            [{"name": "a", "default": True}, {"name": "b", "default": True}],
            "slurm_partitions: only one partition may be the default, found a, b",
        ),
        ([{"name": "a", "max_time": "2 days"}], "slurm_partitions[0] (a): max_time '2 days' is not a Slurm time"),
        ([{"name": "a", "oversubscribe": "SOMETIMES"}], "slurm_partitions[0] (a): oversubscribe 'SOMETIMES'"),
        ([{"name": "a b"}], "slurm_partitions[0] (a b): the name must be"),
    ],
)
def test_bad_partitions_are_named(partitions, expected):
    assert any(e.startswith(expected) for e in errors(partitions=partitions)), errors(partitions=partitions)


@pytest.mark.parametrize("value", ["UNLIMITED", "7-00:00:00", "12:00:00", "30", "1-12", "0:30"])
def test_slurm_times_are_accepted(value):
    assert errors(partitions=[{"name": "a", "max_time": value}]) == []


def test_empty_groups_are_reported():
    found = errors(controllers=(), computes=())
    assert "the slurm_controller group is empty: one host must run slurmctld" in found
    assert any("slurm_compute group is empty" in e for e in found)


def test_node_list_uses_facts_unless_given():
    hostvars = {
        "node1.example.org": {"ansible_processor_vcpus": 16, "ansible_memtotal_mb": 64000},
        "node2": {
            "ansible_processor_vcpus": 8,
            "ansible_memtotal_mb": 32000,
            "slurm_node": {
                "cpus": 4,
                "gpus": [{"type": "h100", "count": 4, "files": "/dev/nvidia[0-3]"}],
                "features": ["gpu"],
            },
        },
    }
    nodes = slurm_node_list(["node1.example.org", "node2"], hostvars, reserved_mb=1000)
    assert nodes[0] == {
        "host": "node1.example.org",
        "name": "node1",
        "cpus": 16,
        "memory_mb": 63000,
        "gpus": [],
        "features": [],
        "weight": None,
    }
    assert nodes[1]["cpus"] == 4 and nodes[1]["memory_mb"] == 31000
    assert nodes[1]["gpus"][0]["gres"] == "gpu:h100:4"
    assert nodes[1]["features"] == ["gpu"]


def test_node_list_without_facts_says_what_to_do():
    with pytest.raises(ValueError, match=r"node3: set slurm_node\.cpus and slurm_node\.memory_mb"):
        slurm_node_list(["node3"], {"node3": {}})
