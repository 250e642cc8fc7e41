"""The Slurm inventory checks and node list (filter_plugins/clusterhub_slurm.py)."""

import pytest

from clusterhub_slurm import (
    slurm_hub_partition_errors,
    slurm_hub_partitions,
    slurm_inventory_errors,
    slurm_node_list,
    slurm_time_hours,
)

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


# --- the hub's partitions, defined once in slurm_partitions (hub blocks) and checked against Slurm's --------
NODES = {
    "c1": {"slurm_node": {"cpus": 4, "memory_mb": 16384}},
    "c2": {"ansible_processor_vcpus": 8, "ansible_memtotal_mb": 33792},
    "g1": {
        "slurm_node": {
            "cpus": 16,
            "memory_mb": 65536,
            "gpus": [{"type": "a100", "count": 2, "files": "/dev/nvidia[0-1]"}],
        }
    },
    "unknown": {},
}
SLURM = [
    {
        "name": "cpu",
        "nodes": ["c1", "c2"],
        "max_time": "1-00:00:00",
        "hub": {"max_cpus": 4, "max_memory_gb": 16, "max_hours": 24},
    },
    {"name": "gpu", "nodes": ["g1"], "max_time": "12:00:00"},
    {"name": "all", "nodes": "ALL"},
    {"name": "fresh", "nodes": ["unknown"], "max_time": "30"},
]


def test_the_hubs_partitions_are_the_slurm_partitions_with_a_hub_block():
    assert slurm_hub_partitions(SLURM) == [{"name": "cpu", "max_cpus": 4, "max_memory_gb": 16, "max_hours": 24}]
    assert slurm_hub_partitions(None) == []


@pytest.mark.parametrize(
    ("value", "hours"),
    [
        ("UNLIMITED", None),
        ("infinite", None),
        ("30", 0.5),
        ("90:00", 1.5),
        ("12:30:00", 12.5),
        ("2-00", 48),
        ("1-12:00", 36),
        ("7-00:00:00", 168),
    ],
)
def test_slurm_time_limits_read_in_hours(value, hours):
    assert slurm_time_hours(value) == hours


@pytest.mark.parametrize(
    ("hub", "error"),
    [
        ({"name": "cpu", "max_cpus": 4, "max_memory_gb": 16, "max_hours": 24}, None),
        (
            {"name": "nope", "max_cpus": 1, "max_memory_gb": 1, "max_hours": 1},
            "partition nope is not in slurm_partitions (cpu, gpu, all, fresh)",
        ),
        ({"name": "nope", "max_cpus": 1, "max_memory_gb": 1, "max_hours": 1, "remote": True}, None),  # another Slurm's
        (
            {"name": "cpu", "max_cpus": 5, "max_memory_gb": 16, "max_hours": 24},
            "cpu allows max_cpus 5, but its smallest node has 4 CPUs; at most 4",
        ),
        (
            {"name": "cpu", "max_cpus": 4, "max_memory_gb": 17, "max_hours": 24},
            "cpu allows max_memory_gb 17, but its smallest node gives Slurm 16384 MiB; at most 16",
        ),
        (
            {"name": "cpu", "max_cpus": 4, "max_memory_gb": 16, "max_hours": 25},
            "cpu allows max_hours 25, above its Slurm MaxTime 1-00:00:00 (24 h)",
        ),
        (
            {"name": "cpu", "max_cpus": 4, "max_memory_gb": 16, "max_hours": 1, "max_gpus": 1},
            "cpu allows max_gpus 1, but c1, c2 have fewer GPUs than that (slurm_node.gpus, GRES)",
        ),
        ({"name": "gpu", "max_cpus": 16, "max_memory_gb": 64, "max_hours": 12, "max_gpus": 2}, None),
        (
            {"name": "gpu", "max_cpus": 16, "max_memory_gb": 64, "max_hours": 12, "max_gpus": 3},
            "gpu allows max_gpus 3, but g1 have fewer GPUs than that",
        ),
        (
            {"name": "all", "max_cpus": 5, "max_memory_gb": 1, "max_hours": 1000},
            "all allows max_cpus 5, but its smallest node has 4 CPUs",
        ),  # ALL: every compute host; no MaxTime
        ({"name": "fresh", "max_cpus": 64, "max_memory_gb": 512, "max_hours": 0.5}, None),  # size unknown: skipped
    ],
)
def test_the_hubs_limits_are_checked_against_the_partitions_nodes_and_maxtime(hub, error):
    errors = slurm_hub_partition_errors([hub], SLURM, list(NODES), NODES)
    if error is None:
        assert errors == []
    else:
        assert len(errors) == 1 and error in errors[0], errors
        assert errors[0].startswith("jupyterhub_partitions: ")
