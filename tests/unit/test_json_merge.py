"""Merging owned keys into a shared JSON file (filter_plugins/clusterhub_json.py)."""

import json

import pytest
from ansible.errors import AnsibleFilterError
from clusterhub_json import clusterhub_json_dump, clusterhub_json_merge

RUNTIME = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}


def test_foreign_keys_are_kept_and_wanted_added():
    existing = '{"log-driver": "journald", "runtimes": {"runc-alt": {"path": "/usr/bin/runc"}}}'
    merged = clusterhub_json_merge(existing, RUNTIME)
    assert merged == {
        "log-driver": "journald",
        "runtimes": {
            "runc-alt": {"path": "/usr/bin/runc"},
            "nvidia": {"path": "nvidia-container-runtime", "args": []},
        },
    }


def test_wanted_wins_on_conflict_and_lists_are_replaced():
    existing = '{"default-runtime": "runc", "dns": ["10.0.0.1", "10.0.0.2"], "runtimes": {"nvidia": {"path": "old"}}}'
    merged = clusterhub_json_merge(existing, {"default-runtime": "nvidia", "dns": ["10.0.0.9"], **RUNTIME})
    assert merged["default-runtime"] == "nvidia"
    assert merged["dns"] == ["10.0.0.9"]
    assert merged["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}


@pytest.mark.parametrize("text", [None, "", "  \n", b""])
def test_missing_or_empty_file_is_an_empty_object(text):
    assert clusterhub_json_merge(text, {"a": 1}) == {"a": 1}


def test_merge_is_idempotent_through_the_dump():
    once = clusterhub_json_dump(clusterhub_json_merge('{"b": 1}', RUNTIME))
    twice = clusterhub_json_dump(clusterhub_json_merge(once, RUNTIME))
    assert once == twice
    assert once.endswith("}\n") and json.loads(once)["b"] == 1


def test_inputs_are_not_mutated():
    wanted = {"runtimes": {"nvidia": {"args": ["x"]}}}
    merged = clusterhub_json_merge('{"runtimes": {"nvidia": {"path": "p"}}}', wanted)
    merged["runtimes"]["nvidia"]["args"].append("y")
    assert wanted == {"runtimes": {"nvidia": {"args": ["x"]}}}


def test_invalid_json_names_the_file_and_the_problem():
    with pytest.raises(AnsibleFilterError, match=r"/etc/docker/daemon\.json is not valid JSON \(Expecting .*line 1"):
        clusterhub_json_merge('{"log-driver": ', RUNTIME, path="/etc/docker/daemon.json")


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "list"), ('"x"', "str"), ("3", "int")])
def test_json_that_is_not_an_object_is_refused(text, kind):
    with pytest.raises(AnsibleFilterError, match=rf"holds a JSON {kind}, not an object"):
        clusterhub_json_merge(text, RUNTIME)


def test_wanted_must_be_a_dict():
    with pytest.raises(AnsibleFilterError, match="must be a dict, got list"):
        clusterhub_json_merge("{}", [1])


def test_dump_is_sorted_and_stable():
    text = clusterhub_json_dump({"b": 1, "a": {"d": 2, "c": 3}})
    assert text == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}\n'
